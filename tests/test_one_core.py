"""One aggregation core: ``aggregate``, ``accumulate`` + ``finalize`` and ``run`` agree with each
other and with numpy; per-cell expressions at every pyramid level; vocabulary aliases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import run_cli
from healforge.maps import read_map
from healforge.pixel import lonlat_to_pixel
from healforge.run.runner import run_pipeline

ORDER = 3
MIN_ORDER = 1
N = 24_000
STATS = ["count", "sum", "mean", "var", "std", "min", "max", "median", "q05", "mad", "wmean"]
EXACT = ["count", "sum", "mean", "var", "std", "min", "max", "wmean"]
CELL_EXPRS = {
    "err": "1 / sqrt(sum(1 / s_li**2))",
    "wx": "sum(w * x) / sum(w)",
    "span": "max(h) - min(h)",
    "density": "count(h) / area",
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one_core")
    rng = np.random.default_rng(11)
    lon = rng.uniform(-180, 180, N)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, N)))
    h = 1e6 + rng.normal(0, 3, N)
    h[rng.random(N) < 0.02] = np.nan  # missing values are not counted
    t = pa.table(
        {
            "lon": lon,
            "lat": lat,
            "h": h,
            "s_li": rng.uniform(0.5, 2.0, N),
            "w": rng.uniform(0.1, 3.0, N),
            "x": rng.normal(5, 1, N),
        }
    )
    files = []
    for i, part in enumerate(np.array_split(np.arange(N), 3)):
        f = tmp / f"part{i}.parquet"
        pq.write_table(t.take(pa.array(part)), f)
        files.append(str(f))
    return tmp, files, t.to_pandas()


def numpy_stats(df: pd.DataFrame, order: int) -> pd.DataFrame:
    """Per-cell ground truth with pandas/numpy on the points grouped at ``order``."""
    d = df.assign(cell=lonlat_to_pixel(np.mod(df.lon.to_numpy(), 360), df.lat.to_numpy(), order))
    out = {}
    for cell, g in d.groupby("cell"):
        h = g.h.dropna().to_numpy()
        wv = g.w.to_numpy()[~np.isnan(g.h.to_numpy())]
        out[cell] = {
            "count": h.size,
            "sum": h.sum(),
            "mean": h.mean(),
            "var": h.var(ddof=1) if h.size > 1 else np.nan,
            "std": h.std(ddof=1) if h.size > 1 else np.nan,
            "min": h.min(),
            "max": h.max(),
            "median": np.median(h),
            "q05": np.quantile(h, 0.05),
            "mad": np.median(np.abs(h - np.median(h))),
            "wmean": (wv * h).sum() / wv.sum(),
            "err": 1 / np.sqrt((1 / g.s_li**2).sum()),
            "wx": (g.w * g.x).sum() / g.w.sum(),
            "span": h.max() - h.min(),
            "density": h.size / (4 * np.pi / (12 * 4**order)),
        }
    return pd.DataFrame.from_dict(out, orient="index").sort_index()


def pipeline(files, out, functions=None) -> dict:
    f = functions or {}
    stats = {
        "count": {"function": "count", "column": "h"},
        "sum": {"function": "sum", "column": "h"},
        "mean": {"function": "mean", "column": "h"},
        "var": {"function": "var", "column": "h"},
        "std": {"function": "std", "column": "h"},
        "min": {"function": "min", "column": "h"},
        "max": {"function": "max", "column": "h"},
        "median": {"function": f.get("median", "median"), "column": "h"},
        "q05": {"function": f.get("q05", "quantile"), "column": "h", "parameters": {"q": 0.05}},
        "mad": {"function": "mad", "column": "h"},
        "wmean": {"function": f.get("wmean", "weighted_mean"), "column": "h", "parameters": {"weight": "w"}},
        **{name: {"expression": e} for name, e in CELL_EXPRS.items()},
    }
    if f.get("q05", "quantile") != "quantile":
        del stats["q05"]["parameters"]
    return {
        "name": "one-core",
        "inputs": [{"paths": files}],
        "coordinates": {"lon": "lon", "lat": "lat"},
        "assignment": {"order": ORDER},
        "statistics": stats,
        "outputs": {
            "state": str(out / "state.parquet"),
            "parquet": {"path": str(out / "map.parquet"), "orders": [3, 2, 1]},
        },
    }


def _run_map(files, out, **kw) -> dict[int, pd.DataFrame]:
    summary = run_pipeline(pipeline(files, out, **kw), synchronous=True, quiet=True, batch_rows=3000)
    assert summary["complete"]
    return {k: read_map(out / "map.parquet", k).to_pandas().set_index("cell_ids") for k in (3, 2, 1)}


def _exact_equal(a, b):
    np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


def test_aggregate_accumulate_run_agree_with_numpy(data, tmp_path):
    tmp, files, df = data
    ref = numpy_stats(df, ORDER)
    exact = (
        healforge.aggregate(
            files, ["h"], STATS, order=ORDER, lon="lon", lat="lat", weight="w", batch_rows=3000
        )
        .to_pandas()
        .set_index("cell_ids")
    )
    state = healforge.accumulate(files, ["h"], order=ORDER, lon="lon", lat="lat", weight="w", batch_rows=3000)
    fin = healforge.finalize(state, STATS).to_pandas().set_index("cell_ids")
    run = _run_map(files, tmp_path)[ORDER]
    for frame in (exact, fin, run):
        np.testing.assert_array_equal(frame.index.to_numpy(), ref.index.to_numpy())
    for s in STATS:
        # the streaming front ends run the same core on the same batches: bit for bit
        _exact_equal(fin[f"h_{s}"], run[s])
    for s in ("count", "min", "max"):
        _exact_equal(exact[f"h_{s}"], ref[s])
        _exact_equal(fin[f"h_{s}"], ref[s])
    for s in EXACT:
        np.testing.assert_allclose(exact[f"h_{s}"], ref[s], rtol=1e-12)
        np.testing.assert_allclose(fin[f"h_{s}"], ref[s], rtol=1e-12 if s not in ("var", "std") else 1e-9)
    for s in ("median", "q05", "mad"):
        np.testing.assert_allclose(exact[f"h_{s}"], ref[s], rtol=1e-14)  # exact sort
        # cells below the sketch capacity keep every value: sketch quantiles match numpy
        np.testing.assert_allclose(fin[f"h_{s}"], ref[s], rtol=1e-12, atol=1e-9)


def _check_cells(frame: pd.DataFrame, ref: pd.DataFrame, prefix: str = ""):
    np.testing.assert_array_equal(frame.index.to_numpy(), ref.index.to_numpy())
    for name in CELL_EXPRS:
        np.testing.assert_allclose(frame[prefix + name], ref[name], rtol=1e-9, err_msg=name)


def test_cell_expressions_at_every_level_api(data):
    _, files, df = data
    exact = (
        healforge.aggregate(
            files, ["h"], ["count"], order=ORDER, lon="lon", lat="lat", cell_expressions=CELL_EXPRS
        )
        .to_pandas()
        .set_index("cell_ids")
    )
    _check_cells(exact, numpy_stats(df, ORDER))
    state = healforge.accumulate(
        files, ["h"], order=ORDER, lon="lon", lat="lat", cell_expressions=CELL_EXPRS, batch_rows=4000
    )
    maps = healforge.finalize(state, ["count"], min_order=MIN_ORDER)
    assert sorted(maps) == [1, 2, 3]
    for k, table in maps.items():
        _check_cells(table.to_pandas().set_index("cell_ids"), numpy_stats(df, k))


@pytest.mark.slow
def test_cell_expressions_through_cli_and_run(data, tmp_path):
    _, files, df = data
    st = tmp_path / "st.parquet"
    exprs = [f"{k}={v}" for k, v in CELL_EXPRS.items()]
    args = [a for e in exprs[:2] for a in ("--cell-expr", e)]
    run_cli("accumulate", *files, "--state", st, "--order", ORDER, "--lon", "lon", "--lat", "lat",
            "--columns", "h", *args, "--quiet", "--synchronous")  # fmt: skip
    # finalize adds cell expressions over columns the state has (h) and keeps the accumulated ones
    fargs = [a for e in exprs[2:] for a in ("--cell-expr", e)]
    run_cli(
        "finalize", st, "-o", tmp_path / "m.parquet", "--min-order", MIN_ORDER, "--stats", "count", *fargs
    )
    for k in (3, 2, 1):
        _check_cells(
            read_map(tmp_path / "m.parquet", k).to_pandas().set_index("cell_ids"), numpy_stats(df, k)
        )
    run_cli("aggregate", *files, "-o", tmp_path / "e.parquet", "--order", ORDER, "--lon", "lon", "--lat", "lat",
            "--columns", "h", "--stats", "count", *args, *fargs, "--synchronous", "--quiet")  # fmt: skip
    _check_cells(read_map(tmp_path / "e.parquet").to_pandas().set_index("cell_ids"), numpy_stats(df, ORDER))
    maps = _run_map(files, tmp_path / "run")
    for k, frame in maps.items():
        _check_cells(frame, numpy_stats(df, k))


def test_cell_expression_area_in_km2(data):
    _, files, df = data
    state = healforge.accumulate(files, ["h"], order=2, lon="lon", lat="lat")
    sr = healforge.finalize(state, ["count"], cell_expressions={"d": "count(h) / area"})
    km = healforge.finalize(state, ["count"], cell_expressions={"d": "count(h) / area"}, radius_km=1737.4)
    np.testing.assert_allclose(km.column("d").to_numpy() * 1737.4**2, sr.column("d").to_numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="no column for row expression"):
        healforge.finalize(state, ["count"], cell_expressions={"bad": "sum(x)"})


def test_vocabulary_aliases_give_identical_outputs(data, tmp_path):
    _, files, _ = data
    kw = dict(order=ORDER, lon="lon", lat="lat", weight="w")
    a = healforge.aggregate(files, ["h"], ["wmean", "weighted_mean", "q05", "p05", "median", "q50"], **kw)
    _exact_equal(a.column("h_wmean"), a.column("h_weighted_mean"))
    _exact_equal(a.column("h_q05"), a.column("h_p05"))
    _exact_equal(a.column("h_median"), a.column("h_q50"))
    state = healforge.accumulate(files, ["h"], **kw)
    f = healforge.finalize(
        state, ["wmean", "weighted_mean", "q05", "p05", "median", "q50", "wstd", "weighted_std"]
    )
    _exact_equal(f.column("h_wmean"), f.column("h_weighted_mean"))
    _exact_equal(f.column("h_q05"), f.column("h_p05"))
    _exact_equal(f.column("h_median"), f.column("h_q50"))
    _exact_equal(f.column("h_wstd"), f.column("h_weighted_std"))
    canon = _run_map(files, tmp_path / "canon")[ORDER]
    alias = _run_map(files, tmp_path / "alias", functions={"wmean": "wmean", "q05": "p05", "median": "q50"})[
        ORDER
    ]
    for name in ("wmean", "q05", "median"):
        _exact_equal(canon[name], alias[name])


def test_one_set_of_defaults():
    """var/std default to ddof 1 and weighted var/std to ddof 0 everywhere."""
    from healforge.aggregate.statistics import resolve

    assert resolve("var").ddof_or() == 1 and resolve("std").ddof_or() == 1
    assert resolve("wvar").ddof_or() == 0 and resolve("weighted_std").ddof_or() == 0
    assert resolve("p05").q == resolve("q05").q == resolve("quantile", {"q": 0.05}).q == 0.05
    assert resolve("median").function == resolve("q50").function == "quantile"


def test_run_reads_a_hats_catalog_partition_by_partition(data, tmp_path):
    _, files, df = data
    root = tmp_path / "catalog"
    healforge.import_catalog(
        files, root, "lon", "lat", threshold=6000, highest_order=4, synchronous=True, quiet=True
    )
    cfg = pipeline([str(root)], tmp_path)
    cfg["statistics"] = {"n": {"function": "count", "column": "h"}, "m": {"function": "mean", "column": "h"}}
    summary = run_pipeline(cfg, synchronous=True, quiet=True)
    assert summary["files"] > 3  # one task per partition file, not the catalog's metadata files
    got = read_map(tmp_path / "map.parquet", ORDER).to_pandas().set_index("cell_ids")
    ref = numpy_stats(df, ORDER)
    _exact_equal(got["n"], ref["count"])
    np.testing.assert_allclose(got["m"], ref["mean"], rtol=1e-12)


def test_filter_in_aggregate_and_accumulate(data):
    _, files, df = data
    ref = numpy_stats(df[df.x > 5], ORDER)
    kw = dict(order=ORDER, lon="lon", lat="lat", filter="x > 5")
    exact = healforge.aggregate(files, ["h"], ["count", "mean"], **kw).to_pandas().set_index("cell_ids")
    fin = healforge.finalize(healforge.accumulate(files, ["h"], **kw), ["count", "mean"])
    fin = fin.to_pandas().set_index("cell_ids")
    for frame in (exact, fin):
        _exact_equal(frame["h_count"], ref["count"])
        np.testing.assert_allclose(frame["h_mean"], ref["mean"], rtol=1e-12)
    sc = healforge.sidecar(files, ORDER, lon="lon", lat="lat")
    with pytest.raises(ValueError, match="filter cannot be combined with a sidecar"):
        healforge.aggregate(files, ["h"], sidecar=sc, filter="x > 5")


def test_run_map_hook_sees_every_level(data, tmp_path):
    _, files, _ = data
    seen = []

    def hook(table: pa.Table) -> pa.Table:
        seen.append(table.num_rows)
        return table.append_column("twice", pa.array(2 * table.column("count").to_numpy()))

    cfg = pipeline(files, tmp_path)
    cfg["statistics"] = {"count": {"function": "count", "column": "h"}}
    run_pipeline(cfg, synchronous=True, quiet=True, map_hook=hook)
    assert sorted(seen) == [48, 192, 768]
    m = read_map(tmp_path / "map.parquet", 2)
    np.testing.assert_array_equal(m.column("twice").to_numpy(), 2 * m.column("count").to_numpy())

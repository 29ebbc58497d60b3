"""Exact statistics at scale (rows shuffled by shard, :mod:`healforge.aggregate.shuffle`):
``aggregate --shuffle`` and ``run`` with ``exact`` give the in-memory exact numbers, number for
number, and numpy's, on data split across several input files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import run_cli
from healforge.pixel import lonlat_to_pixel

N_FILES, ORDER, BAD_ROW = 4, 4, 17
STATS = ("count", "mean", "median", "q90")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Four parquet files over a 60 x 60 degree patch (about 100 cells at order 4, in several
    shards at order 2), some values NaN, one row of the second file with a bad latitude."""
    base = tmp_path_factory.mktemp("shuffle")
    rng = np.random.default_rng(16)
    paths, frames = [], []
    for i in range(N_FILES):
        n = 2500
        df = pd.DataFrame(
            {
                "ra": rng.uniform(0, 60, n),
                "dec": rng.uniform(-30, 30, n),
                "v": rng.normal(10, 3, n),
                "s": rng.uniform(1, 2, n),
            }
        )
        df.loc[rng.random(n) < 0.03, "v"] = np.nan
        if i == 1:
            df.loc[BAD_ROW, "dec"] = 95.0
        df.to_parquet(base / f"part{i}.parquet")
        paths.append(str(base / f"part{i}.parquet"))
        frames.append(df)
    rows = pd.concat(frames, ignore_index=True)
    return base, paths, rows[rows.dec <= 90]


def expected(rows: pd.DataFrame, order: int) -> pd.DataFrame:
    """count, mean, median and 0.9 quantile of ``v`` per cell, by plain numpy."""
    cells = lonlat_to_pixel(rows.ra.to_numpy(), rows.dec.to_numpy(), order)
    out = {}
    for c in np.unique(cells):
        v = rows.v.to_numpy()[cells == c]
        v = v[~np.isnan(v)]
        out[int(c)] = (v.size, np.mean(v), np.median(v), np.quantile(v, 0.9), np.ptp(v))
    return pd.DataFrame.from_dict(out, orient="index", columns=["count", "mean", "median", "q90", "ptp"])


def check_numpy(table, exp: pd.DataFrame, names: dict[str, str]) -> None:
    assert table.column("cell_ids").to_pylist() == exp.index.tolist()
    for stat, column in names.items():
        got = table.column(column).to_numpy()
        if stat == "count":
            np.testing.assert_array_equal(got, exp[stat].to_numpy())
        else:
            np.testing.assert_allclose(got, exp[stat].to_numpy(), rtol=1e-12)


def aggregate(paths, output, *extra):
    run_cli(
        "aggregate",
        *paths,
        "-o",
        output,
        "--order",
        ORDER,
        "--lon",
        "ra",
        "--lat",
        "dec",
        "--columns",
        "v",
        "--stats",
        *STATS,
        "--on-bad-rows",
        "quarantine",
        "--synchronous",
        "-q",
        *extra,
    )
    return pq.read_table(output)


@pytest.mark.slow
def test_aggregate_shuffle_equals_in_memory_and_numpy(inputs, tmp_path):
    base, paths, rows = inputs
    memory = aggregate(paths, tmp_path / "memory.parquet")
    work = tmp_path / "work"
    shuffled = aggregate(
        paths, tmp_path / "shuffled.parquet", "--shuffle", "--work-dir", work, "--shard-order", 2
    )
    assert shuffled.column_names == memory.column_names
    for name in memory.column_names:  # number for number
        assert np.array_equal(
            shuffled.column(name).to_numpy(), memory.column(name).to_numpy(), equal_nan=True
        )
    assert shuffled.schema.metadata == memory.schema.metadata  # rows read and rejected alike
    check_numpy(shuffled, expected(rows, ORDER), {s: f"v_{s}" for s in STATS})
    assert not work.exists()  # removed after the map is written
    # the bad row is quarantined as in memory, with its file and row
    q = pq.read_table(tmp_path / "shuffled.rejected.parquet")
    assert q.column("_source_row").to_pylist() == [BAD_ROW] and "part1" in q.column("_source_file")[0].as_py()
    # the default work directory is beside the output, and goes too
    aggregate(paths, tmp_path / "default.parquet", "--shuffle")
    assert pq.read_table(tmp_path / "default.parquet").equals(memory.replace_schema_metadata(None), False)
    assert not (tmp_path / "default.parquet.work").exists()


def test_aggregate_shuffle_options_are_checked(inputs, tmp_path):
    _, paths, _ = inputs
    args = ("aggregate", *paths, "-o", tmp_path / "m.parquet", "--order", 2, "--lon", "ra", "--lat", "dec")
    args += ("--columns", "v", "--synchronous")
    proc = run_cli(*args, "--work-dir", tmp_path / "w", check=False)
    assert proc.returncode != 0 and "--work-dir needs --shuffle" in proc.stderr
    proc = run_cli(*args, "--shuffle", "--shard-order", 3, check=False)
    assert proc.returncode != 0 and "shard order 3 must be in [0, 2]" in proc.stderr


def _pipeline(tmp_path, paths, out, exact=None) -> str:
    cfg = {
        "inputs": [{"paths": paths}],
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": ORDER, "on_bad_rows": "quarantine"},
        "statistics": {
            "n": {"function": "count", "column": "v"},
            "m": {"function": "mean", "column": "v"},
            "med": {"function": "median", "column": "v"},
            "q": {"function": "quantile", "column": "v", "parameters": {"q": 0.9}},
            "span": {"function": "numpy.ptp", "column": "v"},  # the statistic ptp (max - min)
        },
        "outputs": {"parquet": {"path": str(out), "orders": [ORDER, 2]}},
    }
    if exact is not None:
        cfg["exact"] = exact
    path = tmp_path / f"{out.stem}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return str(path)


@pytest.mark.slow
def test_run_exact_equals_in_memory_and_numpy_at_every_order(inputs, tmp_path):
    base, paths, rows = inputs
    work = tmp_path / "work"
    config = _pipeline(tmp_path, paths, tmp_path / "run.parquet", {"work_dir": str(work), "shard_order": 2})
    run_cli("run", config, "--synchronous", "-q")
    names = {"count": "n", "mean": "m", "median": "med", "q90": "q", "ptp": "span"}
    fine = pq.read_table(tmp_path / "run.parquet" / f"order_{ORDER:02d}.parquet")
    memory = aggregate(paths, tmp_path / "memory.parquet")
    assert fine.column("cell_ids").equals(memory.column("cell_ids"))
    for stat in STATS:  # number for number with the in-memory exact aggregation
        got, want = fine.column(names[stat]).to_numpy(), memory.column(f"v_{stat}").to_numpy()
        assert np.array_equal(got.astype(want.dtype), want, equal_nan=True), stat
    check_numpy(fine, expected(rows, ORDER), names)
    # coarser orders are computed from the rows too (not from finer statistics)
    coarse = pq.read_table(tmp_path / "run.parquet" / "order_02.parquet")
    check_numpy(coarse, expected(rows, 2), names)
    assert not work.exists()
    q = pq.read_table(tmp_path / "run.parquet.quarantine.parquet")
    assert q.column("_source_row").to_pylist() == [BAD_ROW]


@pytest.mark.slow
def test_run_exact_flag(inputs, tmp_path):
    _, paths, rows = inputs
    config = _pipeline(tmp_path, paths, tmp_path / "flag.parquet")
    # a numpy function that needs every value is refused by a streaming run, accepted with --exact
    bad = tmp_path / "bad.yaml"
    bad.write_text(open(config).read().replace("numpy.ptp", "numpy.prod"))
    proc = run_cli("run", bad, "--synchronous", "-q", check=False)
    assert proc.returncode == 2 and "statistics.span.function" in proc.stderr and "exact" in proc.stderr
    assert run_cli("run", bad, "--exact", "--check").returncode == 0
    proc = run_cli("run", config, "--work-dir", tmp_path / "w", "--synchronous", "-q", check=False)
    assert proc.returncode == 2 and "apply to exact runs" in proc.stderr
    run_cli("run", config, "--exact", "--shard-order", 1, "--synchronous", "-q")
    names = {"count": "n", "mean": "m", "median": "med", "q90": "q", "ptp": "span"}
    for order in (ORDER, 2):
        table = pq.read_table(tmp_path / "flag.parquet" / f"order_{order:02d}.parquet")
        check_numpy(table, expected(rows, order), names)
        assert table.schema.metadata is not None and b'"exact": true' in table.schema.metadata[b"healforge"]
    assert not (tmp_path / "flag.parquet.work").exists()


def test_exact_key_is_validated(inputs, tmp_path):
    from healforge.run import ConfigError, load_pipeline

    _, paths, _ = inputs
    for exact, message in (
        ("yes", "exact: must be true, false or a mapping"),
        ({"shard_order": 3}, r"exact.shard_order: must be an integer in \[0, 2\]"),
        ({"workdir": "w"}, "exact.workdir: unknown key; did you mean 'work_dir'"),
    ):
        with pytest.raises(ConfigError, match=message):
            load_pipeline(_pipeline(tmp_path, paths, tmp_path / "bad.parquet", exact))
    cfg = load_pipeline(_pipeline(tmp_path, paths, tmp_path / "ok.parquet", {"work_dir": "scratch"}))
    assert cfg.exact.work_dir == str(tmp_path / "scratch")  # relative to the YAML file


@pytest.mark.slow
def test_run_exact_scratch_on_s3_resumes(inputs, tmp_path, s3_options, monkeypatch):
    """Outputs on S3: the work directory is there too (no shared local disk needed); a run killed
    in the statistics stage resumes without reading its inputs again."""
    import s3fs

    import healforge.aggregate.shuffle as shuffle
    from healforge.run.runner import run_pipeline

    _, paths, rows = inputs
    cfg = yaml.safe_load(open(_pipeline(tmp_path, paths, tmp_path / "s3.parquet", True)))
    url = "s3://healforge-test/shuffle/map.parquet"
    cfg["outputs"] = {"parquet": {"path": url, "orders": [ORDER, 2]}, "storage_options": s3_options}
    real = shuffle.shard_statistics
    monkeypatch.setattr(
        shuffle, "shard_statistics", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed"))
    )
    with pytest.raises(RuntimeError, match="killed"):
        run_pipeline(cfg, synchronous=True, quiet=True)
    fs = s3fs.S3FileSystem(**s3_options)
    assert len(fs.glob("healforge-test/shuffle/map.parquet.work/scattered/*.json")) == N_FILES
    monkeypatch.setattr(shuffle, "shard_statistics", real)
    calls = []
    monkeypatch.setattr(shuffle, "scatter_source", lambda *a, **k: calls.append(a))
    summary = run_pipeline(cfg, synchronous=True, quiet=True)
    assert calls == [] and summary["mode"] == "exact" and summary["rows_rejected"] == 1
    names = {"count": "n", "mean": "m", "median": "med", "q90": "q", "ptp": "span"}
    for order in (ORDER, 2):
        with fs.open(f"healforge-test/shuffle/map.parquet/order_{order:02d}.parquet") as f:
            check_numpy(pq.read_table(f), expected(rows, order), names)
    fs.invalidate_cache()
    assert not fs.exists("healforge-test/shuffle/map.parquet.work")

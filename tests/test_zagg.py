"""zagg pipeline files run as they are (``healforge run ZAGG.yaml``), with zagg's meanings.

The judge of cell assignment is mortie (zagg's own indexing library: authalic latitude, nested
cells, morton words); the judge of the statistics is numpy applied per cell as zagg does.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
from pathlib import Path

import h5py
import mortie
import numpy as np
import pytest
import xarray as xr
import xdggs
import yaml

from conftest import run_cli
from healforge.run import ConfigError
from healforge.zagg import load, morton_of, run_zagg, translate
from healforge.zagg.read import iter_granule

DATA = Path(__file__).parent / "data"
SHIPPED = DATA / "zagg_atl06.yaml"
BEAMS = ["gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r"]
FILL = np.float32(3.4028235e38)
VARIABLES = ["count", "h_min", "h_max", "h_mean", "h_sigma", "h_variance", "h_q25", "h_q50", "h_q75"]


def make_granule(path, n=250, seed=0, lat0=-75.0, lon0=10.0, fill_good=0.0):
    """An ATL06-like granule: six beams, flagged rows (quality 1) carry fill values (and a
    ``fill_good`` fraction of the good rows too)."""
    rng = np.random.default_rng(seed)
    rows = []
    with h5py.File(path, "w") as f:
        for b in BEAMS:
            g = f.create_group(f"{b}/land_ice_segments")
            lat = rng.uniform(lat0, lat0 + 0.12, n)
            lon = rng.uniform(lon0, lon0 + 0.4, n)
            h = rng.normal(2000, 30, n).astype(np.float32)
            sigma = rng.uniform(0.05, 2.0, n).astype(np.float32)
            q = (rng.uniform(size=n) < 0.2).astype(np.int8)
            h[q == 1] = FILL  # bad segments: fill values, removed by the quality filter
            h[(q == 0) & (rng.uniform(size=n) < fill_good)] = FILL  # fills the filter keeps
            for name, v in (
                ("latitude", lat),
                ("longitude", lon),
                ("h_li", h),
                ("h_li_sigma", sigma),
                ("atl06_quality_summary", q),
            ):
                g.create_dataset(name, data=v)
            g["h_li"].attrs["_FillValue"] = FILL
            rows.append(dict(lat=lat, lon=lon, h=h, s=sigma, q=q))
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def expected(rows, order):
    """zagg's definitions per cell: mortie cells (authalic), quality-filtered, numpy statistics
    (of the heights that are not fill values)."""
    ok = (rows["q"] == 0) & (rows["h"] != FILL)
    lat, lon = rows["lat"][ok], rows["lon"][ok]
    h, s = rows["h"][ok].astype(np.float64), rows["s"][ok].astype(np.float64)
    cells, _ = mortie.mort2healpix(mortie.geo2mort(lat, lon, order=order))
    out = {}
    for c in np.unique(cells):
        sel = cells == c
        hv, sv = h[sel], s[sel]
        out[int(c)] = {
            "count": sel.sum(),
            "h_min": hv.min(),
            "h_max": hv.max(),
            "h_mean": np.average(hv, weights=1.0 / sv**2),
            "h_sigma": 1.0 / np.sqrt(np.sum(1.0 / sv**2)),
            "h_variance": np.var(hv),
            "h_q25": np.quantile(hv, 0.25),
            "h_q50": np.quantile(hv, 0.50),
            "h_q75": np.quantile(hv, 0.75),
        }
    return out


@pytest.fixture(scope="module")
def granules(tmp_path_factory):
    base = tmp_path_factory.mktemp("zagg")
    parts = [make_granule(base / f"ATL06_{i}.h5", seed=i, lon0=10.0 + i) for i in range(2)]  # two shards
    rows = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return base, sorted(str(p) for p in base.glob("*.h5")), rows


def open_level(store, order):
    ds = xr.open_zarr(store, group=f"order_{order:02d}")
    return ds, xdggs.decode(ds)


def check(ds, exp, *, rtol, quantiles_exact):
    cells = ds["cell_ids"].values
    assert sorted(exp) == cells.tolist()
    assert set(VARIABLES) <= set(ds.data_vars)
    got = {v: ds[v].values for v in VARIABLES}
    e = {v: np.array([exp[int(c)][v] for c in cells]) for v in VARIABLES}
    np.testing.assert_array_equal(got["count"], e["count"])
    for v in ("h_min", "h_max"):
        np.testing.assert_array_equal(got[v], e[v].astype(got[v].dtype))
    for v in ("h_mean", "h_variance", "h_sigma"):
        np.testing.assert_allclose(got[v], e[v].astype(got[v].dtype), rtol=rtol)
    for v in ("h_q25", "h_q50", "h_q75"):
        if quantiles_exact:
            np.testing.assert_allclose(got[v], e[v].astype(got[v].dtype), rtol=rtol, atol=0)
        else:  # streaming sketch: within the cell's range
            assert np.all(got[v] >= e["h_min"] - 1e-3) and np.all(got[v] <= e["h_max"] + 1e-3)


# sha256 of zagg's published examples/atl06.yaml, which the shipped copy must equal byte for byte.
ZAGG_ATL06_SHA256 = "3f6e663fe406c1f03ffaa9efca4d4479f38384ee221cd2f4e76409ade5d67d0e"


def test_shipped_file_is_byte_identical_copy():
    assert hashlib.sha256(SHIPPED.read_bytes()).hexdigest() == ZAGG_ATL06_SHA256


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
@pytest.mark.slow
def test_shipped_atl06_file_runs_via_cli(granules, tmp_path, exact):
    base, files, rows = granules
    # as a user runs it: the file in its own folder, the granules and the store named relative to
    # the working directory (not to the file's folder)
    (tmp_path / "cfg").mkdir()
    shutil.copy(SHIPPED, tmp_path / "cfg" / "atl06.yaml")
    (tmp_path / "granules").mkdir()
    for f in files:
        shutil.copy(f, tmp_path / "granules")
    names = [f"granules/{os.path.basename(f)}" for f in files]
    store = tmp_path / "out.zarr"
    args = ["run", "cfg/atl06.yaml", "--inputs", *names, "--store", "out.zarr", "--synchronous", "-q"]
    run_cli(*args, *(["--exact"] if exact else []), cwd=tmp_path)
    assert not (tmp_path / "cfg" / "out.zarr").exists()
    ds, decoded = open_level(store, 12)
    assert decoded.dggs.grid_info.level == 12
    # zagg's conventions: authalic latitude -> the ellipsoid is recorded for xdggs
    assert ds["cell_ids"].attrs["ellipsoid"]["inverse_flattening"] == pytest.approx(298.257223563)
    assert ds["count"].dtype == np.int64 and ds["h_mean"].dtype == np.float32
    check(ds, expected(rows, 12), rtol=2e-7, quantiles_exact=exact)
    # morton coordinate as mortie defines it
    np.testing.assert_array_equal(
        ds["morton"].values, mortie.geo2mort(*_centres_geodetic(ds["cell_ids"].values, 12), order=12)
    )
    import zarr

    root = zarr.open_group(str(store), mode="r")
    meta = root.attrs["healforge"]
    assert meta["zagg"]["variance"].startswith("population") and "authalic" in meta["zagg"]["latitude"]
    assert meta["zagg"]["reader"].startswith("h5coro -> h5py")
    assert meta["orders"] == list(range(6, 13))
    for k in meta["orders"]:  # every pyramid level decodes and holds every variable
        ds_k, dec = open_level(store, k)
        assert dec.dggs.grid_info.level == k and set(VARIABLES) <= set(ds_k.data_vars)
        assert int(ds_k["count"].sum()) == int((rows["q"] == 0).sum())
    if exact:  # coarser levels are exact too
        check(open_level(store, 8)[0], expected(rows, 8), rtol=2e-7, quantiles_exact=True)


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
def test_fill_values_are_skipped_not_values(tmp_path, exact):
    """Heights equal to the dataset's _FillValue in rows the quality filter keeps: the cell
    statistics are numpy's over the other heights, the fills are counted and reported, and no
    numpy warning reaches the user."""
    rows = make_granule(tmp_path / "g.h5", n=400, seed=9, fill_good=0.1)
    n_fills = int(((rows["q"] == 0) & (rows["h"] == FILL)).sum())
    assert n_fills > 20
    store = tmp_path / "f.zarr"
    proc = run_cli(
        "run", SHIPPED, "--inputs", tmp_path / "g.h5", "--store", store, "--synchronous",
        *(["--exact"] if exact else []),
    )  # fmt: skip
    assert f"{n_fills} fill value(s) skipped" in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    ds, _ = open_level(store, 12)
    check(ds, expected(rows, 12), rtol=2e-7, quantiles_exact=exact)
    assert float(ds["h_max"].max()) < 3000  # no fill became a height
    import zarr

    meta = zarr.open_group(str(store), mode="r").attrs["healforge"]
    assert "skipped" in meta["zagg"]["fills"]
    assert ds.attrs["healforge"]["fills_skipped"] == n_fills


def _centres_geodetic(cells, order):
    """Geodetic lat/lon of the centres of authalic cells (for mortie's geo2mort)."""
    from healforge.pixel import pixel_centers
    from healforge.pixel.latitude import authalic_to_geodetic

    lon, lat = pixel_centers(cells, order)
    return authalic_to_geodetic(lat), lon


def _float64(raw):
    raw = copy.deepcopy(raw)
    for v in raw["aggregation"]["variables"].values():
        if v.get("dtype") == "float32":
            v["dtype"] = "float64"
    return raw


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
def test_statistics_match_numpy_to_1e9(granules, tmp_path, exact):
    base, files, rows = granules
    raw = _float64(yaml.safe_load(SHIPPED.read_text()))
    plan = translate(raw, source=str(SHIPPED), inputs=files, store=str(tmp_path / "f64.zarr"), exact=exact)
    plan.orders = [12, 10]
    plan.pipeline["outputs"]["zarr"]["orders"] = [12, 10]
    summary = run_zagg(plan, synchronous=True, quiet=True, work_dir=str(tmp_path / "work"))
    assert summary["rows_read"] == len(rows["q"]) and summary["rows_filtered"] == int((rows["q"] == 1).sum())
    for k in (12, 10):
        check(open_level(tmp_path / "f64.zarr", k)[0], expected(rows, k), rtol=1e-9, quantiles_exact=exact)


def write_h5(path, datasets):
    with h5py.File(path, "w") as f:
        for name, v in datasets.items():
            f.create_dataset(name, data=np.asarray(v))


def layout_table(path, layout):
    import pyarrow as pa

    return pa.concat_tables([t for _, t in iter_granule(str(path), {"layout": layout})])


def test_filter_ops_and_2d_column(tmp_path):
    x = np.arange(10, dtype=np.float64)
    conf = np.stack([np.arange(10) % 5, np.arange(10) % 3], axis=1)
    write_h5(tmp_path / "g.h5", {"/b/x": x, "/b/flag": np.arange(10) % 4, "/b/conf": conf})
    cases = [
        ({"op": "eq", "value": 2}, np.arange(10) % 4 == 2),
        ({"op": "ne", "value": 2}, np.arange(10) % 4 != 2),
        ({"op": "ge", "value": 2}, np.arange(10) % 4 >= 2),
        ({"op": "le", "value": 1}, np.arange(10) % 4 <= 1),
        ({"op": "lt", "value": 1}, np.arange(10) % 4 < 1),
        ({"op": "gt", "value": 2}, np.arange(10) % 4 > 2),
        ({"op": "in", "values": [0, 3]}, np.isin(np.arange(10) % 4, [0, 3])),
        ({"op": "not_in", "values": [0, 3]}, ~np.isin(np.arange(10) % 4, [0, 3])),
        ({"op": "eq", "value": 0, "keep": False}, np.arange(10) % 4 != 0),
    ]
    for f, want in cases:
        flt = {"dataset": "/{group}/flag", "column": None, "level": None, "keep": True, **f}
        t = layout_table(
            tmp_path / "g.h5", {"columns": {"x": "/{group}/x"}, "groups": ["b"], "filters": [flt]}
        )
        np.testing.assert_array_equal(
            t.column("_zagg_keep").to_numpy(zero_copy_only=False), want, err_msg=str(f)
        )
    flt = {"dataset": "/{group}/conf", "column": 1, "op": "ge", "value": 1, "level": None, "keep": True}
    t = layout_table(tmp_path / "g.h5", {"columns": {"x": "/{group}/x"}, "groups": ["b"], "filters": [flt]})
    np.testing.assert_array_equal(t.column("_zagg_keep").to_numpy(zero_copy_only=False), conf[:, 1] >= 1)
    from healforge.errors import BadInputError

    with pytest.raises(BadInputError, match="integer 'column'"):
        layout_table(
            tmp_path / "g.h5",
            {"columns": {"x": "/{group}/x"}, "groups": ["b"], "filters": [dict(flt, column=None)]},
        )


def test_levels_link_broadcast_and_filter(tmp_path):
    # 3 segments covering base rows [0, 4), [4, 5), [5, 9) with 1-based index_beg
    write_h5(
        tmp_path / "g.h5",
        {
            "/b/photons/h": np.arange(9.0),
            "/b/seg/beg": [1, 5, 6],
            "/b/seg/cnt": [4, 1, 4],
            "/b/seg/dem": [10.0, 20.0, 30.0],
            "/b/seg/flag": [0, 1, 0],
        },
    )
    link = {"to": "photons", "index_beg": "/{group}/seg/beg", "count": "/{group}/seg/cnt", "index_base": 1}
    layout = {
        "columns": {"h": "/{group}/photons/h"},
        "groups": ["b"],
        "levels": {"photons": {"path": "/{group}/photons"}, "seg": {"path": "/{group}/seg", "link": link}},
        "base_level": "photons",
        "level_variables": {"seg": {"dem": "/{group}/seg/dem"}},
        "filters": [
            {
                "dataset": "/{group}/seg/flag",
                "op": "eq",
                "value": 0,
                "level": "seg",
                "column": None,
                "keep": True,
            }
        ],
    }
    t = layout_table(tmp_path / "g.h5", layout)
    np.testing.assert_array_equal(t.column("dem").to_numpy(), [10] * 4 + [20] + [30] * 4)
    np.testing.assert_array_equal(
        t.column("_zagg_keep").to_numpy(zero_copy_only=False), [1] * 4 + [0] + [1] * 4
    )


def _zagg_yaml(tmp_path, raw, name="z.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.slow
def test_granule_catalog_json_is_the_input_list(granules, tmp_path):
    base, files, rows = granules
    ok = rows["q"] == 0
    shards = mortie.geo2mort(rows["lat"][ok], rows["lon"][ok], order=6)
    keys, n_in = np.unique(shards, return_counts=True)
    assert keys.size >= 2  # the data spans several shards; the catalog lists all but the last
    cat = {
        "metadata": {"short_name": "ATL06"},
        "grid_signature": {"type": "healpix", "parent_order": 6, "child_order": 12},
        "shard_keys": [int(k) for k in keys[:-1]]
        + [int(morton_of(np.array([5]), 6)[0])],  # + one without data
        "granules": [
            [{"id": "a", "s3": files[0], "https": "https://example.invalid/a.h5"}],
            [
                {"id": "a", "s3": files[0], "https": "https://example.invalid/a.h5"},
                {"id": "b", "s3": files[1], "https": "https://example.invalid/b.h5"},
            ],
        ],
    }
    (tmp_path / "catalog.json").write_text(json.dumps(cat))
    plan = load(str(SHIPPED), inputs=[str(tmp_path / "catalog.json")], store=str(tmp_path / "o.zarr"))
    assert plan.pipeline["inputs"][0]["paths"] == files  # each granule once, s3 hrefs (driver s3)
    bad = dict(cat, grid_signature={"parent_order": 7, "child_order": 12})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ConfigError, match=r"bad.json: grid_signature.parent_order: .*parent_order 7"):
        load(str(SHIPPED), inputs=[str(tmp_path / "bad.json")], store=str(tmp_path / "o.zarr"))
    # the catalog also runs through the CLI
    run_cli(
        "run",
        SHIPPED,
        "--inputs",
        tmp_path / "catalog.json",
        "--store",
        tmp_path / "c.zarr",
        "--synchronous",
        "-q",
    )
    ds, _ = open_level(tmp_path / "c.zarr", 12)
    assert int(ds["count"].sum()) == int(n_in[:-1].sum())  # zagg writes the listed shards only
    assert "shards" in ds.attrs["healforge"]["zagg"]


@pytest.mark.parametrize(
    "where,value,key",
    [
        (("aggregation", "variables", "h_min", "colour"), "red", "aggregation.variables.h_min.colour"),
        (("data_source", "bounds_box"), [0, 1], "data_source.bounds_box"),
        (("output", "grid", "chunk_inner"), 9, "output.grid.chunk_inner"),
        (("output", "store_layout"), "hive", "output.store_layout"),
        (
            ("aggregation", "variables", "h_q25", "params", "method"),
            "nearest",
            "aggregation.variables.h_q25.params.method",
        ),
        (("aggregation", "coordinates", "h3"), {"dtype": "uint64"}, "aggregation.coordinates.h3"),
        (("data_source", "quality_filter", "op"), "gt", "data_source.quality_filter.op"),
    ],
)
def test_unknown_or_unsupported_key_is_an_error_naming_it(tmp_path, where, value, key):
    raw = yaml.safe_load(SHIPPED.read_text())
    node = raw
    for k in where[:-1]:
        node = node[k]
    node[where[-1]] = value
    path = _zagg_yaml(tmp_path, raw)
    with pytest.raises(ConfigError) as info:
        load(str(path), inputs=["x.h5"], store=str(tmp_path / "o.zarr"))
    assert f"{path}: {key}: " in str(info.value)
    if key == "output.store_layout":  # the CLI reports it too, with exit code 2
        proc = run_cli("run", path, "--inputs", "x.h5", "--store", tmp_path / "o.zarr", check=False)
        assert proc.returncode == 2 and f"{path}: {key}: " in proc.stderr


@pytest.mark.parametrize(
    "expression,message",
    [
        ("np.median(h_li)", "median"),
        ("np.sum(h_li) + h_li", "h_li"),
        ("np.sum(np.mean(h_li))", "nested"),
        ("np.sum(__import__('os'))", "not allowed"),
    ],
)
def test_bad_cell_expression_is_an_error_naming_the_variable(tmp_path, expression, message):
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["aggregation"]["variables"]["h_sigma"]["expression"] = expression
    path = _zagg_yaml(tmp_path, raw)
    with pytest.raises(ConfigError, match=rf"aggregation.variables.h_sigma.expression: .*{message}"):
        load(str(path), inputs=["x.h5"], store=str(tmp_path / "o.zarr"))


def test_filters_expression_and_level_config_run(tmp_path):
    """A zagg file with structured filters (2-D column), an expression filter and a linked level."""
    rng = np.random.default_rng(5)
    n, nseg = 400, 40
    lat = rng.uniform(-75, -74.9, n)
    lon = rng.uniform(10, 10.3, n)
    h = rng.normal(100, 5, n)
    conf = rng.integers(0, 5, (n, 3))
    cnt = np.full(nseg, n // nseg)
    beg = np.r_[0, np.cumsum(cnt)[:-1]]
    segflag = rng.integers(0, 2, nseg)
    write_h5(
        tmp_path / "g.h5",
        {
            "/gt1l/ph/lat": lat,
            "/gt1l/ph/lon": lon,
            "/gt1l/ph/h": h,
            "/gt1l/ph/conf": conf,
            "/gt1l/seg/beg": beg,
            "/gt1l/seg/cnt": cnt,
            "/gt1l/seg/flag": segflag,
            "/gt1l/seg/dem": rng.normal(90, 1, nseg),
        },
    )
    raw = {
        "data_source": {
            "reader": "h5coro",
            "groups": ["gt1l", "gt2l"],
            "coordinates": {"latitude": "/{group}/ph/lat", "longitude": "/{group}/ph/lon"},
            "variables": {"h": "/{group}/ph/h"},
            "levels": {
                "ph": {"path": "/{group}/ph", "coordinates": ["lat", "lon"], "variables": ["h"]},
                "seg": {
                    "path": "/{group}/seg",
                    "variables": {"dem": "/{group}/seg/dem"},
                    "link": {"to": "ph", "index_beg": "/{group}/seg/beg", "count": "/{group}/seg/cnt"},
                },
            },
            "base_level": "ph",
            "filters": [
                {"dataset": "/{group}/ph/conf", "column": 2, "op": "ge", "value": 2},
                {"level": "seg", "dataset": "/{group}/seg/flag", "op": "eq", "value": 0},
                {"expression": "(h > 95) & (np.abs(h - dem) < 20)"},
            ],
        },
        "aggregation": {
            "variables": {
                "n": {"function": "len", "source": "h", "dtype": "int32", "fill_value": 0},
                "dh": {"expression": "np.mean(h - dem)", "dtype": "float64", "attrs": {"units": "m"}},
                "h_med": {"function": "np.median", "source": "h", "dtype": "float64"},
            }
        },
        "output": {"grid": {"type": "healpix", "parent_order": 8, "child_order": 10}, "pyramid": False},
    }
    path = _zagg_yaml(tmp_path, raw)
    run_cli(
        "run",
        path,
        "--inputs",
        tmp_path / "g.h5",
        "--store",
        tmp_path / "o.zarr",
        "--exact",
        "--synchronous",
        "-q",
    )
    dem = np.repeat(np.asarray(h5py.File(tmp_path / "g.h5")["/gt1l/seg/dem"]), cnt)
    keep = (conf[:, 2] >= 2) & np.repeat(segflag == 0, cnt) & (h > 95) & (np.abs(h - dem) < 20)
    cells, _ = mortie.mort2healpix(mortie.geo2mort(lat[keep], lon[keep], order=10))
    ds, _ = open_level(tmp_path / "o.zarr", 10)
    assert ds["cell_ids"].values.tolist() == np.unique(cells).tolist()
    assert ds["n"].dtype == np.int32 and ds["dh"].attrs["units"] == "m"
    for i, c in enumerate(ds["cell_ids"].values):
        sel = cells == c
        assert ds["n"].values[i] == sel.sum()
        assert ds["dh"].values[i] == pytest.approx(np.mean((h[keep] - dem[keep])[sel]), rel=1e-12)
        assert ds["h_med"].values[i] == pytest.approx(np.median(h[keep][sel]), rel=1e-12)


@pytest.mark.parametrize("exact", [False, True], ids=["streaming", "exact"])
def test_numpy_meanings_nan_percentile_ddof_user_function(tmp_path, exact):
    """numpy's NaN propagation (min vs nanmin, in cell expressions too), percentile q in [0, 100],
    ddof, dotted callables."""
    rng = np.random.default_rng(9)
    n = 600
    lat, lon = rng.uniform(-75, -74.95, n), rng.uniform(10, 10.1, n)
    h = rng.normal(50, 3, n)
    h[::37] = np.nan
    write_h5(tmp_path / "g.h5", {"/b/lat": lat, "/b/lon": lon, "/b/h": h})
    variables = {
        "n": {"function": "len", "source": "h", "dtype": "int64"},
        "mn": {"function": "min", "source": "h", "dtype": "float64"},
        "nmn": {"function": "nanmin", "source": "h", "dtype": "float64"},
        "sd1": {"function": "std", "source": "h", "params": {"ddof": 1}, "dtype": "float64"},
        "nsd": {"function": "nanstd", "source": "h", "dtype": "float64"},
        # cell expressions keep numpy's meanings: np.sum of a cell holding a NaN is NaN
        "es": {"expression": "np.sqrt(np.sum((h - 50) ** 2) / len(h))", "dtype": "float64"},
        "ens": {"expression": "np.nansum(h) / np.size(h) - np.nanmean(h) * 0", "dtype": "float64"},
    }
    if exact:
        variables["p90"] = {
            "function": "nanpercentile",
            "source": "h",
            "params": {"q": 90},
            "dtype": "float64",
        }
        variables["span"] = {"function": "numpy.nanmax", "source": "h", "dtype": "float64"}
        variables["rng"] = {"function": "np.ptp", "source": "h", "dtype": "float64"}
    raw = {
        "data_source": {
            "groups": ["b"],
            "coordinates": {"latitude": "/{group}/lat", "longitude": "/{group}/lon"},
            "variables": {"h": "/{group}/h"},
        },
        "aggregation": {"variables": variables},
        "output": {"grid": {"type": "healpix", "parent_order": 7, "child_order": 11}, "pyramid": False},
    }
    path = _zagg_yaml(tmp_path, raw)
    run_zagg(
        str(path),
        inputs=[str(tmp_path / "g.h5")],
        store=str(tmp_path / "o.zarr"),
        exact=exact,
        synchronous=True,
        quiet=True,
    )
    ds, _ = open_level(tmp_path / "o.zarr", 11)
    cells, _ = mortie.mort2healpix(mortie.geo2mort(lat, lon, order=11))
    assert ds["cell_ids"].values.tolist() == np.unique(cells).tolist()
    has_nan = 0
    with np.errstate(all="ignore"):
        for i, c in enumerate(ds["cell_ids"].values):
            v = h[cells == c]
            has_nan += int(np.isnan(v).any())
            assert ds["n"].values[i] == v.size
            np.testing.assert_equal(ds["mn"].values[i], np.min(v))  # NaN when the cell holds a NaN
            assert ds["nmn"].values[i] == np.nanmin(v)
            np.testing.assert_allclose(ds["nsd"].values[i], np.nanstd(v), rtol=1e-9)
            np.testing.assert_allclose(ds["sd1"].values[i], np.std(v, ddof=1), rtol=1e-9)
            np.testing.assert_allclose(ds["es"].values[i], np.sqrt(np.sum((v - 50) ** 2) / len(v)), rtol=1e-9)
            np.testing.assert_allclose(ds["ens"].values[i], np.nansum(v) / np.size(v), rtol=1e-9)
            if exact:
                np.testing.assert_allclose(ds["p90"].values[i], np.nanpercentile(v, 90), rtol=1e-12)
                assert ds["span"].values[i] == np.nanmax(v)
                np.testing.assert_equal(ds["rng"].values[i], np.ptp(v))
    assert has_nan > 3


def test_user_function_needs_exact(tmp_path):
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["aggregation"]["variables"]["h_span"] = {"function": "numpy.ptp", "source": "h_li"}
    with pytest.raises(ConfigError, match=r"aggregation.variables.h_span.function: .*--exact"):
        translate(raw, source="z.yaml", inputs=["x.h5"], store="o.zarr")
    assert translate(raw, source="z.yaml", inputs=["x.h5"], store="o.zarr", exact=True).exact


def test_exact_run_resumes_after_a_crash_and_restarts_on_a_changed_config(granules, tmp_path, monkeypatch):
    import healforge.aggregate.shuffle as ex

    base, files, rows = granules
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["output"]["pyramid"] = False
    work = tmp_path / "work"

    def plan(r):
        return translate(r, source=str(SHIPPED), inputs=files, store=str(tmp_path / "o.zarr"), exact=True)

    real = ex.shard_statistics
    monkeypatch.setattr(ex, "shard_statistics", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(Exception, match="killed"):
        run_zagg(plan(raw), synchronous=True, quiet=True, work_dir=str(work))
    scattered = list((work / "scattered").glob("*.json"))
    assert len(scattered) == 2 and list((work / "pieces").glob("*.arrow"))
    monkeypatch.setattr(ex, "shard_statistics", real)
    calls = []
    real_scatter = ex.scatter_source
    monkeypatch.setattr(ex, "scatter_source", lambda *a, **k: calls.append(a) or real_scatter(*a, **k))
    run_zagg(plan(raw), synchronous=True, quiet=True, work_dir=str(work))
    assert calls == []  # resumed: no granule read again
    check(open_level(tmp_path / "o.zarr", 12)[0], expected(rows, 12), rtol=2e-7, quantiles_exact=True)
    assert not work.exists()  # removed after the store is written
    # a changed configuration does not reuse stale work files
    monkeypatch.setattr(ex, "shard_statistics", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(Exception, match="killed"):
        run_zagg(plan(raw), synchronous=True, quiet=True, work_dir=str(work))
    monkeypatch.setattr(ex, "shard_statistics", real)
    raw2 = copy.deepcopy(raw)
    raw2["data_source"]["quality_filter"]["value"] = 1
    summary = run_zagg(plan(raw2), synchronous=True, quiet=True, work_dir=str(work))
    ds, _ = open_level(tmp_path / "o.zarr", 12)
    # it keeps the flagged rows, whose heights are all fills: skipped, none becomes a value
    assert summary["fills_skipped"] == int((rows["q"] == 1).sum()) and int(ds["count"].sum()) == 0


@pytest.mark.slow
def test_granules_and_store_on_s3(granules, tmp_path, s3_options, monkeypatch):
    """driver s3: catalog hrefs s3://..., output.store on S3 with output.endpoint_url."""
    import s3fs

    from conftest import BUCKET

    base, files, rows = granules
    endpoint = s3_options["client_kwargs"]["endpoint_url"]
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # how an S3-compatible source is reached
    fs = s3fs.S3FileSystem(**s3_options)
    hrefs = []
    for f in files:
        fs.put(f, f"{BUCKET}/granules/{Path(f).name}")
        hrefs.append(f"s3://{BUCKET}/granules/{Path(f).name}")
    cat = {"grid_signature": {"parent_order": 6, "child_order": 12}, "shard_keys": [], "granules": []}
    ok = rows["q"] == 0
    keys = np.unique(mortie.geo2mort(rows["lat"][ok], rows["lon"][ok], order=6))
    cat["shard_keys"] = [int(k) for k in keys]
    cat["granules"] = [[{"id": h, "s3": h, "https": h.replace("s3://", "https://")} for h in hrefs]] * len(
        keys
    )
    (tmp_path / "catalog.json").write_text(json.dumps(cat))
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["output"]["store"] = f"s3://{BUCKET}/zagg/out.zarr"
    raw["output"]["endpoint_url"] = endpoint
    raw["output"]["pyramid"] = False
    raw["catalog"] = "catalog.json"
    path = _zagg_yaml(tmp_path, raw)
    summary = run_zagg(str(path), synchronous=True, quiet=True)
    assert summary["outputs"] == [f"s3://{BUCKET}/zagg/out.zarr"]
    ds = xr.open_zarr(fs.get_mapper(f"{BUCKET}/zagg/out.zarr"), group="order_12")
    xdggs.decode(ds)
    check(ds, expected(rows, 12), rtol=2e-7, quantiles_exact=False)


def test_pyramid_orders_follow_zaggs_grammar():
    raw = yaml.safe_load(SHIPPED.read_text())

    def orders(pyramid):
        r = copy.deepcopy(raw)
        if pyramid != "omit":
            r["output"]["pyramid"] = pyramid
        return translate(r, source="z.yaml", inputs=["x.h5"], store="o.zarr").orders

    assert orders("omit") == [12, 11, 10, 9, 8, 7, 6]  # every order inside the shard
    assert orders(False) == [12]
    # leaf overviews 10 and 8, then the fixed ladder k + (8 - 6) for k = 5 .. 0
    assert orders({"overviews": [10, 8]}) == [12, 10, 8, 7, 6, 5, 4, 3, 2]
    plan = translate(
        dict(raw, output={**raw["output"], "pyramid": {"overviews": 9}}), inputs=["x.h5"], store="o"
    )
    assert plan.shard_order == 3 and plan.orders[-1] == 3  # exact mode shards at the coarsest level
    with pytest.raises(ConfigError, match="output.pyramid.overviews: must strictly descend"):
        orders({"overviews": [6]})

"""``healforge run PIPELINE.yaml`` on ICESat-2-like HDF5 granules: local, S3, resume, bad configs."""

import copy
import json

import healpy as hp
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from conftest import BUCKET, run_cli
from healforge.errors import BadInputError
from healforge.maps import read_map
from healforge.run import ConfigError
from healforge.run.runner import PipelineStateError, run_pipeline
from test_maps_config import BEAMS, FILL, TEMPLATES, make_atl06

ORDER = 4
N_FILES = 3

PIPELINE = {
    "name": "atl06-pipeline-test",
    "inputs": [{"paths": ["granules/*.h5"], "groups": ["gt*"], "columns": TEMPLATES}],
    "filter": "atl06_quality_summary == 0 and isfinite(h_li)",
    "coordinates": {"lon": "longitude", "lat": "latitude"},
    "assignment": {"order": ORDER, "mode": "points", "lon_convention": "-180_180"},
    "statistics": {
        "n": {"function": "count"},
        "h_mean": {"function": "mean", "column": "h_li"},
        "h_wmean": {
            "function": "weighted_mean",
            "column": "h_li",
            "parameters": {"weight": "1 / h_li_sigma**2"},
        },
        "h_med": {"function": "median", "column": "h_li"},
        "h_q": {"function": "quantile", "column": "h_li", "parameters": {"q": [0.1, 0.9]}},
        "h_std": {"function": "std", "column": "h_li"},
        "h_km": {"function": "mean", "expression": "h_li / 1000", "dtype": "float32"},
    },
    "outputs": {
        "state": "out/state.parquet",
        "zarr": {"path": "out/map.zarr", "orders": [4, 3, 2]},
        "parquet": {"path": "out/map.parquet", "orders": [4]},
        "geoparquet": {"path": "out/map.geoparquet", "order": 2},
        "plots": [
            {
                "path": "out/h.png",
                "variable": "h_mean",
                "order": 3,
                "projection": "polar-south",
                "width": 300,
            },
            {
                "path": "out/g.png",
                "variable": "h_std",
                "order": 4,
                "projection": "gnomonic",
                "center": [0, -75],
                "extent": 12,
                "scale": "percentile",
                "frame": "body",
                "width": 200,
            },
        ],
    },
}
VARIABLES = ["n", "h_mean", "h_wmean", "h_med", "h_q_p10", "h_q_p90", "h_std", "h_km"]


def make_granules(folder, n_files=N_FILES):
    """HDF5 granules in the ATL06 layout; returns every written row as a DataFrame."""
    folder.mkdir(parents=True, exist_ok=True)
    frames = []
    for i in range(n_files):
        written = make_atl06(folder / f"ATL06_{i:02d}.h5", n=400, seed=10 + i)
        for b in BEAMS:
            d = written[b]
            frames.append(
                pd.DataFrame(
                    {
                        "lat": d["latitude"],
                        "lon": d["longitude"],
                        "h": np.where(d["h_li"] == FILL, np.nan, d["h_li"].astype(np.float64)),
                        "sigma": d["h_li_sigma"].astype(np.float64),
                        "q": d["atl06_quality_summary"],
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def expected_map(rows: pd.DataFrame, order: int) -> pd.DataFrame:
    """Plain pandas/numpy per-cell statistics (healpy assigns the cells)."""
    ok = rows[(rows.q == 0) & np.isfinite(rows.h)].copy()
    ok["cell"] = hp.ang2pix(2**order, ok.lon.to_numpy(), ok.lat.to_numpy(), nest=True, lonlat=True)
    ok["w"] = 1.0 / ok.sigma**2
    ok["wh"] = ok.w * ok.h
    g = ok.groupby("cell")
    out = pd.DataFrame(
        {
            "n": g.size(),
            "h_mean": g.h.mean(),
            "h_wmean": g.wh.sum() / g.w.sum(),
            "h_med": g.h.median(),
            "h_std": g.h.std(ddof=1),
        }
    )
    out["values"] = g.h.apply(np.sort)
    return out.sort_index()


def assert_same(a, b, columns=None) -> None:
    """Map tables with the same cells and values (NaN equal to NaN), bit for bit."""
    columns = columns or ["cell_ids", *VARIABLES]
    assert a.num_rows == b.num_rows
    for name in columns:
        x, y = a.column(name), b.column(name)
        assert x.type == y.type, name
        np.testing.assert_array_equal(x.to_numpy(), y.to_numpy(), err_msg=name)


def write_config(tmp_path, config=PIPELINE, name="p.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def as_frame(table) -> pd.DataFrame:
    return table.to_pandas().set_index("cell_ids")


def check_against_expected(got: pd.DataFrame, exp: pd.DataFrame) -> None:
    assert list(got.index) == list(exp.index)
    np.testing.assert_array_equal(got.n.to_numpy(), exp.n.to_numpy())
    np.testing.assert_allclose(got.h_mean, exp.h_mean, rtol=1e-12)
    np.testing.assert_allclose(got.h_wmean, exp.h_wmean, rtol=1e-12)
    np.testing.assert_allclose(got.h_std, exp.h_std, rtol=1e-9)
    np.testing.assert_allclose(got.h_km, exp.h_mean / 1000, rtol=1e-6)
    # the weights matter: the weighted mean is not the plain mean
    assert np.abs(got.h_wmean - got.h_mean).max() > 1.0
    # median and quantiles from the sketch: within 1% of the cell's spread, between the
    # neighbouring ranks
    scale = np.where(exp.n > 1, exp.h_std, 1.0)
    assert (np.abs(got.h_med - exp.h_med) / scale).max() < 0.01
    for cell, q in ((c, qq) for c in exp.index[:50] for qq in ("h_q_p10", "h_q_p90")):
        v = exp.loc[cell, "values"]
        assert v[0] <= got.loc[cell, q] <= v[-1]


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """One uninterrupted local run, shared by the tests that compare with it."""
    base = tmp_path_factory.mktemp("local")
    rows = make_granules(base / "granules")
    summary = run_pipeline(write_config(base), synchronous=True, quiet=True)
    return base, rows, summary


def test_pipeline_on_hdf5_beams_matches_plain_computation(local_run):
    base, rows, summary = local_run
    out = base / "out"
    assert summary["complete"] and summary["files"] == N_FILES and summary["files_skipped"] == 0
    assert summary["rows_read"] == len(rows) == N_FILES * len(BEAMS) * 400
    kept = int(((rows.q == 0) & np.isfinite(rows.h)).sum())
    assert summary["rows_filtered"] == len(rows) - kept and summary["rows_assigned"] == kept
    for k in (4, 3, 2):  # every order of the pyramid, built by merging states
        got = as_frame(read_map(out / "map.zarr", k))
        assert list(got.columns) == VARIABLES
        check_against_expected(got, expected_map(rows, k))
    t4 = read_map(out / "map.zarr", 4)
    assert t4.schema.field("h_km").type == "float" and t4.schema.field("n").type == "int64"
    assert_same(read_map(out / "map.parquet"), t4)
    # xarray / xdggs open the store; geopandas reads the polygons; the plot is drawn
    import geopandas as gpd
    import xarray as xr
    import xdggs

    ds = xdggs.decode(xr.open_zarr(out / "map.zarr", group="order_03"))
    assert ds.dggs.grid_info.level == 3
    np.testing.assert_array_equal(ds.n.values, read_map(out / "map.zarr", 3).column("n").to_numpy())
    gdf = gpd.read_parquet(out / "map.geoparquet")
    assert len(gdf) == read_map(out / "map.zarr", 2).num_rows and gdf.geometry.is_valid.all()
    assert (out / "h.png").stat().st_size > 1000
    from healforge.aggregate.state import State

    state = State.load(out / "state.parquet")
    assert state.order == ORDER and state.rows_in == len(rows)
    progress = json.loads((out / "state.parquet.progress.json").read_text())
    assert len(progress["files"]) == N_FILES


@pytest.mark.slow
def test_pipeline_on_s3_gives_identical_results(local_run, tmp_path, s3_options):
    import s3fs

    base, _, _ = local_run
    fs = s3fs.S3FileSystem(**s3_options)
    for p in sorted((base / "granules").glob("*.h5")):
        fs.put(str(p), f"{BUCKET}/pipeline/granules/{p.name}")
    url = f"s3://{BUCKET}/pipeline"
    cfg = copy.deepcopy(PIPELINE)
    cfg["inputs"][0]["paths"] = [f"{url}/granules/*.h5"]
    cfg["inputs"][0]["storage_options"] = s3_options
    cfg["outputs"] = {
        "state": f"{url}/out/state.parquet",
        "zarr": {"path": f"{url}/out/map.zarr", "orders": [4, 2]},
        "parquet": {"path": f"{url}/out/map.parquet", "orders": [4, 2]},
        "geoparquet": {"path": f"{url}/out/map.geoparquet", "order": 2},
        "plots": [{"path": f"{url}/out/h.png", "variable": "h_mean", "order": 3, "width": 300}],
        "storage_options": s3_options,
    }
    summary = run_pipeline(write_config(tmp_path, cfg), synchronous=True, quiet=True)
    assert summary["complete"] and summary["files"] == N_FILES
    for k in (4, 2):
        remote = read_map(f"{url}/out/map.zarr", k, storage_options=s3_options)
        local = read_map(base / "out" / "map.zarr", k)
        assert_same(remote, local)
    local_coarse = read_map(base / "out" / "map.zarr", 2)
    assert_same(read_map(f"{url}/out/map.parquet", 2, storage_options=s3_options), local_coarse)
    assert fs.exists(f"{BUCKET}/pipeline/out/h.png") and fs.exists(f"{BUCKET}/pipeline/out/map.geoparquet")
    assert fs.exists(f"{BUCKET}/pipeline/out/state.parquet.progress.json")
    # a rerun resumes from the progress kept on S3: no file is read again (outputs are not part
    # of what the saved states depend on, so a smaller output set reuses them)
    cfg["outputs"] = {
        "state": f"{url}/out/state.parquet",
        "parquet": {"path": f"{url}/out/coarse.parquet", "orders": [2]},
        "storage_options": s3_options,
    }
    again = run_pipeline(write_config(tmp_path, cfg), synchronous=True, quiet=True)
    assert again["complete"] and again["files_skipped"] == N_FILES and again["files_accumulated"] == 0
    assert_same(read_map(f"{url}/out/coarse.parquet", storage_options=s3_options), local_coarse)


def _tables(out):
    return {k: read_map(out / "map.zarr", k) for k in (4, 3, 2)}


def test_killed_run_resumes_with_identical_outputs(local_run, tmp_path, capsys):
    base, _, _ = local_run
    (tmp_path / "granules").mkdir()
    for p in sorted((base / "granules").glob("*.h5")):
        (tmp_path / "granules" / p.name).write_bytes(p.read_bytes())
    cfg = write_config(tmp_path)
    # SIGKILL the run once the first input file is accumulated
    proc = run_cli(
        "run", cfg, "--synchronous", "-q", check=False, env={"HEALFORGE_KILL_AFTER": "accumulate:1"}
    )
    assert proc.returncode == -9, proc.stderr
    assert not (tmp_path / "out" / "map.zarr").exists()
    progress = json.loads((tmp_path / "out" / "state.parquet.progress.json").read_text())
    assert len(progress["files"]) == 1
    from healforge.cli import main

    assert main(["run", str(cfg), "--synchronous"]) == 0  # the rerun, in-process
    err = capsys.readouterr().err
    assert f"resuming, 1 of {N_FILES} input file(s) already accumulated" in err
    assert "accumulate: 2/2" in err  # only the files left were read
    expected = _tables(base / "out")
    got = _tables(tmp_path / "out")
    for k in expected:
        assert_same(got[k], expected[k])


@pytest.mark.slow
def test_partial_runs_in_parallel_then_changed_config(local_run, tmp_path):
    base, _, _ = local_run
    (tmp_path / "granules").mkdir()
    for p in sorted((base / "granules").glob("*.h5")):
        (tmp_path / "granules" / p.name).write_bytes(p.read_bytes())
    cfg = write_config(tmp_path)
    first = run_pipeline(cfg, synchronous=True, quiet=True, max_files=2)
    assert not first["complete"] and first["files_accumulated"] == 2
    assert not (tmp_path / "out" / "map.zarr").exists()
    from healforge.engine import Engine

    with Engine(workers=2, quiet=True) as engine:  # the remaining file through Dask workers
        rest = run_pipeline(cfg, engine=engine)
    assert rest["complete"] and rest["files_skipped"] == 2 and rest["files_accumulated"] == 1
    expected = _tables(base / "out")
    got = _tables(tmp_path / "out")
    for k in expected:
        assert_same(got[k], expected[k])
    # a changed filter is refused (the saved states used the old one) ...
    changed = copy.deepcopy(PIPELINE)
    changed["filter"] = "atl06_quality_summary == 1 and isfinite(h_li)"
    cfg2 = write_config(tmp_path, changed)
    with pytest.raises(PipelineStateError, match=r"different configuration \(changed: filter\).*--restart"):
        run_pipeline(cfg2, synchronous=True, quiet=True)
    # ... unless restarted; output-only changes (e.g. orders) keep the saved progress
    redo = run_pipeline(cfg2, synchronous=True, quiet=True, restart=True)
    assert redo["files_skipped"] == 0 and redo["files_accumulated"] == N_FILES
    assert read_map(tmp_path / "out" / "map.zarr", 4).column("n").to_numpy().sum() == redo["rows_assigned"]
    fewer = copy.deepcopy(changed)
    fewer["outputs"]["zarr"]["orders"] = [3]
    same = run_pipeline(write_config(tmp_path, fewer), synchronous=True, quiet=True)
    assert same["files_skipped"] == N_FILES and same["files_accumulated"] == 0
    from healforge.maps import map_orders

    assert map_orders(tmp_path / "out" / "map.zarr") == [3]


def test_bad_config_fails_before_reading_data(tmp_path, capsys):
    from healforge.cli import main

    (tmp_path / "granules").mkdir()
    (tmp_path / "granules" / "broken.h5").write_bytes(b"not hdf5 at all")  # reading it would fail
    bad = copy.deepcopy(PIPELINE)
    bad["statistics"]["h_wmean"]["parameters"]["weight"] = "1 / h_li_sgima**2"
    proc = run_cli("run", write_config(tmp_path, bad), check=False)
    assert proc.returncode == 2
    assert "statistics.h_wmean.parameters.weight" in proc.stderr and "'h_li_sgima'" in proc.stderr
    assert "did you mean 'h_li_sigma'" in proc.stderr
    assert "broken.h5" not in proc.stderr and not (tmp_path / "out").exists()
    # a user function cannot come from a streaming state: refused up front, naming the key
    bad = copy.deepcopy(PIPELINE)
    bad["statistics"]["h_prod"] = {"function": "numpy.prod", "column": "h_li"}
    assert main(["run", str(write_config(tmp_path, bad))]) == 2  # the CLI entry point, in-process
    assert (
        "statistics.h_prod.function: numpy function 'numpy.prod' needs every raw value"
        in capsys.readouterr().err
    )
    with pytest.raises(ConfigError, match=r"assignment\.order"):
        bad = copy.deepcopy(PIPELINE)
        bad["assignment"]["order"] = 40
        run_pipeline(write_config(tmp_path, bad), synchronous=True, quiet=True)
    assert not (tmp_path / "out").exists()
    # --check validates only; the good config with the broken file then fails on the data,
    # naming the file (exit code 2)
    assert main(["run", str(write_config(tmp_path)), "--check"]) == 0
    assert "configuration is valid" in capsys.readouterr().out
    assert main(["run", str(write_config(tmp_path)), "--synchronous", "-q"]) == 2
    err = capsys.readouterr().err
    assert "not a readable HDF5 file" in err and "broken.h5" in err


def _points_pipeline(paths, out, **extra):
    cfg = {
        "inputs": [{"paths": paths, **extra.pop("input", {})}],
        "filter": "flag != 4",
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": 3, **extra.pop("assignment", {})},
        "statistics": {"n": {"function": "count"}, "mag_mean": {"function": "mean", "column": "mag"}},
        "outputs": {"parquet": {"path": out, "orders": [3, 1]}, **extra.pop("outputs", {})},
    }
    return cfg


def test_parquet_inputs_bad_rows_and_s3_parquet(tmp_path, s3_options):
    import pyarrow.parquet as pq

    from conftest import make_points, survey_table, write_parquet_files

    table = survey_table(*make_points("uniform", 3000, seed=3))
    dec = table.column("dec").to_numpy().copy()
    flag = table.column("flag").to_numpy()
    bad_kept = int(np.flatnonzero(flag != 4)[100])  # a bad row that passes the filter
    bad_dropped = int(np.flatnonzero(flag == 4)[0])  # one the filter removes first
    dec[[bad_kept, bad_dropped]] = 95.0
    table = table.set_column(table.schema.get_field_index("dec"), "dec", pa.array(dec))
    paths = write_parquet_files(tmp_path / "in", table, 2)
    # default: stop, naming the file, column and the row index in the file (not in the filtered batch)
    with pytest.raises(BadInputError, match=rf"part00.parquet.*row {bad_kept}\b"):
        run_pipeline(_points_pipeline(paths, str(tmp_path / "a.parquet")), synchronous=True, quiet=True)
    # quarantine: the row is set aside with its file row; counts in = counts out + quarantined
    cfg = _points_pipeline(
        paths,
        str(tmp_path / "q.parquet"),
        assignment={"on_bad_rows": "quarantine"},
        outputs={"state": str(tmp_path / "q.state")},
    )
    summary = run_pipeline(cfg, synchronous=True, quiet=True)
    rejected = pq.read_table(tmp_path / "q.state.quarantine.parquet")
    assert rejected.column("_source_row").to_pylist() == [bad_kept]
    kept = int((flag != 4).sum())
    assert summary["rows_rejected"] == 1 and summary["rows_filtered"] == 3000 - kept
    m3 = read_map(tmp_path / "q.parquet", 3)
    assert m3.column("n").to_numpy().sum() == kept - 1 == summary["rows_assigned"]
    ok = (flag != 4) & (dec <= 90)
    cells = hp.ang2pix(8, table.column("ra").to_numpy()[ok], dec[ok], nest=True, lonlat=True)
    mag = table.column("mag").to_numpy()[ok].astype(np.float64)
    exp = pd.DataFrame({"c": cells, "m": mag}).groupby("c").m.mean()
    np.testing.assert_array_equal(m3.column("cell_ids").to_numpy(), exp.index.to_numpy())
    np.testing.assert_allclose(m3.column("mag_mean").to_numpy(), exp.to_numpy(), rtol=1e-12)
    # parquet inputs read from S3 (storage options reach the parquet reader) give the same map
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    for p in paths:
        fs.put(p, f"{BUCKET}/points/{p.rsplit('/', 1)[1]}")
    cfg = _points_pipeline(
        [f"s3://{BUCKET}/points/*.parquet"],
        str(tmp_path / "s3.parquet"),
        input={"storage_options": s3_options},
        assignment={"on_bad_rows": "quarantine"},
    )
    run_pipeline(cfg, synchronous=True, quiet=True)
    assert_same(
        read_map(tmp_path / "s3.parquet", 1),
        read_map(tmp_path / "q.parquet", 1),
        ["cell_ids", "n", "mag_mean"],
    )


def test_fills_key_of_a_pipeline(tmp_path):
    rng = np.random.default_rng(3)
    n = 3000
    df = pd.DataFrame(
        {"ra": rng.uniform(0, 50, n), "dec": rng.uniform(-10, 10, n), "mag": rng.normal(20, 1, n), "flag": 0}
    )
    df.loc[:99, "mag"] = 99.0  # a catalog's "no measurement"
    df.loc[100:149, "mag"] = 1e32
    df.to_parquet(tmp_path / "in.parquet")
    cfg = _points_pipeline([str(tmp_path / "in.parquet")], str(tmp_path / "m.parquet"))
    cfg["fills"] = {"values": {"mag": 99.0}, "sentinel_above": 1e30}
    summary = run_pipeline(cfg, synchronous=True, quiet=True)
    assert summary["fills_skipped"] == 150
    got = as_frame(read_map(tmp_path / "m.parquet", 3))
    good = df.iloc[150:]
    cells = hp.ang2pix(8, good.ra.to_numpy(), good.dec.to_numpy(), nest=True, lonlat=True)
    want = good.mag.groupby(cells).mean()
    np.testing.assert_allclose(got.loc[want.index, "mag_mean"], want.to_numpy(), rtol=1e-12)
    bad = copy.deepcopy(cfg)
    bad["fills"] = {"values": {"mag": "none"}, "drop_rows": 3, "sentinel_below": 1}
    with pytest.raises(ConfigError) as err:
        run_pipeline(bad, synchronous=True, quiet=True)
    text = str(err.value)
    assert "fills.values.mag" in text and "fills.drop_rows" in text and "fills.sentinel_below" in text

"""The failures that copies of one job caused (issue 16), each through the CLI as a user meets it:
a format the CLI refused, URLs not recognised as catalogs, credentials that never reached the
input listing, sidecars that could not go to a URL, and subcommands refusing ``--quiet``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import BUCKET, make_points, run_cli, survey_table

STATS = ["count", "mean", "min", "max"]


def _table(n: int, start_id: int = 0, seed: int = 0) -> pa.Table:
    ra, dec = make_points("clustered", n, seed=seed)
    return survey_table(ra, dec, start_id, seed)


def _truth(tables: list[pa.Table], order: int) -> pd.DataFrame:
    """Per-cell count/mean/min/max of ``mag`` computed with healpy-free numpy: cells from
    cdshealpix (an independent index), statistics from pandas."""
    import astropy.units as u
    from cdshealpix.nested import lonlat_to_healpix

    t = pa.concat_tables(tables)
    cells = lonlat_to_healpix(t["ra"].to_numpy() * u.deg, t["dec"].to_numpy() * u.deg, order).astype(np.int64)
    frame = pd.DataFrame({"cell": cells, "mag": t["mag"].to_numpy().astype(np.float64)})
    g = frame.groupby("cell")["mag"]
    return pd.DataFrame({"count": g.count(), "mean": g.mean(), "min": g.min(), "max": g.max()})


def _check_map(path, truth: pd.DataFrame) -> None:
    got = pq.read_table(path).to_pandas().set_index("cell_ids").sort_index()
    np.testing.assert_array_equal(got.index.to_numpy(), truth.index.to_numpy())
    np.testing.assert_array_equal(got["mag_count"].to_numpy(), truth["count"].to_numpy())
    for stat in ("mean", "min", "max"):
        np.testing.assert_allclose(got[f"mag_{stat}"].to_numpy(), truth[stat].to_numpy(), rtol=1e-6)


def _rows(path, storage_options=None) -> pd.DataFrame:
    import lsdb
    from upath import UPath

    if storage_options:
        path = UPath(path, **storage_options)
        path.fs.invalidate_cache()
    return lsdb.read_hats(path).compute().sort_values("id").reset_index()


# -- one input layer ---------------------------------------------------------------------------


@pytest.mark.slow
def test_cli_import_accepts_every_registered_format(tmp_path):
    from healforge.io.formats import format_names

    table = _table(3_000)
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    run_cli("import", src, "-o", tmp_path / "cat", "--format", "geoparquet", "--synchronous", "-q")
    got = _rows(tmp_path / "cat")
    np.testing.assert_array_equal(got["id"].to_numpy(), np.sort(table["id"].to_numpy()))
    # the CLI's --format choices are the registry's, so none can drift again
    help_text = run_cli("import", "--help").stdout + run_cli("append", "--help").stdout
    assert all(name in help_text for name in format_names())


def test_a_reader_registered_once_is_importable_and_aggregatable(tmp_path):
    """A new input format is one ``register_format`` call: import and aggregate read it."""
    import healforge
    from healforge.io import formats

    def iter_jsonl(path, columns, batch_rows, storage_options=None, **_):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        for start in range(0, len(rows), batch_rows):
            part = pa.Table.from_pylist(rows[start : start + batch_rows])
            yield part.select(columns) if columns else part

    table = _table(2_000).drop_columns(["name"])
    src = tmp_path / "points.jsonl"
    src.write_text("\n".join(json.dumps(r) for r in table.to_pylist()))
    formats.register_format("jsonl", iter_jsonl, (".jsonl",))
    try:
        assert formats.detect_format(str(src)) == "jsonl"
        healforge.import_catalog([src], tmp_path / "cat", synchronous=True, quiet=True)
        assert len(_rows(tmp_path / "cat")) == table.num_rows
        got = healforge.aggregate(src, ["mag"], STATS, order=3, lon="ra", lat="dec")
        truth = _truth([table], 3)
        np.testing.assert_array_equal(got["mag_count"].to_numpy(), truth["count"].to_numpy())
    finally:
        formats.unregister_format("jsonl")
    with pytest.raises(healforge.OptionError, match="unknown input format 'jsonl'"):
        formats.get_format("jsonl")


# -- credentials given only by --storage-options ---------------------------------------------


def _no_credentials_env() -> dict:
    """This process's environment without any AWS credentials, config or instance metadata."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _cli(*args, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "healforge", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, f"healforge {' '.join(map(str, args))}:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture
def s3_inputs(tmp_path, s3_options):
    """Two batches of input files on the S3 server; returns (options, prefix URL, tables)."""
    import s3fs

    fs = s3fs.S3FileSystem(**s3_options)
    prefix = f"{BUCKET}/{uuid.uuid4().hex[:8]}"
    tables = {"a": [_table(1_500, 0, 1), _table(1_500, 10_000, 2)], "b": [_table(800, 50_000, 3)]}
    for batch, parts in tables.items():
        for i, t in enumerate(parts):
            local = tmp_path / f"{batch}{i}.parquet"
            pq.write_table(t, local)
            fs.put_file(str(local), f"{prefix}/{batch}/part{i}.parquet")
    return s3_options, f"s3://{prefix}", tables


@pytest.mark.slow
def test_s3_inputs_with_credentials_only_in_storage_options(tmp_path, s3_inputs):
    options, prefix, tables = s3_inputs
    env, opts = _no_credentials_env(), json.dumps(options)
    # without the options, the listing itself needs credentials: a one-line error, no traceback
    proc = subprocess.run(
        [sys.executable, "-m", "healforge", "import", f"{prefix}/a/*.parquet", "-o", tmp_path / "x", "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    # import and append: S3 inputs, a local catalog
    cat = tmp_path / "cat"
    _cli(
        "import",
        f"{prefix}/a/*.parquet",
        "-o",
        cat,
        "--storage-options",
        opts,
        "--synchronous",
        "-q",
        env=env,
    )
    _cli("append", cat, f"{prefix}/b/", "--storage-options", opts, "--synchronous", "-q", env=env)
    every = tables["a"] + tables["b"]
    want = np.sort(pa.concat_tables(every)["id"].to_numpy())
    np.testing.assert_array_equal(_rows(cat)["id"].to_numpy(), want)
    # aggregate: S3 inputs, a local map equal to the brute-force statistics
    _cli(
        "aggregate", f"{prefix}/a/*.parquet", f"{prefix}/b/part0.parquet", "-o", tmp_path / "map.parquet",
        "--order", "4", "--lon", "ra", "--lat", "dec", "--columns", "mag", "--stats", *STATS,
        "--storage-options", opts, "--synchronous", "-q", env=env,
    )  # fmt: skip
    _check_map(tmp_path / "map.parquet", _truth(every, 4))
    # run: a pipeline whose inputs are on S3, credentials from the command line only
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        "inputs:\n"
        f"  - paths: ['{prefix}/a/*.parquet', '{prefix}/b/*.parquet']\n"
        "coordinates: {lon: ra, lat: dec}\n"
        "assignment: {order: 4}\n"
        "statistics:\n"
        "  mag_count: {function: count, column: mag}\n"
        "  mag_mean: {function: mean, column: mag}\n"
        "  mag_min: {function: min, column: mag}\n"
        "  mag_max: {function: max, column: mag}\n"
        f"outputs: {{parquet: {{path: {tmp_path / 'run.parquet'}, orders: [4]}}}}\n"
    )
    _cli("run", pipeline, "--storage-options", opts, "--synchronous", "-q", env=env)
    _check_map(tmp_path / "run.parquet", _truth(every, 4))


# -- the one opener: catalogs given as URLs ----------------------------------------------------


@pytest.mark.slow
def test_catalog_given_as_file_or_s3_url_is_read_as_a_catalog(tmp_path, s3_options):
    import s3fs

    table = _table(4_000, 0, 5)
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    cat = tmp_path / "cat"
    run_cli("import", src, "-o", cat, "--threshold", "1000", "--synchronous", "-q")
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/cat"
    s3fs.S3FileSystem(**s3_options).put(str(cat), url[len("s3://") :], recursive=True)
    opts = json.dumps(s3_options)
    truth = _truth([table], 4)
    for name, where, extra in (
        ("file", f"file://{cat}", []),
        ("s3", url, ["--storage-options", opts]),
    ):
        # aggregate reads the catalog partition by partition, position columns from its properties
        out = tmp_path / f"{name}.parquet"
        run_cli(
            "aggregate", where, "-o", out, "--order", "4", "--columns", "mag", "--stats", *STATS,
            *extra, "--synchronous", "-q",
        )  # fmt: skip
        _check_map(out, truth)
        # re-import takes it as a catalog (not as a directory of files), keeping its properties
        again = tmp_path / f"re_{name}"
        run_cli("import", where, "-o", again, "--threshold", "2000", *extra, "--synchronous", "-q")
        got = _rows(again)
        np.testing.assert_array_equal(got["id"].to_numpy(), np.sort(table["id"].to_numpy()))
        np.testing.assert_array_equal(got["_healpix_29"].to_numpy(), _rows(cat)["_healpix_29"].to_numpy())


def test_opener_tells_what_a_path_is(tmp_path):
    import healforge
    from healforge.catalog.opener import open_path

    pq.write_table(_table(500), tmp_path / "in.parquet")
    healforge.import_catalog(
        [tmp_path / "in.parquet"],
        tmp_path / "cat",
        margin_arcsec=60,
        collection=False,
        synchronous=True,
        quiet=True,
    )
    assert open_path(tmp_path / "cat").kind == "catalog"
    assert open_path(f"file://{tmp_path}/cat").kind == "catalog"
    assert open_path(tmp_path / "cat_margin").kind == "margin"
    assert open_path(tmp_path / "in.parquet").kind == "file"
    assert open_path(str(tmp_path / "*.parquet")).kind == "glob"
    assert open_path(tmp_path / "nothing").kind == "missing"
    (tmp_path / "plain").mkdir()
    assert open_path(tmp_path / "plain").kind == "directory"


# -- atomic writers through the storage layer --------------------------------------------------


@pytest.mark.slow
def test_sidecar_accumulate_and_merge_to_urls(tmp_path, s3_options):
    import healforge

    table = _table(2_000, 0, 7)
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    url = f"file://{tmp_path}/out/sc.parquet"
    run_cli("sidecar", src, "-o", url, "--order", "5", "--lon", "ra", "--lat", "dec", "--synchronous", "-q")
    sc = healforge.read_sidecar(tmp_path / "out" / "sc.parquet")
    assert sc.num_rows == table.num_rows
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "sc.parquet"]  # no temporaries left
    # the sidecar read back from the URL aggregates like the table it came from
    run_cli(
        "aggregate", src, "--sidecar", url, "-o", tmp_path / "m.parquet", "--columns", "mag",
        "--stats", *STATS, "--synchronous", "-q",
    )  # fmt: skip
    _check_map(tmp_path / "m.parquet", _truth([table], 5))
    # states to S3 and back: accumulate twice, merge, finalize
    opts = json.dumps(s3_options)
    base = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    halves = [table.slice(0, 1_000), table.slice(1_000)]
    for i, half in enumerate(halves):
        pq.write_table(half, tmp_path / f"h{i}.parquet")
        run_cli(
            "accumulate", tmp_path / f"h{i}.parquet", "--state", f"{base}/s{i}.parquet", "--order", "5",
            "--lon", "ra", "--lat", "dec", "--columns", "mag", "--storage-options", opts, "--synchronous", "-q",
        )  # fmt: skip
    run_cli("merge-states", f"{base}/s0.parquet", f"{base}/s1.parquet", "-o", f"{base}/all.parquet",
            "--storage-options", opts, "--quiet")  # fmt: skip
    run_cli("finalize", f"{base}/all.parquet", "-o", tmp_path / "f.parquet", "--stats", *STATS,
            "--storage-options", opts, "--quiet")  # fmt: skip
    _check_map(tmp_path / "f.parquet", _truth([table], 5))


# -- one set of global options -----------------------------------------------------------------


def test_every_subcommand_accepts_quiet():
    import argparse

    from healforge.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert len(sub.choices) >= 20
    refusing = [
        name for name, p in sub.choices.items() if not any("--quiet" in a.option_strings for a in p._actions)
    ]
    assert refusing == []


@pytest.mark.slow
def test_quiet_silences_merge_finalize_plot_and_export(tmp_path):
    table = _table(1_500, 0, 9)
    pq.write_table(table, tmp_path / "in.parquet")
    common = ["--order", "3", "--lon", "ra", "--lat", "dec", "--columns", "mag", "--synchronous", "-q"]
    run_cli("accumulate", tmp_path / "in.parquet", "--state", tmp_path / "s.parquet", *common)
    runs = [
        ("merge-states", tmp_path / "s.parquet", tmp_path / "s.parquet", "-o", tmp_path / "m.parquet"),
        ("finalize", tmp_path / "m.parquet", "-o", tmp_path / "map.parquet"),
        ("export", tmp_path / "map.parquet", "-o", tmp_path / "map.zarr"),
        ("plot", tmp_path / "map.parquet", "--var", "mag_mean", "--width", "200", "-o", tmp_path / "p.png"),
    ]
    for args in runs:
        proc = run_cli(*args, "--quiet")
        assert proc.stderr == "", (args[0], proc.stderr)
    assert (tmp_path / "p.png").stat().st_size > 0


# -- one statistic vocabulary, one pipeline rule set -------------------------------------------


def _span_truth(table: pa.Table, order: int) -> pd.Series:
    t = _truth([table], order)
    return t["max"] - t["min"]


def _pipeline(tmp_path, src, stats: dict, out) -> dict:
    return {
        "inputs": [{"paths": [str(src)]}],
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": 4},
        "statistics": stats,
        "outputs": {"parquet": {"path": str(out), "orders": [4]}},
    }


@pytest.mark.slow
def test_numpy_ptp_is_the_same_statistic_in_api_cli_and_yaml(tmp_path):
    import yaml

    import healforge

    table = _table(3_000, 0, 11)
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    want = _span_truth(table, 4).to_numpy()
    api = healforge.aggregate(src, ["mag"], ["numpy:ptp"], order=4, lon="ra", lat="dec")
    np.testing.assert_array_equal(api["mag_ptp"].to_numpy(), want)
    run_cli(
        "aggregate", src, "-o", tmp_path / "cli.parquet", "--order", "4", "--lon", "ra", "--lat", "dec",
        "--columns", "mag", "--stats", "numpy:ptp", "--synchronous", "-q",
    )  # fmt: skip
    np.testing.assert_array_equal(pq.read_table(tmp_path / "cli.parquet")["mag_ptp"].to_numpy(), want)
    (tmp_path / "p.yaml").write_text(
        yaml.safe_dump(
            _pipeline(
                tmp_path, src, {"span": {"function": "numpy:ptp", "column": "mag"}}, tmp_path / "y.parquet"
            )
        )
    )
    run_cli("run", tmp_path / "p.yaml", "--synchronous", "-q")
    np.testing.assert_array_equal(pq.read_table(tmp_path / "y.parquet")["span"].to_numpy(), want)
    # a numpy function that needs every value is refused by the one rule set, before any read
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(
            _pipeline(
                tmp_path, src, {"p": {"function": "numpy:prod", "column": "mag"}}, tmp_path / "b.parquet"
            )
        )
    )
    proc = run_cli("run", tmp_path / "bad.yaml", "--check", check=False)
    assert proc.returncode == 2 and "statistics.p.function" in proc.stderr and "prod" in proc.stderr


def test_a_statistic_added_once_works_exact_streaming_and_in_pipelines(tmp_path):
    """A new statistic is one ``register_statistic`` call: aggregate (exact), finalize (from a
    streaming state) and pipeline files all know it."""
    import healforge
    from healforge.aggregate.statistics import register_statistic, unregister_statistic

    table = _table(3_000, 0, 12)
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    t = _truth([table], 4)
    want = ((t["min"] + t["max"]) / 2).to_numpy()
    register_statistic(
        "midrange",
        lambda values, starts, counts: (values[starts] + values[starts + counts - 1]) / 2,
        lambda m: (m.min + m.max) / 2,
    )
    try:
        exact = healforge.aggregate(src, ["mag"], ["midrange"], order=4, lon="ra", lat="dec")
        np.testing.assert_allclose(exact["mag_midrange"].to_numpy(), want, rtol=1e-12)
        state = healforge.accumulate(src, ["mag"], order=4, lon="ra", lat="dec")
        streamed = healforge.finalize(state, ["midrange"])
        np.testing.assert_allclose(streamed["mag_midrange"].to_numpy(), want, rtol=1e-12)
        cfg = _pipeline(
            tmp_path, src, {"mid": {"function": "midrange", "column": "mag"}}, tmp_path / "r.parquet"
        )
        healforge.run_pipeline(cfg, synchronous=True, quiet=True)
        np.testing.assert_allclose(pq.read_table(tmp_path / "r.parquet")["mid"].to_numpy(), want, rtol=1e-12)
    finally:
        unregister_statistic("midrange")
    with pytest.raises(ValueError, match="midrange"):
        healforge.aggregate(src, ["mag"], ["midrange"], order=4, lon="ra", lat="dec")


@pytest.mark.slow
def test_the_run_docstring_example_runs(tmp_path):
    """The example in ``healforge.run``'s docstring, as written, passes ``healforge run``."""
    import textwrap

    import xarray as xr
    import xdggs  # noqa: F401

    import healforge.run
    from test_maps_config import make_atl06

    doc = healforge.run.__doc__
    example = textwrap.dedent(doc.split("Example::\n", 1)[1].split("\nModules:", 1)[0])
    (tmp_path / "granules").mkdir()
    for i in range(2):
        make_atl06(tmp_path / "granules" / f"ATL06_{i}.h5", n=400, seed=i)
    (tmp_path / "pipeline.yaml").write_text(example)
    proc = run_cli("run", tmp_path / "pipeline.yaml", "--synchronous", "-q")
    assert str(tmp_path / "out" / "atl06.zarr") in proc.stdout
    maps = pq.read_table(tmp_path / "out" / "atl06.parquet").to_pandas()
    assert len(maps) > 0 and (maps["h_span"].dropna() >= 0).all()
    both = maps[["h_q_p10", "h_q_p90"]].dropna()
    assert len(both) > 0 and (both["h_q_p10"] <= both["h_q_p90"]).all()
    ds = xdggs.decode(xr.open_zarr(str(tmp_path / "out" / "atl06.zarr"), group="order_08"))
    assert ds.dggs.grid_info.level == 8 and "h_span" in ds
    assert (tmp_path / "out" / "h.png").stat().st_size > 0

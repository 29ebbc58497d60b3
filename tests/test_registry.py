"""Input files and options name data, never code (issue 14, item 4): readers and functions
outside healforge's vocabulary are refused with exit 2, naming the key and file, and nothing
is imported."""

from __future__ import annotations

import os
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

import healforge
from conftest import run_cli
from healforge.errors import OptionError
from healforge.pixel import lonlat_to_pixel
from healforge.registry import UnknownName, check_reader, user_statistic

ORDER = 2


@pytest.fixture
def sandbox(tmp_path):
    """Points in ``in.parquet`` and a module ``evilmod`` on PYTHONPATH that leaves a marker file
    when imported (and one when its functions are called)."""
    rng = np.random.default_rng(4)
    n = 3_000
    table = pa.table(
        {
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "v": rng.normal(10, 3, n),
        }
    )
    pq.write_table(table, tmp_path / "in.parquet")
    mods = tmp_path / "mods"
    mods.mkdir()
    marker = tmp_path / "imported.marker"
    (mods / "evilmod.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        "def s(*args, **kwargs):\n"
        f"    open({str(marker)!r} + '.called', 'w').write('called')\n"
        "    return 0.0\n"
    )
    env = {"PYTHONPATH": f"{mods}{os.pathsep}{os.environ['PYTHONPATH']}"}
    return tmp_path, env, marker


def _pipeline(tmp_path, statistics=None, options=None) -> dict:
    entry = {"paths": [str(tmp_path / "in.parquet")], "columns": ["ra", "dec", "v"]}
    if options is not None:
        entry["options"] = options
    return {
        "inputs": [entry],
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": ORDER},
        "statistics": statistics or {"n": {"function": "count"}},
        "outputs": {"parquet": {"path": str(tmp_path / "out.parquet"), "orders": [ORDER]}},
    }


def _nothing_imported(tmp_path, marker):
    assert not marker.exists() and not marker.with_name(marker.name + ".called").exists()
    assert not (tmp_path / "out.parquet").exists()
    assert "evilmod" not in sys.modules


def _cli(sandbox, capsys, monkeypatch, *args) -> tuple[int, list[str]]:
    """``healforge ARGS`` in this process, ``evilmod`` importable: exit code and stderr lines."""
    from healforge.cli import main

    monkeypatch.syspath_prepend(str(sandbox[0] / "mods"))
    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize(
    "key,statistics,options",
    [
        ("statistics.s.function", {"s": {"function": "evilmod.s", "column": "v"}}, None),
        ("statistics.s.function", {"s": {"function": "evilmod:s", "column": "v"}}, None),
        ("statistics.s.function", {"s": {"function": "numpy.save", "column": "v"}}, None),
        ("inputs[0].options.reader", None, {"reader": "evilmod:s"}),
        ("inputs[0].options.reader", None, {"reader": "numpy:savez"}),
    ],
)
@pytest.mark.slow
def test_pipeline_file_naming_code_is_refused(sandbox, key, statistics, options, capsys, monkeypatch):
    tmp_path, env, marker = sandbox
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(_pipeline(tmp_path, statistics, options)))
    for extra in (["--check"], ["--synchronous", "-q"]):
        if extra == ["--check"]:  # a real process, evilmod on its PYTHONPATH
            proc = run_cli("run", path, *extra, check=False, env=env)
            code, err = proc.returncode, proc.stderr.strip().splitlines()
        else:
            code, err = _cli(sandbox, capsys, monkeypatch, "run", path, *extra)
        assert code == 2, err
        assert len(err) == 1 and f"{path}: {key}: " in err[0], err
        assert "never code to import" in err[0], err
        _nothing_imported(tmp_path, marker)


def test_cli_statistic_naming_code_is_refused(sandbox, capsys, monkeypatch):
    tmp_path, env, marker = sandbox
    out = tmp_path / "m.parquet"
    pos = ["--order", ORDER, "--lon", "ra", "--lat", "dec", "--synchronous", "-q"]
    for name in ("evilmod.s", "evilmod:s", "time.sleep", "save", "numpy.load"):
        args = (
            "aggregate",
            tmp_path / "in.parquet",
            "-o",
            out,
            *pos,
            "--columns",
            "v",
            "--stats",
            "count",
            name,
        )
        if name == "evilmod.s":
            proc = run_cli(*args, check=False, env=env)
            code, err = proc.returncode, proc.stderr.strip().splitlines()
        else:
            code, err = _cli(sandbox, capsys, monkeypatch, *args)
        assert code == 2, err
        assert len(err) == 1 and f"unknown statistic {name!r}: not in healforge's vocabulary" in err[0], err
        assert not out.exists()
        _nothing_imported(tmp_path, marker)


def test_zagg_file_naming_code_is_refused(sandbox):
    from test_zagg import SHIPPED

    tmp_path, env, marker = sandbox
    raw = yaml.safe_load(SHIPPED.read_text())
    raw["aggregation"]["variables"]["h_span"] = {"function": "evilmod.s", "source": "h_li"}
    path = tmp_path / "z.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_cli("run", path, "--inputs", "x.h5", "--store", tmp_path / "o.zarr", "--exact", "--check",
                   check=False, env=env)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert (
        f"{path}: aggregation.variables.h_span.function: unknown statistic 'evilmod.s': not in" in proc.stderr
    )
    _nothing_imported(tmp_path, marker)


def _expected_ptp(tmp_path) -> pd.Series:
    df = pq.read_table(tmp_path / "in.parquet").to_pandas()
    cells = lonlat_to_pixel(df.ra.to_numpy(), df.dec.to_numpy(), ORDER)
    return df.groupby(cells)["v"].agg(np.ptp).sort_index()


@pytest.mark.slow
def test_registered_numpy_reduction_works_in_yaml_cli_and_api(sandbox):
    from test_zagg import write_h5

    tmp_path, env, _ = sandbox
    want = _expected_ptp(tmp_path)
    # a streaming pipeline file computes numpy:ptp (the statistic ptp: max - min of the state);
    # a numpy function that needs every value is refused up front
    path = tmp_path / "p.yaml"
    stats = {"n": {"function": "count"}, "span": {"function": "numpy:ptp", "column": "v"}}
    path.write_text(yaml.safe_dump(_pipeline(tmp_path, stats)))
    assert run_cli("run", path, "--check", env=env).returncode == 0
    stats["span"]["function"] = "numpy:prod"
    path.write_text(yaml.safe_dump(_pipeline(tmp_path, stats)))
    proc = run_cli("run", path, "--check", check=False, env=env)
    assert proc.returncode == 2 and "numpy function 'numpy:prod' needs every raw value" in proc.stderr
    # a zagg file runs it exactly
    rng = np.random.default_rng(8)
    lat, lon, h = rng.uniform(-75, -74.95, 500), rng.uniform(10, 10.1, 500), rng.normal(50, 3, 500)
    write_h5(tmp_path / "g.h5", {"/b/lat": lat, "/b/lon": lon, "/b/h": h})
    raw = {
        "data_source": {
            "groups": ["b"],
            "coordinates": {"latitude": "/{group}/lat", "longitude": "/{group}/lon"},
            "variables": {"h": "/{group}/h"},
        },
        "aggregation": {"variables": {"rng": {"function": "numpy:ptp", "source": "h", "dtype": "float64"}}},
        "output": {"grid": {"type": "healpix", "parent_order": 7, "child_order": 11}, "pyramid": False},
    }
    zpath = tmp_path / "z.yaml"
    zpath.write_text(yaml.safe_dump(raw, sort_keys=False))
    store = tmp_path / "o.zarr"
    run_cli("run", zpath, "--inputs", tmp_path / "g.h5", "--store", store, "--exact", "--synchronous", "-q")
    import mortie

    from test_zagg import open_level

    ds, _ = open_level(store, 11)
    cells, _ = mortie.mort2healpix(mortie.geo2mort(lat, lon, order=11))
    for i, c in enumerate(ds["cell_ids"].values):
        assert ds["rng"].values[i] == np.ptp(h[cells == c])
    # API: a name from the registry and the user's own callable
    df = pq.read_table(tmp_path / "in.parquet").to_pandas()

    def spread(values):
        return float(np.max(values) - np.min(values))

    table = healforge.aggregate(df, ["v"], ["count", "numpy.ptp", spread], order=ORDER, lon="ra", lat="dec")
    res = table.to_pandas().set_index("cell_ids").sort_index()
    np.testing.assert_allclose(res.loc[want.index, "v_ptp"].to_numpy(), want.to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(res.loc[want.index, "v_spread"].to_numpy(), want.to_numpy(), rtol=1e-12)


def test_registry_unit():
    assert user_statistic("ptp")[0] == "callable" and user_statistic("numpy:ptp")[1] is np.ptp
    assert user_statistic("np.nanmedian")[1] is np.nanmedian and user_statistic("maximum")[0] == "ufunc"
    for bad in ("save", "numpy.save", "numpy:load", "os.system", "evilmod.s", "numpy.ptp.x", "np", ""):
        with pytest.raises(UnknownName):
            user_statistic(bad)
    assert issubclass(UnknownName, OptionError)
    with pytest.raises(UnknownName, match="reader 'numpy:savez'"):
        check_reader("numpy:savez")
    assert check_reader("healforge.zagg.read:iter_granule")

"""The extension points of docs/architecture.md, each exercised as a user of the package would:
a catalog command written on the writer spine and wired into the CLI in one module, and a storage
backend that is only an fsspec implementation. (A reader and a statistic registered in a test:
tests/test_one_of_each.py.)"""

from __future__ import annotations

import sys
import types

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, survey_table


def _rows(path) -> np.ndarray:
    import lsdb

    return np.sort(lsdb.read_hats(path).compute()["id"].to_numpy())


def _command_module() -> types.ModuleType:
    """``healforge append-table``: append the rows of one Parquet file read whole, as a batch
    named after it; a whole catalog command in one module, on the writer spine."""
    from healforge.catalog.change.append import stage_and_commit
    from healforge.catalog.change.writer import changing
    from healforge.catalog.derived.collection import resolve_catalog
    from healforge.commands import add_command, call_api
    from healforge.hats import layout
    from healforge.options import RunOptions, options_as_keywords

    @options_as_keywords(run=RunOptions)
    def append_table(catalog, table, label, *, run: RunOptions):
        root = layout.require_catalog(resolve_catalog(run.path(catalog)))
        with changing(root, "append-table", run) as work:
            rows = work / "rows.parquet"
            pq.write_table(table, rows)
            return stage_and_commit(root, work, [str(rows)], label, f"table:{label}", run=run)

    def _handler(args) -> int:
        """append the rows of one Parquet file as a batch"""
        table = pq.read_table(args.file)
        print(call_api(args, f"{module.__name__}:append_table", table=table, label=args.file.stem))
        return 0

    def register(sub) -> None:
        from pathlib import Path

        p = add_command(sub, _handler, "append-table", run={"tmp_dir": True})
        p.add_argument("catalog")
        p.add_argument("file", type=Path)

    module = types.ModuleType("healforge_test_append_table")
    module.append_table, module.register = append_table, register
    return module


def test_a_catalog_command_is_one_module(tmp_path, monkeypatch):
    from healforge import cli

    module = _command_module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    first = survey_table(*make_points("clustered", 3_000, seed=1))
    more = survey_table(*make_points("uniform", 500, seed=2), start_id=10_000)
    pq.write_table(first, tmp_path / "first.parquet")
    pq.write_table(more, tmp_path / "more.parquet")
    healforge.import_catalog(
        [tmp_path / "first.parquet"], tmp_path / "cat", threshold=800, synchronous=True, quiet=True
    )
    monkeypatch.setattr(cli, "COMMAND_MODULES", (*cli.COMMAND_MODULES, module.__name__))
    argv = ["append-table", str(tmp_path / "cat"), str(tmp_path / "more.parquet"), "--synchronous", "-q"]
    assert cli.main(argv) == 0
    want = np.sort(np.r_[first["id"].to_numpy(), more["id"].to_numpy()])
    np.testing.assert_array_equal(_rows(tmp_path / "cat"), want)
    assert healforge.validate_catalog(tmp_path / "cat").ok
    # the help of the new subcommand is its handler's docstring, like every built-in one
    assert "append the rows of one Parquet file" in cli.build_parser().format_help()


@pytest.fixture
def memory_backend():
    """An fsspec implementation registered under a new protocol, as a storage plugin would be."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class PluginFileSystem(MemoryFileSystem):
        protocol = "hfplugin"
        store: dict = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path):
            path = str(path)
            if path.startswith("hfplugin://"):
                path = path[len("hfplugin://") :]
            return MemoryFileSystem._strip_protocol(path)

    fsspec.register_implementation("hfplugin", PluginFileSystem, clobber=True)
    yield PluginFileSystem
    PluginFileSystem.store.clear()


def test_a_storage_backend_is_an_fsspec_implementation(tmp_path, memory_backend):
    table = survey_table(*make_points("clustered", 2_000, seed=3))
    pq.write_table(table, tmp_path / "in.parquet")
    fs = memory_backend()
    fs.put_file(str(tmp_path / "in.parquet"), "/inputs/in.parquet")
    # inputs, catalog, sidecar and map all on the new backend; nothing healforge-specific registered
    healforge.import_catalog(
        ["hfplugin://inputs/in.parquet"], "hfplugin://cat", threshold=700, synchronous=True, quiet=True
    )
    assert healforge.open_path("hfplugin://cat").kind == "catalog"
    assert fs.exists("/cat/hats.properties") and fs.exists("/cat/partition_info.csv")
    got = healforge.aggregate(
        "hfplugin://cat", ["mag"], ["count", "max"], order=3, output="hfplugin://map.parquet"
    )
    assert int(pa.compute.sum(got["mag_count"]).as_py()) == table.num_rows
    with fs.open("/map.parquet", "rb") as f:
        assert pq.read_table(f).equals(got)
    from healforge.hats.layout import list_data_files

    ids = np.sort(
        np.concatenate(
            [
                pq.read_table(fs.open(str(p).split("://", 1)[1], "rb"))["id"].to_numpy()
                for p in list_data_files("hfplugin://cat")
            ]
        )
    )
    np.testing.assert_array_equal(ids, np.sort(table["id"].to_numpy()))

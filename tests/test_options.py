"""One run-options object for every writer entry point, and the import's arguments object."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, survey_table
from healforge import ImportArguments, RunOptions
from healforge.catalog.derived.collection import resolve_catalog
from healforge.errors import OptionError
from healforge.hats import layout
from healforge.options import ChangeOptions

RUN = RunOptions(synchronous=True, quiet=True)


def _input(tmp_path, name, n, start_id, seed):
    ra, dec = make_points("clustered", n, seed=seed)
    path = tmp_path / "in" / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(survey_table(ra, dec, start_id, seed), path)
    return path


def test_run_options_merge_keywords_over_an_object():
    run = RunOptions.of(RUN, workers=3, tmp_dir="/tmp/x")
    assert (run.synchronous, run.quiet, run.workers, run.tmp_dir) == (True, True, 3, "/tmp/x")
    assert RunOptions.of(None, quiet=True) == RunOptions(quiet=True)
    with pytest.raises(TypeError, match="wrkers"):
        RunOptions.of(RUN, wrkers=2)


def test_import_arguments_are_checked_before_anything_is_written(tmp_path):
    out = tmp_path / "cat"
    with pytest.raises(OptionError, match="lowest order 5 is above highest order 3"):
        healforge.import_catalog([tmp_path / "none.parquet"], out, highest_order=3, lowest_order=5, run=RUN)
    with pytest.raises(OptionError, match="either a row threshold or max_bytes"):
        ImportArguments([], out, threshold=10, max_bytes="1MB")
    with pytest.raises(TypeError):
        healforge.import_catalog([tmp_path / "none.parquet"], out, no_such_option=1)
    assert not out.exists()
    args = ImportArguments("a.parquet", out, max_bytes="1MB", margin_arcsec=5, margins=[2], collection=True)
    assert (args.inputs, args.max_bytes, args.threshold, args.margins) == (
        ["a.parquet"],
        10**6,
        None,
        (2.0, 5.0),
    )
    with pytest.raises(ValueError, match="several margins need a collection"):
        ImportArguments("a.parquet", out, margin_arcsec=5, margins=[2])


def test_writer_entry_points_take_one_run_options_object(tmp_path):
    a = _input(tmp_path, "A", 4_000, 0, 1)
    b = _input(tmp_path, "B", 1_000, 10_000, 2)
    out = tmp_path / "cat"
    result = healforge.import_catalog([a], out, threshold=800, highest_order=6, margin_arcsec=30, run=RUN)
    assert result.rows == 4_000 and result.margin is not None
    # run-options keywords still work, and win over the object's fields
    appended = healforge.append(out, [b], "b", run=RunOptions(synchronous=True), quiet=True)
    assert appended.rows == 1_000
    deleted = healforge.delete(out, ids=[0, 1, 2], on="id", run=RUN)
    assert deleted.rows_removed == 3
    compacted = healforge.compact(out, run=RUN)
    assert compacted.rows_after == 4_997
    index = healforge.index_catalog(out, "id", run=RUN)
    assert index.rows == 4_997
    root = resolve_catalog(out)
    assert int(layout.read_properties(root)["hats_nrows"]) == 4_997
    margin_dir = out.with_name(out.name + "_margin")
    assert margin_dir.exists()
    rebuilt = healforge.margin(out, tmp_path / "m2", 30, run=RUN)
    assert rebuilt.rows > 0
    ids = np.concatenate(
        [pq.read_table(f, columns=["id"]).column("id").to_numpy() for f in layout.list_data_files(root)]
    )
    assert len(ids) == 4_997 and not {0, 1, 2} & set(ids.tolist())


def test_a_change_takes_its_shared_options_as_one_object_or_as_keywords(tmp_path):
    import inspect

    a = _input(tmp_path, "A", 2_000, 0, 1)
    b = _input(tmp_path, "B", 500, 10_000, 2)
    out = tmp_path / "cat"
    healforge.import_catalog([a], out, threshold=800, highest_order=6, run=RUN)
    shown = inspect.signature(healforge.append).parameters
    assert {"compression", "margin", "change", "run", "workers", "quiet"} <= set(shown)
    assert shown["compression"].default == "zstd:3"
    # the object, then a keyword over one of its fields: the keyword wins
    healforge.append(out, [b], "b", change=ChangeOptions(compression="zstd:3"), compression="snappy", run=RUN)
    root = resolve_catalog(out)
    new_file = next(f for f in layout.list_data_files(root) if f.name == "b.parquet")
    codecs = {pq.ParquetFile(new_file).metadata.row_group(0).column(i).compression for i in range(3)}
    assert codecs == {"SNAPPY"}
    with pytest.raises(TypeError, match="compresion"):
        healforge.compact(out, compresion=None, run=RUN)
    with pytest.raises(OptionError, match="expected a ChangeOptions, got RunOptions"):
        healforge.delete(out, ids=[0], on="id", change=RUN)
    assert int(layout.read_properties(root)["hats_nrows"]) == 2_500

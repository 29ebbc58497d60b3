"""Real SIGKILLs of the whole process group, mid-write and at random moments, then a rerun of the
same command: every writer finishes and every input row is there exactly once (issue 14)."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import run_cli
from healforge.hats import layout
from kill_scenarios import (
    CAT_ARGS,
    QUIET,
    SCENARIOS,
    build_templates,
    leftover_temporaries,
    prepare,
    trial,
)
from killer import catalog_ids, run_killed, stray_temporaries


def _content(path: Path) -> dict:
    return {str(f.relative_to(path)): pq.read_table(f).to_pydict() for f in layout.list_data_files(path)}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Inputs and an uninterrupted import of them (the reference), with its duration."""
    base = tmp_path_factory.mktemp("kill")
    templates = build_templates(base, rows=8_000, files=4, writers=["import"])
    ref = base / "reference"
    t0 = time.monotonic()
    run_cli("import", base / "in", "-o", ref, *CAT_ARGS, *QUIET)
    seconds = time.monotonic() - t0
    return templates, ref, _content(ref), (ref / "partition_info.csv").read_text(), seconds


def _import_args(templates: dict, out: Path) -> list:
    return ["import", templates["base"] / "in", "-o", out, *CAT_ARGS, *QUIET]


def _assert_same_catalog(out: Path, imported) -> None:
    templates, _, content, partitions, _ = imported
    assert (out / "partition_info.csv").read_text() == partitions
    assert _content(out) == content
    np.testing.assert_array_equal(catalog_ids(out), np.sort(templates["ids"]))
    assert not stray_temporaries(out)
    assert not (out / ".healforge-import").exists() and not (out / ".healforge-tmp").exists()


@pytest.mark.slow
def test_import_killed_mid_write_reruns_to_the_same_catalog(imported, tmp_path):
    templates = imported[0]
    out = tmp_path / "cat"
    args = _import_args(templates, out)
    # SIGKILL the process group the moment a data file's temporary exists (a write in progress)
    killed = run_killed(args, watch=out, patterns=".healforge-tmp/*")
    assert killed.killed and killed.returncode == -9, killed.stderr
    assert "/.healforge-tmp/" in killed.trigger
    # no temporary where readers and the finish stage list files
    assert not stray_temporaries(out)
    # the leftover reported in issue 14 (a half-written hidden temporary inside dataset/, as
    # earlier versions wrote them) is cleaned too
    pixel = layout.pixel_dir(out, 3, 0)
    pixel.mkdir(parents=True, exist_ok=True)
    (pixel / f".Npix=1.parquet.{uuid.uuid4().hex}.tmp").write_bytes(b"PAR1\x00half")
    again = run_cli(*args)
    assert "resumed and finished" in again.stdout
    _assert_same_catalog(out, imported)
    # a plain rerun of the finished import: already complete, exit 0, nothing rewritten
    stamp = {str(f): f.stat().st_mtime_ns for f in layout.list_data_files(out)}
    third = run_cli(*args, check=False)
    assert third.returncode == 0 and third.stdout.startswith("already complete: 8000 rows"), third.stderr
    assert {str(f): f.stat().st_mtime_ns for f in layout.list_data_files(out)} == stamp
    resumed = run_cli(*args, "--resume", check=False)  # a scripted retry loop with --resume too
    assert resumed.returncode == 0 and "already complete" in resumed.stdout, resumed.stderr


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
def test_import_killed_at_a_random_moment_reruns_to_the_same_catalog(imported, tmp_path, seed):
    templates, *_, seconds = imported
    rng = np.random.default_rng(seed)
    delay = float(rng.uniform(0.4, 1.0)) * seconds
    out = tmp_path / "cat"
    args = _import_args(templates, out)
    killed = run_killed(args, delay=delay)
    again = run_cli(*args)
    assert killed.killed or "already complete" in again.stdout
    _assert_same_catalog(out, imported)


@pytest.mark.slow
def test_failed_import_reruns_with_corrected_arguments(imported, tmp_path):
    templates = imported[0]
    out = tmp_path / "cat"
    bad = run_cli(*_import_args(templates, out), "--ra", "RA", check=False)
    assert bad.returncode == 2 and "'RA'" in bad.stderr
    assert not layout.list_data_files(out)
    # corrected arguments, no --overwrite: the failed run wrote no data, so it starts again
    good = run_cli(*_import_args(templates, out))
    assert good.stdout.startswith("imported 8000 rows")
    _assert_same_catalog(out, imported)


@pytest.mark.slow
def test_import_with_data_written_keeps_refusing_other_arguments(imported, tmp_path):
    templates = imported[0]
    out = tmp_path / "cat"
    args = _import_args(templates, out)
    killed = run_killed(args, watch=out, patterns="dataset/Norder=*/Dir=*/Npix=*.parquet")
    assert killed.killed
    other = run_cli(*args, "--threshold", "900", check=False)
    assert other.returncode == 2 and "threshold" in other.stderr and "--overwrite" in other.stderr
    run_cli(*args)
    _assert_same_catalog(out, imported)


# Every other writer in a quick form: killed when its first staged file appears (mid-write), or
# after a delay for those that stage nothing we can see, then rerun and checked against the inputs.
WRITERS = [name for name in SCENARIOS if name != "import"]


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    return build_templates(tmp_path_factory.mktemp("writers"), rows=4_000, files=4)


# writers whose temporaries a rerun removes (the change writers' staging is not checked here)
CLEANED = {
    "import",
    "sidecar",
    "aggregate",
    "export",
    "accumulate",
    "merge-states",
    "finalize",
    "run",
    "zagg",
    "margin",
    "index",
    "nest",
}


@pytest.mark.slow
@pytest.mark.parametrize("writer", WRITERS)
def test_writer_killed_mid_write_reruns_to_the_inputs(templates, tmp_path, writer):
    result = trial(SCENARIOS[writer], templates, tmp_path / writer, midwrite=True, delay=6.0)
    assert result.rerun_rc == 0, result.rerun_out
    check = result.check
    assert not check.unreadable, check.detail
    assert check.lost == 0 and check.duplicated == 0, check
    if writer in CLEANED:
        assert check.leftovers == 0, check


@pytest.mark.slow
@pytest.mark.parametrize("writer", ["append", "accumulate"])
def test_writer_killed_at_a_random_moment_reruns_to_the_inputs(templates, tmp_path, writer):
    rng = np.random.default_rng(int.from_bytes(writer.encode(), "little") % 2**32)
    delay = float(rng.uniform(1.0, 4.0))
    result = trial(SCENARIOS[writer], templates, tmp_path / writer, midwrite=False, delay=delay)
    assert result.rerun_rc == 0, result.rerun_out
    assert not result.check.unreadable and result.check.lost == 0 and result.check.duplicated == 0, (
        result.check
    )


@pytest.mark.parametrize("writer", ["margin", "index", "nest"])
@pytest.mark.slow
def test_rerun_of_a_finished_writer_is_already_complete(templates, tmp_path, writer):
    """A rerun after the command finished (as after a kill right at its end): "already complete",
    exit 0, nothing rewritten; the output still holds every row."""
    scenario = SCENARIOS[writer]
    where = tmp_path / writer
    args = prepare(scenario, templates, where)
    run_cli(*args)
    stamp = {str(f): f.stat().st_mtime_ns for f in where.rglob("*.parquet")}
    again = run_cli(*args, check=False)
    assert again.returncode == 0 and again.stdout.startswith("already complete: "), again.stderr
    assert {str(f): f.stat().st_mtime_ns for f in where.rglob("*.parquet")} == stamp
    check = scenario.check(where, templates)
    assert not check.unreadable and check.lost == 0 and check.duplicated == 0, check
    assert not leftover_temporaries(where, templates["base"])
    assert not [p.name for p in where.iterdir() if ".building-" in p.name]


@pytest.mark.slow
def test_accumulate_rerun_after_the_save_counts_nothing_twice(tmp_path):
    """``accumulate --state S`` updates S in place: a rerun after a kill right after the save (here:
    simply the same command again) finds every input in S and changes nothing."""
    base = build_templates(tmp_path / "t", rows=2_000, files=2, writers=["accumulate"])
    state = base["base"] / "state_a.parquet"
    acc = ["--order", "5", "--lon", "ra", "--lat", "dec", "--columns", "mag", *QUIET]
    first = os.stat(state).st_mtime_ns
    again = run_cli("accumulate", base["parts"][0], "--state", state, *acc)
    assert again.stdout.startswith("already complete:") and os.stat(state).st_mtime_ns == first
    run_cli("accumulate", *base["parts"], "--state", state, *acc)  # only the new file is added
    from healforge.aggregate.state import State

    assert int(State.load(state).moments["mag"]["n"].sum()) == 2_000


@pytest.mark.slow
def test_import_to_s3_killed_mid_reduce_reruns_to_the_same_rows(imported, tmp_path, s3_options):
    """On object storage: killed once the first pixel was uploaded, rerun, read back by lsdb."""
    import json

    import lsdb
    from upath import UPath

    from conftest import BUCKET

    templates = imported[0]
    url = f"s3://{BUCKET}/kill-{uuid.uuid4().hex[:8]}/cat"
    scratch = tmp_path / "scratch"
    opts = json.dumps(s3_options)
    args = _import_args(templates, url)[:-2] + ["--storage-options", opts, "--tmp-dir", scratch, *QUIET]
    killed = run_killed(args, watch=scratch, patterns="*/reduce/*.done")
    assert killed.killed, killed.stderr
    again = run_cli(*args)
    assert "resumed and finished: 8000 rows" in again.stdout
    path = UPath(url, **s3_options)  # as a string, hats would read s3:// anonymously
    path.fs.invalidate_cache()
    df = lsdb.open_catalog(path, columns=["id"]).compute()
    np.testing.assert_array_equal(np.sort(df["id"].to_numpy()), np.sort(templates["ids"]))
    third = run_cli(*args)
    assert third.stdout.startswith("already complete: 8000 rows")
    assert not any(scratch.iterdir())

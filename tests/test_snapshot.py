"""Snapshot isolation: readers during changes, kills around the commit, retired versions,
copied and moved catalogs. Judged by lsdb (in a separate reader process) and brute force."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import BUCKET, make_points, run_cli, survey_table
from healforge.catalog.derived.collection import open_collection, resolve_catalog
from healforge.hats import layout

FAST = {"synchronous": True, "quiet": True}
CONE = (200.0, -20.0, 3600.0)  # ra, dec (degrees), radius (arcsec): inside the clustered blob

READER = r"""
import json, os, sys, time
import lsdb
from upath import UPath

path, out, stop, opts, cone = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
with open(out, "w") as f:
    while not os.path.exists(stop):
        t0 = time.time()
        try:
            p = UPath(path, **opts) if opts else path
            if opts:
                p.fs.invalidate_cache()
            cat = lsdb.open_catalog(p)
            rec = {"n": len(cat.compute()), "cone": len(cat.cone_search(*cone).compute())}
        except Exception as exc:
            rec = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        rec["t"] = [t0, time.time()]
        f.write(json.dumps(rec) + "\n")
        f.flush()
"""


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _batch(tmp_path, name, n, start_id, seed, kind="clustered") -> Path:
    ra, dec = make_points(kind, n, seed=seed)
    return _write(tmp_path / "in" / f"{name}.parquet", survey_table(ra, dec, start_id, seed))


def _cone_count(tables: list[pa.Table]) -> int:
    """Rows of ``tables`` within :data:`CONE`, by brute force (haversine)."""
    t = pa.concat_tables(tables)
    ra, dec = np.radians(t["ra"].to_numpy()), np.radians(t["dec"].to_numpy())
    ra0, dec0 = np.radians(CONE[0]), np.radians(CONE[1])
    h = np.sin((dec - dec0) / 2) ** 2 + np.cos(dec) * np.cos(dec0) * np.sin((ra - ra0) / 2) ** 2
    sep = 2 * np.degrees(np.arcsin(np.sqrt(h))) * 3600
    return int((sep <= CONE[2]).sum())


def _file_digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _readers_during_changes(tmp_path, url: str, options: dict | None, appends: int, min_reads: int):
    """A reader process loops over lsdb reads of ``url`` while this process commits ``appends``
    appends, an increment and a compaction. Returns the reader's records and the committed states."""
    so = options
    a = _batch(tmp_path, "A", 3_000, 0, 1)
    healforge.import_catalog([a], url, threshold=800, highest_order=6, storage_options=so, **FAST)
    tables = [pq.read_table(a)]
    states = [(3_000, _cone_count(tables))]
    out, stop = tmp_path / "reads.jsonl", tmp_path / "stop"
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, url, str(out), str(stop), json.dumps(so or {}), json.dumps(CONE)],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path)),
    )
    try:

        def reads() -> list[dict]:
            return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []

        deadline = time.time() + 120
        while len(reads()) < 2 and time.time() < deadline and reader.poll() is None:
            time.sleep(0.2)
        for i in range(appends):
            b = _batch(tmp_path, f"B{i}", 400, 100_000 * (i + 1), 10 + i)
            healforge.append(url, [b], f"night{i}", storage_options=so, **FAST)
            tables.append(pq.read_table(b))
            states.append((states[-1][0] + 400, _cone_count(tables)))
        inc = _batch(tmp_path, "inc", 300, 900_000, 99)
        healforge.increment(url, [inc], batch="inc1", storage_options=so, **FAST)
        tables.append(pq.read_table(inc))
        states.append((states[-1][0] + 300, _cone_count(tables)))
        healforge.compact(url, "id", storage_options=so, **FAST)  # no duplicates: same rows
        deadline = time.time() + 600
        while len(reads()) < min_reads and time.time() < deadline and reader.poll() is None:
            time.sleep(0.5)
    finally:
        stop.touch()
        reader.wait(timeout=120)
    return reads(), states


def _check_reads(records: list[dict], states: list[tuple[int, int]], min_reads: int) -> dict:
    failed = [r for r in records if "error" in r]
    allowed = set(states)
    uncommitted = [r for r in records if "error" not in r and (r["n"], r["cone"]) not in allowed]
    seen = {(r["n"], r["cone"]) for r in records if "error" not in r}
    figures = {
        "reads": len(records),
        "failed": len(failed),
        "uncommitted": len(uncommitted),
        "states_seen": len(seen),
    }
    print("concurrent reads:", json.dumps(figures))
    assert not failed, failed[:3]
    assert not uncommitted, (uncommitted[:3], states)
    assert len(records) >= min_reads
    # the reads spanned the changes: the first and the last committed states were both read
    assert states[0] in seen and states[-1] in seen, (seen, states)
    return figures


@pytest.mark.slow
def test_reader_sees_only_committed_states_local(tmp_path):
    records, states = _readers_during_changes(tmp_path, str(tmp_path / "cat"), None, 2, 10)
    _check_reads(records, states, 10)


@pytest.mark.slow
def test_reader_sees_only_committed_states_s3(tmp_path, s3_options):
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/cat"
    records, states = _readers_during_changes(tmp_path, url, s3_options, 2, 10)
    _check_reads(records, states, 10)


@pytest.mark.long
def test_reader_sees_only_committed_states_local_long(tmp_path):
    records, states = _readers_during_changes(tmp_path, str(tmp_path / "cat"), None, 8, 100)
    _check_reads(records, states, 100)


@pytest.mark.long
def test_reader_sees_only_committed_states_s3_long(tmp_path, s3_options):
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/cat"
    records, states = _readers_during_changes(tmp_path, url, s3_options, 8, 100)
    _check_reads(records, states, 100)


def _lsdb_rows(path) -> int:
    import lsdb

    return len(lsdb.open_catalog(str(path)).compute())


@pytest.fixture
def cat(tmp_path):
    a = _batch(tmp_path, "A", 3_000, 0, 1)
    healforge.import_catalog([a], tmp_path / "cat", threshold=800, highest_order=6, margin_arcsec=60, **FAST)
    return tmp_path / "cat", a


@pytest.mark.slow
def test_kill_right_after_commit_leaves_new_catalog_readable_without_a_writer(cat, tmp_path):
    root, a = cat
    b = _batch(tmp_path, "B", 500, 100_000, 2)
    args = ["append", root, b, "--batch", "nightB", "--synchronous", "-q"]
    proc = run_cli(*args, env={"HEALFORGE_KILL_AFTER": "Commit:1"}, check=False)
    assert proc.returncode == -9, proc.stderr
    # no writer ran since: lsdb reads the committed catalog, with its rebuilt margin
    assert _lsdb_rows(root) == 3_500
    import lsdb

    opened = lsdb.open_catalog(str(root))
    assert opened.margin is not None and len(opened.margin.compute()) > 0
    assert healforge.validate_catalog(root, id_column="id").ok
    # the next writer finds the batch applied
    assert "already appended" in run_cli(*args).stdout


@pytest.mark.parametrize("kill_at", ["Apply:1", "Apply:3", "Apply:4"])
@pytest.mark.slow
def test_kill_while_building_a_version_leaves_old_catalog_and_next_writer_cleans(cat, tmp_path, kill_at):
    root, a = cat
    b = _batch(tmp_path, "B", 500, 100_000, 2)
    healforge.append(root, [b], "nightB", **FAST)
    before = _file_digests(root)
    c = _batch(tmp_path, "C", 400, 200_000, 3)
    args = ["append", root, c, "--batch", "nightC", "--synchronous", "-q"]
    proc = run_cli(*args, env={"HEALFORGE_KILL_AFTER": kill_at}, check=False)
    assert proc.returncode == -9, proc.stderr
    assert (root / "cat.v3").is_dir()  # half-built, referenced by nothing
    assert _lsdb_rows(root) == 3_500
    assert {k: v for k, v in _file_digests(root).items() if k in before} == before
    run_cli(*args)
    assert _lsdb_rows(root) == 3_900
    coll = open_collection(root)
    assert coll.primary.name == "cat.v3" and coll.margins[coll.default_margin].name == "cat_margin.v3"
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".tmp") or ".building-" in p.name]
    assert not leftovers and not (root / ".healforge-txn").exists()


def test_old_versions_retired_after_grace_keeping_the_previous(cat, tmp_path, monkeypatch):
    root, a = cat
    tables = [pq.read_table(a)]
    for i in range(2):
        b = _batch(tmp_path, f"B{i}", 200, 100_000 * (i + 1), 10 + i)
        healforge.append(root, [b], f"n{i}", **FAST)
        tables.append(pq.read_table(b))
    # default grace (10 minutes): every version and the stand-alone root's files stay
    assert {"cat.v2", "cat.v3", "dataset", "partition_info.csv"} <= {p.name for p in root.iterdir()}
    assert not (root / "hats.properties").exists() and not (root / "properties").exists()
    monkeypatch.setenv("HEALFORGE_SNAPSHOT_GRACE", "0")
    b = _batch(tmp_path, "B9", 200, 900_000, 19)
    healforge.append(root, [b], "n9", **FAST)
    tables.append(pq.read_table(b))
    names = {p.name for p in root.iterdir()}
    # current (v4) and previous (v3) stay; v2 and the root's original files are gone
    assert {"cat.v4", "cat.v3", "cat_margin.v4", "cat_margin.v3"} <= names
    assert not names & {"cat.v2", "cat_margin.v2", "dataset", "partition_info.csv", ".healforge"}
    assert _lsdb_rows(root) == sum(t.num_rows for t in tables)
    assert healforge.validate_catalog(root, id_column="id").ok


@pytest.mark.slow
def test_stand_alone_catalog_converts_and_every_command_follows(cat, tmp_path):
    import lsdb

    root, a = cat
    b = _batch(tmp_path, "B", 500, 100_000, 2)
    assert (root / "hats.properties").exists()
    healforge.append(root, [b], "nightB", **FAST)
    assert not (root / "hats.properties").exists() and (root / "collection.properties").exists()
    assert resolve_catalog(root) == root / "cat.v2"
    want = pa.concat_tables([pq.read_table(a), pq.read_table(b)])
    assert "3,500" in run_cli("info", root).stdout
    assert "valid" in run_cli("validate", root, "--id", "id").stdout
    healforge.compact(root, "id", **FAST)
    healforge.delete(root, ids=pa.array([0, 1, 2]), on="id", **FAST)
    assert _lsdb_rows(root) == want.num_rows - 3
    run_cli("index", root, "--column", "id", "--synchronous", "-q")
    got = lsdb.open_catalog(str(root)).id_search(values={"id": 5}).compute()
    assert got["ra"].tolist() == want.filter(pa.compute.equal(want["id"], 5))["ra"].to_pylist()
    assert healforge.validate_catalog(root, id_column="id").ok
    assert layout.read_properties(resolve_catalog(root))["hats_nrows"] == str(want.num_rows - 3)


@pytest.mark.slow
def test_copied_catalog_never_touches_the_original(cat, tmp_path):
    import lsdb

    root, a = cat
    healforge.append(root, [_batch(tmp_path, "B", 300, 100_000, 2)], "nightB", **FAST)
    shutil.copytree(root, tmp_path / "copy", symlinks=True)
    original = _file_digests(root)
    outside = _file_digests(tmp_path / "cat_margin")
    c = _batch(tmp_path, "C", 400, 200_000, 3)
    run_cli("append", tmp_path / "copy", c, "--batch", "nightC", "--synchronous", "-q")
    run_cli("compact", tmp_path / "copy", "--dedupe-on", "id", "--synchronous", "-q")
    assert _file_digests(root) == original and _file_digests(tmp_path / "cat_margin") == outside
    assert _lsdb_rows(root) == 3_300 and _lsdb_rows(tmp_path / "copy") == 3_700
    for path, rows in ((root, 3_300), (tmp_path / "copy", 3_700)):
        opened = lsdb.open_catalog(str(path))
        coll = open_collection(path)
        assert coll.margins[coll.default_margin].parent == path  # each its own margin
        fresh = tmp_path / f"fresh_{path.name}"
        healforge.margin(path, fresh, 60, **FAST)
        assert len(opened.margin.compute()) == _lsdb_margin_rows(fresh) > 0
        assert healforge.validate_catalog(path, id_column="id").ok
        assert len(opened.compute()) == rows


def _lsdb_margin_rows(path) -> int:
    return sum(pq.read_metadata(f).num_rows for f in layout.list_data_files(path))


@pytest.mark.slow
def test_copied_stand_alone_catalog_with_outside_margin(cat, tmp_path):
    root, a = cat
    shutil.copytree(root, tmp_path / "copy")
    outside = _file_digests(tmp_path / "cat_margin")
    original = _file_digests(root)
    proc = run_cli("append", tmp_path / "copy", _batch(tmp_path, "C", 400, 200_000, 3), "--synchronous", "-q")
    # the user is told that the margin beside the catalog is no longer kept current
    assert f"{tmp_path / 'cat_margin'} is no longer kept current" in proc.stderr
    assert str(tmp_path / "copy" / "cat_margin.v2") in proc.stderr
    # the copy's recorded margin (../cat_margin, relative) became the copy's own member
    assert _file_digests(tmp_path / "cat_margin") == outside and _file_digests(root) == original
    coll = open_collection(tmp_path / "copy")
    assert coll.margins[coll.default_margin] == tmp_path / "copy" / "cat_margin.v2"
    healforge.margin(tmp_path / "copy", tmp_path / "fresh", 60, **FAST)
    assert _lsdb_margin_rows(coll.margins[coll.default_margin]) == _lsdb_margin_rows(tmp_path / "fresh")


@pytest.mark.slow
def test_moved_catalog_keeps_working(cat, tmp_path):
    root, a = cat
    healforge.append(root, [_batch(tmp_path, "B", 300, 100_000, 2)], "nightB", **FAST)
    (tmp_path / "elsewhere").mkdir()
    moved = tmp_path / "elsewhere" / "moved"
    os.replace(root, moved)
    run_cli("append", moved, _batch(tmp_path, "C", 400, 200_000, 3), "--synchronous", "-q")
    assert not root.exists()
    coll = open_collection(moved)
    assert coll.primary.parent == moved and coll.margins[coll.default_margin].parent == moved
    healforge.margin(moved, tmp_path / "fresh", 60, **FAST)
    assert _lsdb_margin_rows(coll.margins[coll.default_margin]) == _lsdb_margin_rows(tmp_path / "fresh")
    assert _lsdb_rows(moved) == 3_700
    assert healforge.validate_catalog(moved, id_column="id").ok


@pytest.mark.slow
def test_margin_rebuild_in_a_collection_is_a_new_version(cat, tmp_path):
    import lsdb

    root, a = cat
    healforge.append(root, [_batch(tmp_path, "B", 300, 100_000, 2)], "nightB", **FAST)
    old = open_collection(root).margins["cat_margin.v2"]
    before = _file_digests(old)
    proc = run_cli(
        "margin", root, "-o", root / "cat_margin", "--radius", "60", "--synchronous", "-q", check=False
    )
    assert proc.returncode == 2 and "--overwrite" in proc.stderr
    run_cli("margin", root, "-o", root / "cat_margin", "--radius", "60", "--overwrite", "--synchronous", "-q")
    coll = open_collection(root)
    assert list(coll.margins) == ["cat_margin.v3"] and coll.default_margin == "cat_margin.v3"
    assert _file_digests(old) == before  # the committed member was not written over
    opened = lsdb.open_catalog(str(root))
    assert len(opened.margin.compute()) == _lsdb_margin_rows(old) > 0
    assert healforge.validate_catalog(root, id_column="id").ok


@pytest.mark.slow
def test_kill_right_after_commit_on_s3_leaves_new_catalog_readable(tmp_path, s3_options):
    from upath import UPath

    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/cat"
    a, b = _batch(tmp_path, "A", 1_000, 0, 1), _batch(tmp_path, "B", 300, 100_000, 2)
    healforge.import_catalog([a], url, threshold=600, highest_order=5, storage_options=s3_options, **FAST)
    args = ["append", url, b, "--batch", "nightB", "--storage-options", json.dumps(s3_options)]
    proc = run_cli(*args, "--synchronous", "-q", env={"HEALFORGE_KILL_AFTER": "Commit:1"}, check=False)
    assert proc.returncode == -9, proc.stderr
    import lsdb

    path = UPath(url, **s3_options)
    path.fs.invalidate_cache()
    assert len(lsdb.open_catalog(path).compute()) == 1_300  # no writer ran since the kill
    assert healforge.validate_catalog(url, id_column="id", storage_options=s3_options).ok
    assert "already appended" in run_cli(*args, "--synchronous", "-q").stdout

"""Hostile names refused before anything is written (issue 14, item 3)."""

from __future__ import annotations

import hashlib
import os

import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.errors import OptionError
from healforge.names import check_name, name_problem


def tree_digest(folder) -> dict[str, str]:
    """``{relative path: sha256}`` of every file (and empty dir) under ``folder``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        rel_dir = os.path.relpath(dirpath, folder)
        if not dirnames and not filenames:
            out[rel_dir + "/"] = ""
        for f in filenames:
            with open(os.path.join(dirpath, f), "rb") as fh:
                out[os.path.join(rel_dir, f)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def hostile_names(tmp_path) -> dict[str, str]:
    return {
        "absolute": str(tmp_path / "outside" / "evil"),
        "dotdot-x": "../x",
        "dotdot": "..",
        "dot": ".",
        "hidden": ".hidden",
        "underscore": "_meta",
        "slash": "a/b",
        "backslash": "a\\b",
        "long": "x" * 300,
        "control": "night\x01",
        "newline": "a\nb",
        "empty": "",
    }


@pytest.fixture
def small(tmp_path):
    ra, dec = make_points("clustered", 2_000, seed=3)
    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.parquet"
    pq.write_table(survey_table(ra, dec, 0, 3), a)
    ra, dec = make_points("uniform", 500, seed=4)
    b = tmp_path / "in" / "b.parquet"
    pq.write_table(survey_table(ra, dec, 10_000, 4), b)
    healforge.import_catalog(
        [a], tmp_path / "cat", threshold=500, highest_order=7, synchronous=True, quiet=True
    )
    (tmp_path / "outside").mkdir()
    return tmp_path, b


def test_name_rule_unit():
    for good in ("nightB", "2026-12-04T00:00Z".replace(":", ""), "b.1+x@y", "Ünïcode"):
        assert name_problem(good) is None, good
    for bad in ("", ".", "..", ".x", "_x", "a/b", "a\\b", "a b", "x" * 201, "a\tb", "a\x00b", "a:b"):
        assert name_problem(bad), bad
        with pytest.raises(OptionError, match="must be 1 to 200"):
            check_name(bad, "batch label")


def test_append_refuses_hostile_batch_labels(small):
    tmp_path, b = small
    before = tree_digest(tmp_path)
    for kind, label in hostile_names(tmp_path).items():
        proc = run_cli("append", tmp_path / "cat", b, "--batch", label, "--synchronous", "-q", check=False)
        assert proc.returncode == 2, (kind, proc.stdout, proc.stderr)
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "batch label" in err[0] and "must be 1 to 200" in err[0], (kind, err)
        assert tree_digest(tmp_path) == before, kind
    assert sorted(os.listdir(tmp_path)) == ["cat", "in", "outside"]
    assert os.listdir(tmp_path / "outside") == []
    # a proper label still works, and the catalog is whole
    run_cli("append", tmp_path / "cat", b, "--batch", "night-1", "--synchronous", "-q")
    assert healforge.validate_catalog(tmp_path / "cat").ok
    import lsdb

    assert len(lsdb.open_catalog(str(tmp_path / "cat")).compute()) == 2_500


def test_member_and_catalog_names_refused(small):
    tmp_path, b = small
    cat = tmp_path / "cat"
    before = tree_digest(tmp_path)
    cases = [
        ("import", b, "-o", tmp_path / "coll", "--collection", "--name", "../escape", "--synchronous", "-q"),
        ("import", b, "-o", tmp_path / ".hiddencoll", "--collection", "--synchronous", "-q"),
        ("import", b, "-o", tmp_path / "c2", "--name", "a/b", "--synchronous", "-q"),
        ("margin", cat, "-o", tmp_path / "m", "--radius", "5", "--name", ".m", "--synchronous", "-q"),
        ("index", cat, "--column", "id", "--name", "x" * 300, "--synchronous", "-q"),
        ("nest", cat, cat, "-o", tmp_path / "n", "--on", "id", "--as", "../src", "--synchronous", "-q"),
    ]
    for args in cases:
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, (args, proc.stderr)
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "must be 1 to 200" in err[0], (args, err)
        assert tree_digest(tmp_path) == before, args


def test_collection_member_names_refused(tmp_path):
    ra, dec = make_points("uniform", 600, seed=5)
    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.parquet"
    table = survey_table(ra, dec, 0, 5)
    pq.write_table(table.append_column("we ird", table["id"]), a)
    coll = tmp_path / "coll"
    proc = run_cli(
        "import", a, "-o", coll, "--collection", "--index", "we ird", "--synchronous", "-q", check=False
    )
    assert proc.returncode == 2 and "index column name 'we ird'" in proc.stderr, proc.stderr
    assert not coll.exists()
    healforge.import_catalog([a], coll, collection=True, synchronous=True, quiet=True)
    before = tree_digest(tmp_path)
    for args in (
        ("index", coll, "--column", "we ird", "--synchronous", "-q"),
        ("margin", coll, "--radius", "5", "-o", coll / ".m", "--synchronous", "-q"),
        ("index", coll, "--column", "id", "-o", coll / "_idx", "--synchronous", "-q"),
    ):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2 and "must be 1 to 200" in proc.stderr, (args, proc.stderr)
        assert tree_digest(tmp_path) == before, args


def test_increment_refuses_hostile_batch_labels(small):
    tmp_path, b = small
    nested = tmp_path / "nested"
    healforge.nest(
        tmp_path / "cat", tmp_path / "cat", nested, on="id", as_name="self", synchronous=True, quiet=True
    )
    before = tree_digest(tmp_path)
    for label in ("../x", ".h", str(tmp_path / "outside" / "n"), "a\\b"):
        proc = run_cli(
            "increment",
            nested,
            "--objects",
            b,
            "--on",
            "id",
            "--batch",
            label,
            "--synchronous",
            "-q",
            check=False,
        )
        assert proc.returncode == 2 and "batch label" in proc.stderr, proc.stderr
        assert tree_digest(tmp_path) == before, label
    with pytest.raises(OptionError, match=r"batch label '\.\./x' starts with"):
        healforge.increment(nested, [b], on="id", batch="../x")
    assert tree_digest(tmp_path) == before

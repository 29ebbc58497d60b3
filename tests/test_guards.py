"""Guards of issue 14: hostile names refused, compaction accounts for every row."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.catalog.derived.collection import resolve_catalog
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


def cli(capsys, *args) -> tuple[int, list[str]]:
    """``healforge ARGS`` run in this process (the CLI's parser and error handling, without a
    process start per call): the exit code and the lines written to stderr."""
    from healforge.cli import main

    capsys.readouterr()
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def test_append_refuses_hostile_batch_labels(small, capsys):
    tmp_path, b = small
    before = tree_digest(tmp_path)
    for kind, label in hostile_names(tmp_path).items():
        if kind == "absolute":  # one through a real process, the rest in this one
            proc = run_cli("append", tmp_path / "cat", b, "--batch", label, "-q", check=False)
            code, err = proc.returncode, proc.stderr.strip().splitlines()
        else:
            code, err = cli(capsys, "append", tmp_path / "cat", b, "--batch", label, "--synchronous", "-q")
        assert code == 2, (kind, err)
        assert len(err) == 1 and "batch label" in err[0] and "must be 1 to 200" in err[0], (kind, err)
        assert tree_digest(tmp_path) == before, kind
    assert sorted(os.listdir(tmp_path)) == ["cat", "in", "outside"]
    assert os.listdir(tmp_path / "outside") == []
    # a proper label still works, and the catalog is whole
    healforge.append(tmp_path / "cat", [b], "night-1", synchronous=True, quiet=True)
    assert healforge.validate_catalog(tmp_path / "cat").ok
    import lsdb

    assert len(lsdb.open_catalog(str(tmp_path / "cat")).compute()) == 2_500


def test_member_and_catalog_names_refused(small, capsys):
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
        code, err = cli(capsys, *args)
        assert code == 2, (args, err)
        assert len(err) == 1 and "must be 1 to 200" in err[0], (args, err)
        assert tree_digest(tmp_path) == before, args


def test_collection_member_names_refused(tmp_path, capsys):
    ra, dec = make_points("uniform", 600, seed=5)
    (tmp_path / "in").mkdir()
    a = tmp_path / "in" / "a.parquet"
    table = survey_table(ra, dec, 0, 5)
    pq.write_table(table.append_column("we ird", table["id"]), a)
    coll = tmp_path / "coll"
    code, err = cli(
        capsys, "import", a, "-o", coll, "--collection", "--index", "we ird", "--synchronous", "-q"
    )
    assert code == 2 and "index column name 'we ird'" in err[0], err
    assert not coll.exists()
    healforge.import_catalog([a], coll, collection=True, synchronous=True, quiet=True)
    before = tree_digest(tmp_path)
    for args in (
        ("index", coll, "--column", "we ird", "--synchronous", "-q"),
        ("margin", coll, "--radius", "5", "-o", coll / ".m", "--synchronous", "-q"),
        ("index", coll, "--column", "id", "-o", coll / "_idx", "--synchronous", "-q"),
    ):
        code, err = cli(capsys, *args)
        assert code == 2 and len(err) == 1 and "must be 1 to 200" in err[0], (args, err)
        assert tree_digest(tmp_path) == before, args


def test_increment_refuses_hostile_batch_labels(small, capsys):
    tmp_path, b = small
    nested = tmp_path / "nested"
    healforge.nest(
        tmp_path / "cat", tmp_path / "cat", nested, on="id", as_name="self", synchronous=True, quiet=True
    )
    before = tree_digest(tmp_path)
    for label in ("../x", ".h", str(tmp_path / "outside" / "n"), "a\\b"):
        code, err = cli(capsys, "increment", nested, "--objects", b, "--on", "id", "--batch", label, "-q")
        assert code == 2 and len(err) == 1 and "batch label" in err[0], err
        assert tree_digest(tmp_path) == before, label
    with pytest.raises(OptionError, match=r"batch label '\.\./x' starts with"):
        healforge.increment(nested, [b], on="id", batch="../x")
    assert tree_digest(tmp_path) == before


def _ids(path) -> np.ndarray:
    import lsdb

    return np.sort(lsdb.open_catalog(str(path)).compute()["id"].to_numpy(dtype=np.int64))


def _a_pixel_dir(root):
    """A directory pixel of the catalog's current version (a change makes it a collection)."""
    primary = resolve_catalog(root)
    return next(p for p in sorted((primary / "dataset").glob("Norder=*/Dir=*/Npix=*")) if p.is_dir())


@pytest.mark.slow
def test_compact_accounts_for_every_row(small):
    tmp_path, b = small
    cat = tmp_path / "cat"
    a_ids = pq.read_table(tmp_path / "in" / "a.parquet")["id"].to_numpy()
    b_ids = pq.read_table(b)["id"].to_numpy()
    healforge.append(cat, [b], "b1", synchronous=True, quiet=True)
    healforge.append(cat, [b], "b2", synchronous=True, quiet=True)  # the same rows again: duplicates
    want = np.sort(np.r_[a_ids, b_ids, b_ids])
    assert np.array_equal(_ids(cat), want)
    # a plain compact never removes a row
    out = run_cli("compact", cat, "--synchronous", "-q").stdout
    assert f"rows in {len(want)}, rows out {len(want)} (0 duplicates removed" in out, out
    assert np.array_equal(_ids(cat), want)
    # --dedupe-on removes exactly the duplicated ids
    out = run_cli("compact", cat, "--dedupe-on", "id", "--synchronous", "-q").stdout
    assert f"rows in {len(want)}, rows out {len(want) - len(b_ids)} ({len(b_ids)} duplicates removed" in out
    assert np.array_equal(_ids(cat), np.sort(np.r_[a_ids, b_ids]))
    assert healforge.validate_catalog(cat, id_column="id").ok


@pytest.mark.parametrize(
    "stray", [".sneaky.parquet", "_sneaky.parquet", "notes.txt", "sub/deeper.parquet", ".dir/x.parquet"]
)
def test_files_readers_do_not_see_stop_compact_and_append(small, stray, capsys):
    tmp_path, b = small
    cat = tmp_path / "cat"
    healforge.append(cat, [b], "b1", synchronous=True, quiet=True)
    pixel = _a_pixel_dir(cat)
    target = pixel / stray
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(next(pixel.glob("*.parquet")).read_bytes())
    before = tree_digest(cat)
    for args in (
        ("compact", cat),
        ("compact", cat, "--dedupe-on", "id"),
        ("append", cat, b, "--batch", "b2"),
    ):
        code, err = cli(capsys, *args, "--synchronous", "-q")
        assert code == 2, (args, err)
        assert len(err) == 1 and str(target) in err[0], (args, err)
        assert {k: v for k, v in tree_digest(cat).items() if not k.startswith(".healforge")} == {
            k: v for k, v in before.items() if not k.startswith(".healforge")
        }


def test_compact_stops_when_files_and_hats_nrows_disagree(small):
    tmp_path, _ = small
    cat = tmp_path / "cat"
    props = cat / "hats.properties"
    text = props.read_text()
    props.write_text(text.replace("hats_nrows=2000", "hats_nrows=2100"))
    proc = run_cli("compact", cat, "--synchronous", "-q", check=False)
    assert proc.returncode == 2 and "hold 2000 rows but hats_nrows is 2100" in proc.stderr, proc.stderr

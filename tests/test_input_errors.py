"""Bad input named precisely (issue 14, item 7): CSV lines and rows, non-numeric coordinates,
duplicate ``--id`` values (``--on-duplicate-ids error|report``)."""

from __future__ import annotations

import lsdb
import numpy as np
import pandas as pd
import pytest

import healforge
from conftest import run_cli
from healforge.io import readers


def write_csv(path, n=1000, edit=None):
    """A CSV ``id,ra,dec,mag`` of ``n`` rows; ``edit(lines)`` changes the text lines (header
    included: line k of the file is ``lines[k - 1]``, data row r is ``lines[r + 1]``)."""
    rng = np.random.default_rng(n)
    lines = ["id,ra,dec,mag"] + [
        f"{i},{rng.uniform(0, 360):.6f},{rng.uniform(-80, 80):.6f},{rng.normal(20, 1):.3f}" for i in range(n)
    ]
    if edit:
        edit(lines)
    path.write_text("\n".join(lines) + "\n")
    return path


def import_cli(src, out, *extra):
    return run_cli("import", src, "-o", out, "--synchronous", "--quiet", *extra, check=False, timeout=120)


def one_line_error(proc) -> str:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_csv_parse_error_names_the_line_and_row(tmp_path):
    def extra_field(lines):
        lines[501] += ",extra"  # line 502 of the file: data row 500

    src = write_csv(tmp_path / "bad.csv", edit=extra_field)
    msg = one_line_error(import_cli(src, tmp_path / "cat"))
    assert str(src) in msg and "line 502" in msg and "row 500" in msg and "extra" in msg
    assert "row 0" not in msg


def test_non_numeric_coordinate_names_row_and_value(tmp_path):
    src = write_csv(tmp_path / "nonnum.csv", edit=lambda lines: lines.__setitem__(701, "700,abc,12.0,20.0"))
    msg = one_line_error(import_cli(src, tmp_path / "cat"))
    assert str(src) in msg and "column 'ra'" in msg and "row 700" in msg and "'abc'" in msg
    # in the dec column too
    src = write_csv(tmp_path / "dec.csv", edit=lambda lines: lines.__setitem__(42, "41,10.0,n/a?,20.0"))
    msg = one_line_error(import_cli(src, tmp_path / "cat2"))
    assert "column 'dec'" in msg and "row 41" in msg and "'n/a?'" in msg


def test_csv_value_beyond_the_first_block_names_row_and_value(tmp_path, monkeypatch):
    """pyarrow infers types from the first block: a bad value later is a conversion error, which
    the reader turns into the row and the value (checked with 4 kB blocks instead of 64 MB)."""
    monkeypatch.setattr(readers, "CSV_BLOCK_BYTES", 4096)
    src = write_csv(tmp_path / "late.csv", n=3000, edit=lambda lines: lines.__setitem__(2501, "2500,1e,5,x"))
    with pytest.raises(healforge.BadInputError) as err:
        for _ in readers.iter_batches(str(src), ["ra", "dec"]):
            pass
    e = err.value
    assert (e.column, e.row, e.value) == ("ra", 2500, "1e")
    assert "line 2502" in str(e) and str(src) in str(e)


@pytest.mark.slow
def test_duplicate_ids_are_reported_by_default(tmp_path):
    def repeat(lines):
        for row, value in [(10, 3), (20, 3), (30, 7), (40, 3), (50, 7)]:
            lines[row + 1] = f"{value}" + lines[row + 1][lines[row + 1].index(",") :]

    src = write_csv(tmp_path / "dup.csv", edit=repeat)
    proc = import_cli(src, tmp_path / "cat", "--id", "id")
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stdout.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1
    # ids 3 (rows 3, 10, 20, 40) and 7 (rows 7, 30, 50): 2 values, 5 extra rows
    assert "'id'" in warning[0] and "2 value(s)" in warning[0] and "5 extra row(s)" in warning[0]
    assert "3 (4 rows)" in warning[0] and "7 (3 rows)" in warning[0]
    assert len(lsdb.open_catalog(tmp_path / "cat").compute()) == 1000  # nothing dropped

    res = healforge.import_catalog([str(src)], tmp_path / "api", id_column="id", synchronous=True, quiet=True)
    dup = res.duplicate_ids
    assert (dup.values, dup.extra_rows, dup.examples) == (2, 5, [(3, 4), (7, 3)])
    assert res.warnings == [str(dup)]
    # unique ids: no warning
    clean = import_cli(write_csv(tmp_path / "ok.csv"), tmp_path / "ok", "--id", "id")
    assert clean.returncode == 0 and "warning" not in clean.stdout


@pytest.mark.parametrize("bucket_rows", [5_000_000, 100])  # one bucket of ids, and 10
def test_duplicate_ids_found_in_hashed_buckets_on_the_workers(tmp_path, monkeypatch, bucket_rows):
    from healforge.catalog.change import dedupe

    monkeypatch.setattr(dedupe, "BUCKET_ROWS", bucket_rows)
    many = [(r, r % 7) for r in range(100, 120)] + [(10, 3), (20, 3), (30, 7)]

    def repeat(lines):
        for row, value in many:
            lines[row + 1] = f"{value}" + lines[row + 1][lines[row + 1].index(",") :]

    src = write_csv(tmp_path / "dup.csv", edit=repeat)
    res = healforge.import_catalog([str(src)], tmp_path / "c", id_column="id", synchronous=True, quiet=True)
    ids = pd.read_csv(src)["id"]
    counts = ids.value_counts()
    repeated = counts[counts > 1]
    want = sorted(((int(v), int(n)) for v, n in repeated.items()), key=lambda e: (-e[1], e[0]))[:5]
    dup = res.duplicate_ids
    assert (dup.values, dup.extra_rows) == (len(repeated), int((repeated - 1).sum()))
    assert dup.examples == want


@pytest.mark.slow
def test_duplicate_ids_error_writes_nothing(tmp_path):
    many = [(r, r % 7) for r in range(100, 120)]  # 20 rows onto ids 0-6: more than 5 examples

    def repeat(lines):
        for row, value in many:
            lines[row + 1] = f"{value}" + lines[row + 1][lines[row + 1].index(",") :]

    src = write_csv(tmp_path / "dup.csv", edit=repeat)
    out = tmp_path / "cat"
    msg = one_line_error(import_cli(src, out, "--id", "id", "--on-duplicate-ids", "error"))
    assert "7 value(s)" in msg and "20 extra row(s)" in msg and msg.count(" rows)") == 5
    assert not out.exists() or not any(out.iterdir())
    # corrected input: the rerun needs no --overwrite
    proc = import_cli(write_csv(tmp_path / "ok.csv"), out, "--id", "id", "--on-duplicate-ids", "error")
    assert proc.returncode == 0, proc.stderr
    assert len(lsdb.open_catalog(out).compute()) == 1000
    bad = run_cli("import", src, "-o", tmp_path / "x", "--on-duplicate-ids", "maybe", check=False)
    assert bad.returncode == 2

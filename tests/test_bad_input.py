"""Bad input: clear errors naming file, column, row and value, or an explicit quarantine."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.catalog.build.importer import rejected_path_for


def _file_with(tmp_path, name, col, row, value, n=1000):
    ra, dec = make_points("uniform", n, seed=row)
    t = survey_table(ra, dec)
    arr = t[col].to_numpy().copy()
    arr[row] = value
    t = t.set_column(t.schema.get_field_index(col), col, pa.array(arr))
    path = tmp_path / name
    pq.write_table(t, path)
    return path


@pytest.mark.parametrize(
    ("col", "row", "value", "shown"),
    [
        ("ra", 17, np.nan, "nan"),
        ("dec", 3, 95.0, "95.0"),
        ("ra", 999, 400.0, "400.0"),
        ("dec", 0, -np.inf, "-inf"),
    ],
)
def test_bad_coordinate_is_named(tmp_path, col, row, value, shown):
    path = _file_with(tmp_path, "bad.parquet", col, row, value)
    with pytest.raises(healforge.BadInputError) as err:
        healforge.import_catalog([path], tmp_path / "cat", synchronous=True, quiet=True)
    msg = str(err.value)
    assert str(path) in msg and f"column '{col}'" in msg and f"row {row}" in msg and shown in msg


def test_null_coordinate_in_csv(tmp_path):
    path = tmp_path / "nulls.csv"
    path.write_text("id,ra,dec\n1,10.0,5.0\n2,11.0,\n3,12.0,7.0\n")
    proc = run_cli("import", path, "-o", tmp_path / "cat", "--synchronous", "-q", check=False)
    assert proc.returncode == 2
    assert str(path) in proc.stderr and "column 'dec'" in proc.stderr and "row 1" in proc.stderr
    assert "null" in proc.stderr


def test_missing_column_lists_available(tmp_path):
    ra, dec = make_points("uniform", 50)
    pq.write_table(survey_table(ra, dec), tmp_path / "a.parquet")
    with pytest.raises(
        healforge.BadInputError, match=r"'RA_J2000' not found; available columns: id, ra, dec"
    ):
        healforge.import_catalog([tmp_path / "a.parquet"], tmp_path / "cat", ra="RA_J2000", synchronous=True)
    with pytest.raises(healforge.BadInputError, match=r"'objid' not found"):
        healforge.import_catalog(
            [tmp_path / "a.parquet"], tmp_path / "cat2", id_column="objid", synchronous=True
        )


def test_empty_and_unreadable_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(healforge.BadInputError, match=r"empty.*empty\.csv"):
        healforge.import_catalog([empty], tmp_path / "c1", synchronous=True, quiet=True)
    header_only = tmp_path / "header.csv"
    header_only.write_text("id,ra,dec\n")
    with pytest.raises(healforge.BadInputError, match=r"no rows.*header\.csv"):
        healforge.import_catalog([header_only], tmp_path / "c2", synchronous=True, quiet=True)
    ra, dec = make_points("uniform", 10)
    pq.write_table(survey_table(ra, dec).slice(0, 0), tmp_path / "zero.parquet")
    with pytest.raises(healforge.BadInputError, match=r"no rows.*zero\.parquet"):
        healforge.import_catalog([tmp_path / "zero.parquet"], tmp_path / "c3", synchronous=True, quiet=True)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"this is not parquet at all" * 10)
    proc = run_cli("import", garbage, "-o", tmp_path / "c4", "--synchronous", "-q", check=False)
    assert proc.returncode == 2 and "garbage.parquet" in proc.stderr and "parquet" in proc.stderr
    assert "Traceback" not in proc.stderr
    with pytest.raises(healforge.BadInputError, match="not found"):
        healforge.import_catalog([tmp_path / "nope.parquet"], tmp_path / "c5", synchronous=True, quiet=True)


def test_quarantine_counts_every_row(tmp_path):
    files, n_bad, total = [], 0, 0
    for i, (col, rows, value) in enumerate([("ra", [5, 6], np.nan), ("dec", [0], 95.0), ("ra", [], 0.0)]):
        ra, dec = make_points("uniform", 2_000, seed=i)
        t = survey_table(ra, dec, start_id=i * 2_000)
        arr = t[col].to_numpy().copy()
        arr[rows] = value
        t = t.set_column(t.schema.get_field_index(col), col, pa.array(arr))
        pq.write_table(t, tmp_path / f"f{i}.parquet")
        files.append(tmp_path / f"f{i}.parquet")
        n_bad += len(rows)
        total += t.num_rows
    out = tmp_path / "cat"
    proc = run_cli(
        "import",
        *files,
        "-o",
        out,
        "--threshold",
        "1000",
        "--highest-order",
        "5",
        "--on-bad-rows",
        "quarantine",
        "--synchronous",
        "-q",
    )
    assert f"{n_bad} rejected rows" in proc.stdout
    rejected = pq.read_table(rejected_path_for(out))
    assert rejected.num_rows == n_bad
    assert sorted(rejected["_source_row"].to_pylist()) == [0, 5, 6]
    assert set(rejected["_source_file"].to_pylist()) == {str(files[0]), str(files[1])}
    assert healforge.validate_catalog(out, id_column="id").ok
    assert healforge.catalog_info(out).rows + n_bad == total

"""Index catalogs: layout hats validates, lsdb id_search, sorting across files, duplicates, upkeep."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.errors import BadInputError
from healforge.hats import layout


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture
def cat(tmp_path):
    ra, dec = make_points("clustered", 4000, 1)
    t = survey_table(ra, dec)
    # shuffled ids, so that id order has nothing to do with position, and one duplicated id
    ids = np.random.default_rng(3).permutation(4000).astype(np.int64) * 3
    ids[17] = ids[3000]
    t = t.set_column(0, "id", pa.array(ids))
    a = _write(tmp_path / "in" / "a.parquet", t)
    healforge.import_catalog(
        [a], tmp_path / "cat", threshold=500, highest_order=7, synchronous=True, quiet=True
    )
    return tmp_path, t


def _index_table(path) -> pa.Table:
    files = sorted(
        (path / "dataset" / "index").glob("part.*.parquet"), key=lambda f: int(f.name.split(".")[1])
    )
    return pa.concat_tables([pq.read_table(f) for f in files])


def test_index_layout_sorting_and_duplicates(cat):
    tmp_path, t = cat
    res = healforge.index_catalog(
        tmp_path / "cat", "id", include_columns=["mag"], rows_per_file=700, synchronous=True, quiet=True
    )
    out = tmp_path / "cat_id_index"
    assert res.path == str(out) and res.rows == 4000 and res.files >= 5
    assert is_valid_catalog(str(out), strict=True)
    props = layout.read_properties(out)
    assert props["dataproduct_type"] == "index" and props["hats_index_column"] == "id"
    assert props["hats_primary_table_url"] == "cat" and props["hats_index_extra_column"] == "mag"
    index = _index_table(out)
    assert index.schema.names == ["id", "mag", "_healpix_29", "Norder", "Npix"]
    assert index.schema.field("Norder").type == pa.uint8() and index.schema.field("Npix").type == pa.uint64()
    ids = index["id"].to_numpy()
    assert np.all(np.diff(ids) >= 0)  # sorted across and within files
    assert sorted(ids.tolist()) == sorted(t["id"].to_pylist())
    # every index row points at the partition holding that row
    for f in layout.list_data_files(tmp_path / "cat"):
        order, pixel = layout.pixel_of_path(f)
        want = sorted(pq.read_table(f, columns=["id"])["id"].to_pylist())
        mask = (index["Norder"].to_numpy() == order) & (index["Npix"].to_numpy() == pixel)
        assert sorted(ids[mask].tolist()) == want
    dup = int(t["id"][17].as_py())
    assert res.duplicates == 1 and res.duplicate_rows == 2
    assert res.duplicate_examples[0]["value"] == dup and res.duplicate_examples[0]["count"] == 2
    assert healforge.validate_catalog(out).ok


def test_id_search_through_lsdb(cat):
    import lsdb

    tmp_path, t = cat
    res = healforge.index_catalog(tmp_path / "cat", "name", rows_per_file=1000, synchronous=True, quiet=True)
    c = lsdb.open_catalog(str(tmp_path / "cat"))
    names = ["obj0000005", "obj0002500", "obj0003999"]
    got = c.id_search(values={"name": names}, index_catalogs={"name": res.path}).compute()
    assert sorted(got["name"]) == names
    assert len(c.id_search(values={"name": "nope"}, index_catalogs={"name": res.path}).compute()) == 0


@pytest.mark.slow
def test_cli_reports_duplicates(cat):
    tmp_path, t = cat
    proc = run_cli("index", tmp_path / "cat", "--column", "id", "-o", tmp_path / "ix", "--synchronous", "-q")
    dup = int(t["id"][17].as_py())
    assert "1 'id' value(s) appear in more than one row" in proc.stdout and f"{dup} x2" in proc.stdout
    info = run_cli("info", tmp_path / "ix").stdout
    assert "(index)" in info and "4,000" in info


def test_bad_columns(cat):
    tmp_path, _ = cat
    with pytest.raises(BadInputError, match="available columns"):
        healforge.index_catalog(tmp_path / "cat", "nope", synchronous=True, quiet=True)
    t = survey_table(*make_points("uniform", 300, 2))
    t = t.set_column(0, "id", pa.array([None] + list(range(1, 300)), pa.int64()))
    a = _write(tmp_path / "in" / "nulls.parquet", t)
    healforge.import_catalog(
        [a], tmp_path / "nulls", threshold=500, highest_order=5, synchronous=True, quiet=True
    )
    with pytest.raises(BadInputError, match="null id") as err:
        healforge.index_catalog(tmp_path / "nulls", "id", synchronous=True, quiet=True)
    assert "Npix=" in str(err.value) and "column 'id', row " in str(err.value)


def test_standalone_index_kept_current_and_validated(cat):
    tmp_path, t = cat
    healforge.index_catalog(tmp_path / "cat", "id", synchronous=True, quiet=True)
    b = survey_table(*make_points("uniform", 600, 4), start_id=1_000_000, seed=4)
    healforge.append(
        tmp_path / "cat", [_write(tmp_path / "in" / "b.parquet", b)], "b", synchronous=True, quiet=True
    )
    # the append made the catalog a collection whose index is the index's next version; the
    # recorded index is left as it was
    assert len(_index_table(tmp_path / "cat_id_index")) == 4000
    out = healforge.open_collection(tmp_path / "cat").indexes["id"]
    assert out == tmp_path / "cat" / "cat_id_index.v2"
    index = _index_table(out)
    assert len(index) == 4600 and 1_000_599 in index["id"].to_pylist()
    assert healforge.validate_catalog(out).ok
    # a wrong pointer is caught
    f = next((out / "dataset" / "index").glob("part.*.parquet"))
    bad = pq.read_table(f)
    npix = bad["Npix"].to_numpy().copy()
    npix[0] += 1
    layout.atomic_write_parquet(
        bad.set_column(bad.schema.get_field_index("Npix"), "Npix", pa.array(npix)), f, sort_columns=["id"]
    )
    layout.write_metadata_unordered(out)
    report = healforge.validate_catalog(out)
    assert not report.ok and "pixel" in str(report)

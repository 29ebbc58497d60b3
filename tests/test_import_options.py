"""Import options: --max-bytes, row groups, column selection, types, ECSV, re-import."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

import healforge
from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.catalog.build.column_types import parse_size, row_bytes
from healforge.errors import BadInputError, OptionError
from healforge.hats import layout
from healforge.pixel.alignment import ThresholdError

QUIET = {"synchronous": True, "quiet": True}


def strict_valid(path) -> bool:
    return is_valid_catalog(str(path), strict=True)


def rows_by_id(path) -> pa.Table:
    """All rows of a catalog's data files, sorted by id."""
    table = pa.concat_tables([pq.read_table(f) for f in layout.list_data_files(path)])
    return table.sort_by("id")


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    folder = tmp_path_factory.mktemp("survey")
    ra, dec = make_points("clustered", 20_000, seed=3)
    table = survey_table(ra, dec)
    return table, write_parquet_files(folder / "in", table, 2)


def test_parse_size():
    assert parse_size("500MB") == 500 * 10**6
    assert parse_size("1GiB") == 2**30
    assert parse_size("2.5kB") == 2500
    assert parse_size(12345) == parse_size("12345") == 12345
    for bad in ("ten", "5 parsecs", "0", "-3MB"):
        with pytest.raises(OptionError):
            parse_size(bad)


@pytest.mark.slow
def test_max_bytes(tmp_path, survey, hats_import_catalogs):
    import lsdb

    table, files = survey
    # every row is 44 bytes in memory: id, ra, dec 8 each, mag 4, flag 2 and a 10-character name
    # (10 + 4 offset); as read from parquet, validity bits of 4 columns too (hats' estimator)
    assert np.all(row_bytes(table) == 44)
    per_row = 44 + 4 * 0.125
    assert np.all(row_bytes(pq.read_table(files[0])) == per_row)
    limit = 100_000
    res = healforge.import_catalog(files, tmp_path / "cat", max_bytes="100kB", highest_order=8, **QUIET)
    assert res.rows == table.num_rows
    for f in layout.list_data_files(tmp_path / "cat"):
        assert f.stat().st_size <= 1.1 * limit
        assert pq.read_metadata(f).num_rows * per_row <= limit
    props = layout.read_properties(tmp_path / "cat")
    assert props["hats_max_bytes"] == str(limit) and "hats_max_rows" not in props
    assert strict_valid(tmp_path / "cat")
    assert len(lsdb.open_catalog(str(tmp_path / "cat")).compute()) == table.num_rows
    rows = int(limit // per_row)
    healforge.import_catalog(files, tmp_path / "rows", threshold=rows, highest_order=8, **QUIET)
    assert layout.read_partition_info(tmp_path / "cat") == layout.read_partition_info(tmp_path / "rows")
    # the same partitions as hats-import's byte_pixel_threshold
    theirs = hats_import_catalogs[2] / "partition_info.csv"
    assert (tmp_path / "cat" / "partition_info.csv").read_text() == theirs.read_text()
    with pytest.raises(OptionError, match="not both"):
        healforge.import_catalog(files, tmp_path / "x", threshold=10, max_bytes="1MB", **QUIET)


def test_max_bytes_too_small_for_a_pixel(tmp_path, survey):
    _, files = survey
    with pytest.raises(ThresholdError, match="bytes, over the --max-bytes limit"):
        healforge.import_catalog(files, tmp_path / "cat", max_bytes=1000, highest_order=3, **QUIET)


@pytest.mark.slow
def test_subtile_row_groups(tmp_path, survey):
    table, files = survey
    run_cli(
        "import", *files, "-o", tmp_path / "cat", "--threshold", "3000", "--highest-order", "7",
        "--subtile-order-delta", "2", "--synchronous", "-q",
    )  # fmt: skip
    n_groups = 0
    for f in layout.list_data_files(tmp_path / "cat"):
        order, _ = layout.pixel_of_path(f)
        pf = pq.ParquetFile(f)
        h29 = pf.read(columns=["_healpix_29"])["_healpix_29"].to_numpy()
        shift = 2 * (29 - order - 2)
        subs = []
        for i in range(pf.num_row_groups):
            group = pf.read_row_group(i, columns=["_healpix_29"])["_healpix_29"].to_numpy()
            assert len(np.unique(group >> shift)) == 1
            subs.append(group[0] >> shift)
        # row groups split exactly at sub-pixel boundaries: one group per distinct sub-pixel
        assert len(subs) == len(set(subs)) == len(np.unique(h29 >> shift))
        n_groups += pf.num_row_groups
    assert n_groups > len(layout.list_data_files(tmp_path / "cat"))
    assert strict_valid(tmp_path / "cat")
    assert len(rows_by_id(tmp_path / "cat")) == table.num_rows


def test_row_group_rows(tmp_path, survey):
    _, files = survey
    healforge.import_catalog(files, tmp_path / "cat", threshold=5000, row_group_rows=700, **QUIET)
    for f in layout.list_data_files(tmp_path / "cat"):
        meta = pq.read_metadata(f)
        sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        assert all(s == 700 for s in sizes[:-1]) and 0 < sizes[-1] <= 700


def test_columns(tmp_path, survey):
    import lsdb

    table, files = survey
    healforge.import_catalog(
        files, tmp_path / "cat", threshold=5000, columns=["mag"], id_column="id", **QUIET
    )
    for f in layout.list_data_files(tmp_path / "cat"):
        assert pq.read_schema(f).names == ["_healpix_29", "id", "ra", "dec", "mag"]
    got = rows_by_id(tmp_path / "cat")
    assert got["mag"].equals(table["mag"]) and got["id"].equals(table["id"])
    assert list(lsdb.open_catalog(str(tmp_path / "cat")).columns) == ["id", "ra", "dec", "mag"]
    with pytest.raises(BadInputError, match="'nope' not found; available columns: id, ra, dec, mag"):
        healforge.import_catalog(files, tmp_path / "bad", columns=["nope"], **QUIET)


def _two_typed_files(folder, table):
    folder.mkdir()
    a, b = table.slice(0, 6000), table.slice(6000)
    a = a.set_column(0, "id", a["id"].cast(pa.int32()))
    pq.write_table(a, folder / "a.parquet")
    pq.write_table(b, folder / "b.parquet")
    return [str(folder / "a.parquet"), str(folder / "b.parquet")]


@pytest.mark.slow
def test_dtype_and_schema_reconcile_files(tmp_path, survey):
    table, _ = survey
    files = _two_typed_files(tmp_path / "in", table)
    with pytest.raises(BadInputError, match="id: int32 vs int64.*--dtype"):
        healforge.import_catalog(files, tmp_path / "refused", **QUIET)
    healforge.import_catalog(files, tmp_path / "cat", dtype=["id=int64"], threshold=4000, **QUIET)
    got = rows_by_id(tmp_path / "cat")
    assert got.schema.field("id").type == pa.int64()
    assert got.select(table.column_names).equals(table)
    assert strict_valid(tmp_path / "cat")

    pq.write_table(table.slice(0, 0), tmp_path / "types.parquet")
    run_cli("import", *files, "-o", tmp_path / "cat2", "--schema", tmp_path / "types.parquet",
            "--threshold", "4000", "--synchronous", "-q")  # fmt: skip
    assert rows_by_id(tmp_path / "cat2").select(table.column_names).equals(table)

    # casting down to a type that cannot hold a value names the file, column and row
    with pytest.raises(BadInputError, match=r"b\.parquet.*column 'flag', row 3, value 300"):
        big = table.slice(6000)
        flag = big["flag"].to_numpy().copy()
        flag[3] = 300
        big = big.set_column(big.schema.get_field_index("flag"), "flag", pa.array(flag))
        pq.write_table(big, tmp_path / "in" / "b.parquet")
        healforge.import_catalog(files, tmp_path / "cat3", dtype={"id": "int64", "flag": "int8"}, **QUIET)
    with pytest.raises(BadInputError, match=r"would round.*a\.parquet, column 'ra', row 0"):
        healforge.import_catalog(files, tmp_path / "cat4", dtype=["id=int64", "ra=float32"], **QUIET)
    with pytest.raises(OptionError, match="unknown type 'int33'"):
        healforge.import_catalog(files, tmp_path / "cat5", dtype=["id=int33"], **QUIET)


@pytest.mark.slow
def test_ecsv_round_trip(tmp_path):
    from astropy.table import MaskedColumn, Table

    ra, dec = make_points("uniform", 3000, seed=5)
    rng = np.random.default_rng(1)
    t = Table(
        {
            "oid": np.arange(3000, dtype=np.int32),
            "ra": ra,
            "dec": dec,
            "mag": MaskedColumn(rng.normal(20, 1, 3000).astype(np.float32), mask=rng.random(3000) < 0.1),
            "good": rng.random(3000) < 0.5,
            "band": np.array(["g", "r", "i"])[rng.integers(0, 3, 3000)],
            "nobs": rng.integers(0, 60_000, 3000).astype(np.uint16),
        }
    )
    t.write(tmp_path / "in.ecsv")
    run_cli("import", tmp_path / "in.ecsv", "-o", tmp_path / "cat", "--threshold", "500",
            "--synchronous", "-q")  # fmt: skip
    got = rows_by_id_col(tmp_path / "cat", "oid")
    want = {
        "oid": pa.int32(),
        "mag": pa.float32(),
        "good": pa.bool_(),
        "band": pa.string(),
        "nobs": pa.uint16(),
    }
    for col, typ in want.items():
        assert got.schema.field(col).type == typ, col
    for col in ("oid", "ra", "dec", "good", "band", "nobs"):
        assert got[col].to_pylist() == list(np.asarray(t[col])), col
    assert got["mag"].is_null().to_pylist() == list(t["mag"].mask)
    assert strict_valid(tmp_path / "cat")


def rows_by_id_col(path, col):
    return pa.concat_tables([pq.read_table(f) for f in layout.list_data_files(path)]).sort_by(col)


@pytest.fixture(scope="module")
def hats_import_catalogs(tmp_path_factory, survey):
    """hats-import catalogs of the survey rows: at thresholds 5000 (to re-import), 1500 and 100 kB."""
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    _, files = survey
    folder = tmp_path_factory.mktemp("hats_import")
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        for name, threshold, max_bytes in (
            ("theirs5000", 5000, None),
            ("theirs1500", 1500, None),
            ("theirs100kB", 1_000_000, 100_000),
        ):
            args = ImportArguments(
                output_artifact_name=name,
                input_file_list=files,
                file_reader="parquet",
                ra_column="ra",
                dec_column="dec",
                pixel_threshold=threshold,
                byte_pixel_threshold=max_bytes,
                highest_healpix_order=8,
                output_path=str(folder),
                progress_bar=False,
                tmp_dir=str(folder / "tmp"),
                addl_hats_properties={"obs_regime": "Optical", "hats_cols_default": "id ra dec"},
            )
            pipeline_with_client(args, client)
    return folder / "theirs5000", folder / "theirs1500", folder / "theirs100kB"


def test_reimport_hats_import_catalog(tmp_path, survey, hats_import_catalogs):
    import lsdb

    table, _ = survey
    source, reference, _ = hats_import_catalogs
    run_cli("import", source, "-o", tmp_path / "re", "--threshold", "1500", "--highest-order", "8",
            "--synchronous", "-q")  # fmt: skip
    assert (tmp_path / "re" / "partition_info.csv").read_text() == (
        reference / "partition_info.csv"
    ).read_text()
    before, after = rows_by_id(source), rows_by_id(tmp_path / "re")
    assert after.schema.names == before.schema.names
    assert after.equals(before.cast(after.schema))
    assert after.select(table.column_names).equals(table)
    old, new = layout.read_properties(source), layout.read_properties(tmp_path / "re")
    for key in ("obs_collection", "hats_col_ra", "hats_col_dec", "obs_regime", "hats_cols_default"):
        assert new[key] == old[key], key
    assert new["obs_collection"] == "theirs5000"
    assert new["hats_builder"].startswith("healforge") and new["hats_max_rows"] == "1500"
    assert strict_valid(tmp_path / "re")
    assert len(lsdb.open_catalog(str(tmp_path / "re")).compute()) == table.num_rows


def test_reimport_healforge_catalog_and_collection(tmp_path, survey, hats_import_catalogs):
    table, files = survey
    _, reference, _ = hats_import_catalogs
    healforge.import_catalog(files, tmp_path / "cat", threshold=5000, id_column="id", name="survey",
                             sort_columns=["mag"], **QUIET)  # fmt: skip
    res = healforge.import_catalog(
        tmp_path / "cat", tmp_path / "re", threshold=1500, highest_order=8, **QUIET
    )
    assert res.rows == table.num_rows
    assert (tmp_path / "re" / "partition_info.csv").read_text() == (
        reference / "partition_info.csv"
    ).read_text()
    before, after = rows_by_id(tmp_path / "cat"), rows_by_id(tmp_path / "re")
    assert after.equals(before)
    props = layout.read_properties(tmp_path / "re")
    assert props["obs_collection"] == "survey" and props["hats_col_id"] == "id"
    assert props["hats_cols_sort"] == "mag" and props["hats_max_rows"] == "1500"
    for f in layout.list_data_files(tmp_path / "re"):
        t = pq.read_table(f)
        assert t.schema.names.count("_healpix_29") == 1
        keys = list(zip(t["_healpix_29"].to_pylist(), t["mag"].to_pylist(), strict=True))
        assert keys == sorted(keys)
    assert strict_valid(tmp_path / "re")

    # a collection directory: its primary catalog is re-imported
    coll = tmp_path / "coll"
    coll.mkdir()
    (tmp_path / "cat").rename(coll / "cat")
    (coll / "collection.properties").write_text("obs_collection=coll\nhats_primary_table_url=cat\n")
    res = healforge.import_catalog(coll, tmp_path / "re2", threshold=1500, highest_order=8, **QUIET)
    assert (tmp_path / "re2" / "partition_info.csv").read_text() == (
        reference / "partition_info.csv"
    ).read_text()
    assert rows_by_id(tmp_path / "re2").equals(before)
    with pytest.raises(OptionError, match="only input"):
        healforge.import_catalog([coll, files[0]], tmp_path / "re3", **QUIET)
    with pytest.raises(OptionError, match="must not overlap"):
        healforge.import_catalog(coll / "cat", coll / "cat" / "sub", **QUIET)


def test_reimport_appended_catalog_with_columns(tmp_path, survey):
    # an appended catalog (Npix=P/ directories of several files) re-imported with fewer columns
    table, files = survey
    healforge.import_catalog(files[0], tmp_path / "cat", threshold=4000, id_column="id", **QUIET)
    healforge.append(tmp_path / "cat", files[1], "night2", **QUIET)
    assert layout.read_properties(healforge.resolve_catalog(tmp_path / "cat"))["hats_npix_suffix"] == "/"
    healforge.import_catalog(tmp_path / "cat", tmp_path / "re", threshold=3000, columns=["mag"], **QUIET)
    got = rows_by_id(tmp_path / "re")
    assert got.schema.names == ["_healpix_29", "id", "ra", "dec", "mag"]
    assert got.select(["id", "ra", "dec", "mag"]).equals(table.select(["id", "ra", "dec", "mag"]))
    props = layout.read_properties(tmp_path / "re")
    assert props["hats_npix_suffix"] == ".parquet" and props["hats_col_id"] == "id"
    assert strict_valid(tmp_path / "re")

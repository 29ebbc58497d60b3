"""Import end to end, judged by hats, lsdb and hats-import."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog
from hats.pixel_math import compute_spatial_index

import healforge
from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.hats import layout


def check_catalog(path, source: pa.Table, threshold: int | None = None):
    """Strict hats validation, lsdb round trip, and the per-file checks against the input."""
    import lsdb

    assert is_valid_catalog(str(path), strict=True)
    report = healforge.validate_catalog(path, id_column="id")
    assert report.ok, str(report)
    df = lsdb.open_catalog(str(path)).compute()
    assert len(df) == source.num_rows
    got = df.reset_index().set_index("id").sort_index()
    want = source.to_pandas().set_index("id").sort_index()
    assert np.array_equal(got.index.to_numpy(dtype=np.int64), want.index.to_numpy(dtype=np.int64))
    for col in want.columns:
        assert np.array_equal(got[col].to_numpy(), want[col].to_numpy()), col
    for f in layout.list_data_files(path):
        order, pixel = layout.pixel_of_path(f)
        table = pq.read_table(f)
        assert table.schema.names[0] == "_healpix_29"
        assert table.schema.metadata is None or b"pandas" not in table.schema.metadata
        for field in source.schema:
            assert table.schema.field(field.name).type == field.type
        h29 = table["_healpix_29"].to_numpy()
        assert np.all(np.diff(h29) >= 0)
        assert np.all(h29 >> (2 * (29 - order)) == pixel)
        assert np.array_equal(h29, compute_spatial_index(table["ra"].to_numpy(), table["dec"].to_numpy()))
        if threshold and order > 0:
            assert table.num_rows <= threshold
        sorting = pq.ParquetFile(f).metadata.row_group(0).sorting_columns
        assert sorting and sorting[0].column_index == 0
    return df


@pytest.mark.parametrize("kind", ["uniform", "clustered", "polar", "seam", "negative_ra"])
@pytest.mark.slow
def test_import_point_sets(tmp_path, kind):
    ra, dec = make_points(kind, 30_000, seed=1)
    table = survey_table(ra, dec)
    files = write_parquet_files(tmp_path / "in", table, 3)
    result = healforge.import_catalog(
        files, tmp_path / "cat", threshold=2_000, highest_order=7, synchronous=True, quiet=True
    )
    assert result.rows == table.num_rows and result.rejected == 0
    check_catalog(tmp_path / "cat", table, threshold=2_000)
    props = layout.read_properties(tmp_path / "cat")
    assert props["hats_nrows"] == str(table.num_rows)
    assert props["dataproduct_type"] == "object"
    assert (tmp_path / "cat" / "point_map.fits").exists() and (tmp_path / "cat" / "skymap.fits").exists()
    assert not (tmp_path / "cat" / ".healforge-import").exists()


def test_pixel_exactly_at_threshold(tmp_path):
    # 40 rows in one order-5 pixel, 39 elsewhere far away: threshold 40 keeps the dense pixel whole
    rng = np.random.default_rng(0)
    ra = np.r_[np.full(40, 45.0) + rng.uniform(0, 1e-4, 40), rng.uniform(200, 210, 39)]
    dec = np.r_[np.full(40, 30.0) + rng.uniform(0, 1e-4, 40), rng.uniform(-10, 10, 39)]
    table = survey_table(ra, dec)
    files = write_parquet_files(tmp_path / "in", table, 1)
    res = healforge.import_catalog(
        files, tmp_path / "cat", threshold=40, highest_order=5, synchronous=True, quiet=True
    )
    counts = {pq.read_metadata(f).num_rows for f in layout.list_data_files(tmp_path / "cat")}
    assert 40 in counts and res.rows == 79
    check_catalog(tmp_path / "cat", table, threshold=40)


def test_partition_info_identical_to_hats_import(tmp_path):
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    ra, dec = make_points("clustered", 20_000, seed=9)
    table = survey_table(ra, dec)
    files = write_parquet_files(tmp_path / "in", table, 2)
    healforge.import_catalog(
        files,
        tmp_path / "ours",
        threshold=1_500,
        highest_order=8,
        lowest_order=1,
        synchronous=True,
        quiet=True,
    )
    args = ImportArguments(
        output_artifact_name="theirs",
        input_file_list=files,
        file_reader="parquet",
        ra_column="ra",
        dec_column="dec",
        pixel_threshold=1_500,
        highest_healpix_order=8,
        lowest_healpix_order=1,
        output_path=str(tmp_path),
        progress_bar=False,
        tmp_dir=str(tmp_path / "tmp"),
    )
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        pipeline_with_client(args, client)
    ours = (tmp_path / "ours" / "partition_info.csv").read_text()
    theirs = (tmp_path / "theirs" / "partition_info.csv").read_text()
    assert ours == theirs
    assert ours.startswith("Norder,Npix\n")
    # hats-import's files hold the same rows per pixel
    for f in layout.list_data_files(tmp_path / "ours"):
        rel = f.relative_to(tmp_path / "ours")
        ref = pq.read_table(tmp_path / "theirs" / rel)
        mine = pq.read_table(f)
        assert np.array_equal(ref["_healpix_29"].to_numpy(), mine["_healpix_29"].to_numpy())


def test_csv_and_fits_inputs(tmp_path):
    from astropy.table import Table

    ra, dec = make_points("uniform", 4_000, seed=2)
    table = survey_table(ra, dec).drop_columns(["name"])
    df = table.to_pandas()
    df.iloc[:2000].to_csv(tmp_path / "a.csv", index=False)
    Table.from_pandas(df.iloc[2000:]).write(tmp_path / "b.fits")
    # CSV infers int64 for flag; make the FITS file agree by importing each separately
    res = healforge.import_catalog(
        [tmp_path / "a.csv"], tmp_path / "c1", threshold=500, highest_order=5, synchronous=True, quiet=True
    )
    assert res.rows == 2000
    got = pd.read_parquet(tmp_path / "c1" / "dataset").sort_values("id")
    assert np.array_equal(got["ra"].to_numpy(), df["ra"].iloc[:2000].to_numpy())
    res = healforge.import_catalog(
        [tmp_path / "b.fits"], tmp_path / "c2", threshold=500, highest_order=5, synchronous=True, quiet=True
    )
    assert res.rows == 2000
    assert is_valid_catalog(str(tmp_path / "c2"), strict=True)
    got = pd.read_parquet(tmp_path / "c2" / "dataset").sort_values("id")
    assert np.array_equal(got["dec"].to_numpy(), df["dec"].iloc[2000:].to_numpy())
    assert str(pq.read_schema(tmp_path / "c2" / "dataset" / "_common_metadata").field("mag").type) == "float"


def test_different_schemas_are_refused(tmp_path):
    ra, dec = make_points("uniform", 100)
    t = survey_table(ra, dec)
    pq.write_table(t, tmp_path / "a.parquet")
    pq.write_table(t.set_column(3, "mag", t["mag"].cast(pa.float64())), tmp_path / "b.parquet")
    with pytest.raises(healforge.BadInputError, match=r"different schemas.*mag: float vs double"):
        healforge.import_catalog(
            [tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "cat", synchronous=True, quiet=True
        )


@pytest.mark.slow
def test_cli_import_info_validate(tmp_path):
    ra, dec = make_points("clustered", 5_000, seed=4)
    table = survey_table(ra, dec)
    write_parquet_files(tmp_path / "in", table, 2)
    out = tmp_path / "cat"
    args = [
        "import",
        str(tmp_path / "in" / "*.parquet"),
        "-o",
        out,
        "--ra",
        "ra",
        "--dec",
        "dec",
        "--id",
        "id",
        "--threshold",
        "1000",
        "--highest-order",
        "6",
        "--sort-columns",
        "id",
        "--name",
        "mysurvey",
        "--catalog-type",
        "source",
        "--synchronous",
        "--quiet",
    ]
    proc = run_cli(*args)
    assert "5000 rows" in proc.stdout
    props = layout.read_properties(out)
    assert props["obs_collection"] == "mysurvey" and props["dataproduct_type"] == "source"
    assert props["hats_cols_sort"] == "id"
    info = run_cli("info", out).stdout
    assert "5,000" in info and "_healpix_29" in info and "order" in info
    assert "valid" in run_cli("validate", out, "--id", "id").stdout
    check_catalog(out, table)
    # the same import again: already complete, nothing rewritten
    again = run_cli(*args, check=False)
    assert again.returncode == 0 and again.stdout.startswith("already complete: 5000 rows"), again.stderr
    # an existing output is not overwritten silently by an import with other arguments
    again = run_cli(*args, "--threshold", "999", check=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr and "threshold" in again.stderr


def test_validate_finds_broken_catalog(tmp_path):
    ra, dec = make_points("uniform", 3_000, seed=6)
    table = survey_table(ra, dec)
    files = write_parquet_files(tmp_path / "in", table, 1)
    healforge.import_catalog(
        files, tmp_path / "cat", threshold=400, highest_order=5, synchronous=True, quiet=True
    )
    f = layout.list_data_files(tmp_path / "cat")[0]
    t = pq.read_table(f)
    # reverse the rows (unsorted) and duplicate an id
    t = t.take(np.arange(t.num_rows)[::-1].copy())
    ids = t["id"].to_numpy().copy()
    other = pq.read_table(layout.list_data_files(tmp_path / "cat")[1])["id"][0].as_py()
    ids[0] = other
    t = t.set_column(t.schema.get_field_index("id"), "id", pa.array(ids))
    pq.write_table(t, f)
    proc = run_cli("validate", tmp_path / "cat", "--id", "id", check=False)
    assert proc.returncode == 1
    assert "not sorted" in proc.stderr and "duplicated" in proc.stderr


def test_hdf5_input(tmp_path):
    import h5py

    ra, dec = make_points("uniform", 3_000, seed=13)
    table = survey_table(ra, dec).drop_columns(["name"])
    with h5py.File(tmp_path / "obs.h5", "w") as h5:
        grp = h5.create_group("catalog")
        for name in table.column_names:
            grp.create_dataset(name, data=table[name].to_numpy())
    res = healforge.import_catalog(
        [tmp_path / "obs.h5"],
        tmp_path / "cat",
        threshold=500,
        highest_order=5,
        synchronous=True,
        quiet=True,
        reader_options={"group": "catalog"},
    )
    assert res.rows == 3_000
    check_catalog(tmp_path / "cat", table)

"""Aggregating a HATS catalog directly: partition by partition, same map as the original table."""

import numpy as np
import pandas as pd
import pytest

import healforge
from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.aggregate.sources import to_sources
from healforge.hats.layout import list_data_files

STATS = ["count", "mean", "std", "min", "max", "median"]


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cat")
    ra, dec = make_points("clustered", 40_000, seed=5)
    table = survey_table(ra, dec, seed=5).rename_columns(["id", "RA_deg", "DEC_deg", "mag", "flag", "name"])
    files = write_parquet_files(tmp / "in", table, 3)
    root = tmp / "catalog"
    healforge.import_catalog(
        files, root, "RA_deg", "DEC_deg", id_column="id", threshold=8000, highest_order=6,
        synchronous=True, quiet=True,
    )  # fmt: skip
    return table, root


def _frame(table):
    return table.to_pandas().set_index("cell_ids").sort_index()


def test_catalog_partitions_are_the_units_of_work(catalog):
    _, root = catalog
    files = list_data_files(root)
    assert len(files) > 3  # the catalog is split into several partitions
    assert [s.path for s in to_sources(root)] == [str(p) for p in files]


@pytest.mark.slow
def test_aggregate_catalog_equals_original_table(catalog, tmp_path):
    table, root = catalog
    # lon/lat default to hats_col_ra / hats_col_dec of the catalog's properties
    got = _frame(healforge.aggregate(root, ["mag"], STATS, order=5))
    want = _frame(healforge.aggregate(table, ["mag"], STATS, order=5, lon="RA_deg", lat="DEC_deg"))
    assert got.index.equals(want.index)
    assert (got["mag_count"] == want["mag_count"]).all()
    assert got["mag_count"].sum() == table.num_rows
    for s in STATS[1:]:
        np.testing.assert_allclose(got[f"mag_{s}"], want[f"mag_{s}"], rtol=1e-9, equal_nan=True)

    # streaming: one state per partition, merged; equals the exact map for moments and counts
    state = healforge.accumulate(root, ["mag"], order=5)
    assert state.rows_in == table.num_rows
    fin = _frame(healforge.finalize(state, ["count", "mean", "std", "min", "max"]))
    assert fin.index.equals(want.index)
    assert (fin["mag_count"] == want["mag_count"]).all()
    for s in ("mean", "std", "min", "max"):
        np.testing.assert_allclose(fin[f"mag_{s}"], want[f"mag_{s}"], rtol=1e-6, equal_nan=True)

    # a sidecar of the catalog (row positions across partitions) gives the same exact map
    sc = healforge.sidecar(root, 5)
    via = _frame(healforge.aggregate(root, ["mag"], STATS, sidecar=sc))
    assert (via["mag_count"] == want["mag_count"]).all()
    np.testing.assert_allclose(via["mag_median"], want["mag_median"], rtol=1e-9)

    # through the CLI (the demo test runs a catalog through local Dask workers)
    out = tmp_path / "map.parquet"
    run_cli(
        "aggregate",
        root,
        "-o",
        out,
        "--order",
        5,
        "--columns",
        "mag",
        "--stats",
        "count",
        "mean",
        "-q",
        "--synchronous",
    )
    cli = _frame(healforge.read_map(out))
    assert (cli["mag_count"] == want["mag_count"]).all()
    np.testing.assert_allclose(cli["mag_mean"], want["mag_mean"], rtol=1e-9)
    with pytest.raises(healforge.BadInputError, match="nope"):
        healforge.aggregate(root, ["mag"], ["count"], order=5, lon="nope", lat="DEC_deg")


def test_catalog_without_position_properties(catalog, tmp_path):
    _, root = catalog
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    props = copy / "hats.properties"
    props.write_text("\n".join(ln for ln in props.read_text().splitlines() if "hats_col_ra" not in ln))
    with pytest.raises(healforge.BadInputError, match="hats_col_ra"):
        healforge.aggregate(copy, ["mag"], ["count"], order=4)
    # explicit columns work
    got = healforge.aggregate(copy, ["mag"], ["count"], order=4, lon="RA_deg", lat="DEC_deg")
    assert isinstance(got.to_pandas(), pd.DataFrame) and got.column("mag_count").to_numpy().sum() == 40_000

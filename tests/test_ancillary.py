"""hats-import's optional outputs: equal to hats-import's at import, kept current by append and compact."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.file_io import read_fits_image
from hats.io.validation import is_valid_catalog
from hats.pixel_math import compute_spatial_index

import healforge
from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.catalog.build import ancillary
from healforge.catalog.derived.collection import resolve_catalog
from healforge.hats import layout

ALT = [1, 3]
STAT_KINDS = ("min_value", "max_value", "null_count", "row_count")


def _hats_import(files, out_dir, name, highest_order=7, **extra):
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    args = ImportArguments(
        output_artifact_name=name,
        input_file_list=[str(f) for f in files],
        file_reader="parquet",
        ra_column="ra",
        dec_column="dec",
        pixel_threshold=600,
        highest_healpix_order=highest_order,
        output_path=str(out_dir),
        progress_bar=False,
        tmp_dir=str(out_dir / "tmp"),
        **extra,
    )
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        pipeline_with_client(args, client)
    return out_dir / name


def _batch(folder, n, start_id, seed, kind="clustered"):
    ra, dec = make_points(kind, n, seed=seed)
    return write_parquet_files(folder, survey_table(ra, dec, start_id, seed), 2)


def _stats_by_pixel(path) -> pd.DataFrame:
    """per_partition_statistics.parquet summed over row groups: one row per pixel."""
    df = pq.read_table(path).to_pandas()
    agg = {}
    for col in df.columns:
        kind = col.split("::")[-1]
        if kind in STAT_KINDS:
            agg[col] = {"min_value": "min", "max_value": "max"}.get(kind, "sum")
    return df.groupby(["Norder", "Npix"]).agg(agg).sort_index()


def _all_rows(root) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in layout.list_data_files(root)])


def check_outputs(root, summary: bool = False):
    """Every optional file matches the data in place (independent numpy/pyarrow computations)."""
    root = Path(resolve_catalog(root))  # a changed catalog: its current version
    props = layout.read_properties(root)
    total = int(props["hats_nrows"])
    rows = _all_rows(root)
    assert rows.num_rows == total
    # alt-order skymaps: histogram of every row at order K
    skymap_order = int(props["hats_skymap_order"])
    h29 = compute_spatial_index(rows["ra"].to_numpy(), rows["dec"].to_numpy())
    assert props["hats_skymap_alt_orders"] == " ".join(map(str, ALT))
    for k in [*ALT, skymap_order]:
        name = f"skymap.{k}.fits" if k != skymap_order else "skymap.fits"
        got = read_fits_image(str(root / name))
        want = np.bincount(h29 >> (2 * (29 - k)), minlength=12 * 4**k)
        assert got.sum() == total and np.array_equal(got, want), name
    # per-partition statistics: one pixel set with the catalog, rows and min/max per pixel
    pixels = layout.read_partition_info(root)
    stats = _stats_by_pixel(root / ancillary.STATISTICS)
    assert sorted(stats.index) == sorted(pixels)
    df = rows.to_pandas()
    df["order"], df["npix"] = _pixel_of(h29, pixels)
    for (order, pixel), part in df.groupby(["order", "npix"]):
        row = stats.loc[(order, pixel)]
        assert row["id::row_count"] == len(part)
        for col in ("id", "ra", "mag", "name"):
            assert row[f"{col}::min_value"] == part[col].min(), col
            assert row[f"{col}::max_value"] == part[col].max(), col
    # thumbnail: the first row of every data file, ordered by _healpix_29
    thumb = pq.read_table(root / ancillary.THUMBNAIL)
    firsts = pa.concat_tables([pq.read_table(f).slice(0, 1) for f in layout.list_data_files(root)])
    firsts = firsts.sort_by("_healpix_29")
    if firsts.num_rows <= int(props["hats_max_rows"]):
        assert thumb.equals(firsts)
    else:  # hats' rule: a random sample of hats_max_rows files
        assert thumb.num_rows == int(props["hats_max_rows"])
        assert set(thumb["_healpix_29"].to_pylist()) <= set(firsts["_healpix_29"].to_pylist())
    if summary:
        text = (root / "README.md").read_text()
        assert f"| {total:,} |" in text
        maxima = next(line for line in text.splitlines() if line.startswith("| **Maximum value**"))
        assert f" {rows['id'].to_numpy().max()} " in maxima
    assert is_valid_catalog(str(root), strict=True)


def _pixel_of(h29, pixels):
    """(order, pixel) of each row's partition."""
    orders = np.zeros(len(h29), dtype=np.int64)
    npix = np.full(len(h29), -1, dtype=np.int64)
    for order in sorted({o for o, _ in pixels}):
        at = h29 >> (2 * (29 - order))
        hit = np.isin(at, [p for o, p in pixels if o == order])
        orders[hit], npix[hit] = order, at[hit]
    assert np.all(npix >= 0)
    return orders, npix


def test_import_outputs_equal_hats_import(tmp_path):
    import lsdb

    files = _batch(tmp_path / "in", 6_000, 0, 4)
    options = {"hats_cols_default": "id ra dec mag", "obs_title": "Outputs test"}
    theirs = _hats_import(
        files,
        tmp_path,
        "theirs",
        skymap_alt_orders=ALT,
        create_thumbnail=True,
        create_per_partition_stats=True,
        addl_hats_properties=options,
    )
    healforge.import_catalog(
        files,
        tmp_path / "ours",
        threshold=600,
        highest_order=7,
        skymap_alt_orders=ALT,
        thumbnail=True,
        per_partition_stats=True,
        default_columns=["id", "ra", "dec", "mag"],
        properties={"obs_title": "Outputs test"},
        synchronous=True,
        quiet=True,
    )
    ours = tmp_path / "ours"
    assert (ours / "partition_info.csv").read_text() == (theirs / "partition_info.csv").read_text()
    for k in ALT:
        assert np.array_equal(
            read_fits_image(str(ours / f"skymap.{k}.fits")), read_fits_image(str(theirs / f"skymap.{k}.fits"))
        )
    s_ours, s_theirs = (_stats_by_pixel(c / ancillary.STATISTICS) for c in (ours, theirs))
    assert (
        pq.read_metadata(ours / ancillary.STATISTICS).num_rows
        == pq.read_metadata(theirs / ancillary.STATISTICS).num_rows
    )
    assert list(s_ours.columns) == list(s_theirs.columns)
    pd.testing.assert_frame_equal(s_ours, s_theirs)
    t_ours, t_theirs = (pq.read_table(c / ancillary.THUMBNAIL) for c in (ours, theirs))
    assert t_ours.equals(t_theirs)
    p_ours, p_theirs = layout.read_properties(ours), layout.read_properties(theirs)
    for key in ("hats_skymap_alt_orders", "hats_cols_default", "obs_title", "hats_skymap_order"):
        assert p_ours[key] == p_theirs[key], key
    assert is_valid_catalog(str(ours), strict=True)
    cat = lsdb.open_catalog(str(ours))
    assert list(cat.columns) == ["id", "ra", "dec", "mag"]
    check_outputs(ours)


@pytest.mark.slow
def test_cli_outputs_kept_current_by_append_and_compact(tmp_path):
    import lsdb

    root = tmp_path / "cat"
    a = _batch(tmp_path / "a", 6_000, 0, 4, "uniform")
    b = _batch(tmp_path / "b", 2_500, 100_000, 5, "uniform")
    run_cli(
        "import", *a, "-o", root, "--threshold", 600, "--highest-order", 5, "--skymap-alt-orders", *ALT,
        "--thumbnail", "--per-partition-stats", "--summary", "--default-columns", "id", "ra", "name",
        "--property", "obs_title=Kept current", "--property", "creator_did=ivo://example/test",
        "--synchronous", "-q",
    )  # fmt: skip
    check_outputs(root, summary=True)
    run_cli("append", root, *b, "--batch", "b", "--synchronous", "-q")
    assert layout.has_multi_file_pixels(resolve_catalog(root))
    check_outputs(root, summary=True)
    run_cli("compact", root, "--threshold", 150, "--synchronous", "-q")
    assert not layout.has_multi_file_pixels(resolve_catalog(root))
    check_outputs(root, summary=True)
    props = layout.read_properties(resolve_catalog(root))
    assert props["obs_title"] == "Kept current" and props["creator_did"] == "ivo://example/test"
    assert props["hats_cols_default"] == "id ra name"
    cat = lsdb.open_catalog(str(root))
    assert list(cat.columns) == ["id", "ra", "name", "dec"]  # lsdb adds the coordinates
    assert len(cat.compute()) == 8_500
    # the README lists the alt-order skymaps and the default columns
    text = (resolve_catalog(root) / "README.md").read_text()
    assert "skymap.3.fits" in text and "**Default?**" in text


def test_summary_without_statistics_after_append(tmp_path):
    root = tmp_path / "cat"
    healforge.import_catalog(
        _batch(tmp_path / "a", 3_000, 0, 6, "uniform"),
        root,
        threshold=600,
        highest_order=4,
        summary=True,
        synchronous=True,
        quiet=True,
    )
    assert not (root / ancillary.STATISTICS).exists()
    healforge.append(
        root, _batch(tmp_path / "b", 1_000, 50_000, 7, "uniform"), "b", synchronous=True, quiet=True
    )
    root = resolve_catalog(root)  # the catalog's new version
    assert not (root / layout.DATASET_DIR / "_metadata").exists()
    text = (root / "README.md").read_text()
    assert "| 4,000 |" in text
    maxima = next(line for line in text.splitlines() if line.startswith("| **Maximum value**"))
    assert " 50999 " in maxima
    # nothing else appeared, and the scratch directory is gone
    assert not list(root.glob("skymap.*.fits")) and not (root / ancillary.THUMBNAIL).exists()
    assert not list((root / ".healforge").glob(".outputs-*"))


@pytest.mark.slow
def test_hats_import_catalog_outputs_refreshed(tmp_path):
    files = _batch(tmp_path / "in", 6_000, 0, 4, "uniform")
    root = _hats_import(
        files,
        tmp_path,
        "theirs",
        highest_order=5,
        skymap_alt_orders=ALT,
        create_thumbnail=True,
        create_per_partition_stats=True,
        create_summary_md=True,
        create_summary_html=True,
        create_partition_info_png=True,
    )
    assert ancillary.present(root).plots == ["partition_info.png"]
    before = {n: (root / n).read_bytes() for n in ("index.html", "partition_info.png")}
    png_time = (root / "partition_info.png").stat().st_mtime_ns
    b = _batch(tmp_path / "b", 2_000, 100_000, 5, "uniform")
    res = healforge.append(root, b, "b", synchronous=True, quiet=True)
    assert res.total_rows == 8_000
    check_outputs(root, summary=True)
    old, root = root, resolve_catalog(root)  # the catalog's new version; the old one is intact
    assert (old / "index.html").read_bytes() == before["index.html"]
    html = (root / "index.html").read_text()
    assert "8,000" in html and before["index.html"] != html.encode()
    # same partitions after the append: the plot is redrawn, identical
    assert (root / "partition_info.png").stat().st_mtime_ns > png_time
    assert (root / "partition_info.png").read_bytes() == before["partition_info.png"]
    healforge.compact(root, threshold=150, synchronous=True, quiet=True)
    check_outputs(root, summary=True)
    root = resolve_catalog(root)
    assert (root / "partition_info.png").read_bytes() != before["partition_info.png"]


@pytest.mark.slow
def test_killed_while_refreshing_leaves_old_catalog_and_rerun_completes(tmp_path):
    root = tmp_path / "cat"
    healforge.import_catalog(
        _batch(tmp_path / "a", 6_000, 0, 4),
        root,
        threshold=600,
        highest_order=7,
        skymap_alt_orders=ALT,
        thumbnail=True,
        per_partition_stats=True,
        synchronous=True,
        quiet=True,
    )
    b = _batch(tmp_path / "b", 2_000, 100_000, 5)
    # killed while building the new version's outputs (after the skymaps, before the thumbnail
    # and statistics), i.e. before the commit
    proc = run_cli(
        "append", root, *b, "--batch", "b", "--synchronous", "-q",
        env={"HEALFORGE_KILL_AFTER": "Outputs:4"}, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    # the catalog is the old one, untouched and readable; the next writer redoes the change
    import lsdb

    assert len(lsdb.open_catalog(str(root)).compute()) == 6_000
    check_outputs(root)
    run_cli("append", root, *b, "--batch", "b", "--synchronous", "-q")
    assert len(lsdb.open_catalog(str(root)).compute()) == 8_000
    check_outputs(root)
    assert not (root / ".healforge-txn").exists()


def test_bad_output_options(tmp_path):
    files = _batch(tmp_path / "in", 500, 0, 1, "uniform")
    with pytest.raises(ancillary.OutputsError, match=r"alt order 6 is outside 0\.\.5"):
        healforge.import_catalog(files, tmp_path / "c1", highest_order=5, skymap_alt_orders=[6], quiet=True)
    assert not (tmp_path / "c1").exists()
    with pytest.raises(ancillary.OutputsError, match="'hats_nrows' is written by healforge"):
        healforge.import_catalog(files, tmp_path / "c2", properties={"hats_nrows": "5"}, quiet=True)
    with pytest.raises(
        healforge.BadInputError, match=r"default column\(s\) nope not in the inputs.*column 'nope'"
    ):
        healforge.import_catalog(
            files,
            tmp_path / "c3",
            highest_order=3,
            default_columns=["id", "nope"],
            synchronous=True,
            quiet=True,
        )
    proc = run_cli("import", *files, "-o", tmp_path / "c4", "--property", "novalue", "-q", check=False)
    assert proc.returncode != 0 and "is not KEY=VALUE" in proc.stderr
    proc = run_cli("import", *files, "-o", tmp_path / "c5", "--default-columns", "a,b", "-q", check=False)
    assert proc.returncode != 0 and re.search(r"default column 'a,b' cannot be stored", proc.stderr)

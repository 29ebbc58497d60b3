"""healforge.hats: property keys spelled as hats spells them; the summary drawn without patching hats."""

from __future__ import annotations

import numpy as np
import pytest
from hats import read_hats
from hats.catalog.dataset.table_properties import TableProperties
from hats.inspection import visualize_catalog
from hats.io.file_io import read_fits_image
from hats.io.skymap import read_skymap

import healforge
from conftest import make_points, survey_table, write_parquet_files
from healforge.catalog.derived.collection import resolve_catalog
from healforge.hats import Key, layout
from healforge.hats.summary import DENSITY_PLOT_ORDER, summary_text, summary_view


def test_keys_are_the_property_names_hats_reads():
    keys = [v for k, v in vars(Key).items() if k.isupper()]
    assert len(set(keys)) == len(keys) and all(k.startswith("hats_") for k in keys)
    fields = {f.alias for f in TableProperties.model_fields.values() if f.alias}
    # written by hats-import (and healforge) but not typed fields of hats' TableProperties
    extra = {Key.COL_ID, Key.COLS_SORT, Key.ORDER, Key.VERSION, Key.BUILDER, Key.CREATION_DATE}
    assert set(keys) - extra <= fields, set(keys) - extra - fields
    assert not extra & fields


@pytest.mark.slow
def test_summary_density_at_capped_order_without_patching(tmp_path):
    ra, dec = make_points("clustered", 3_000, seed=3)
    files = write_parquet_files(tmp_path / "in", survey_table(ra, dec, 0, 3), 2)
    plot_density = visualize_catalog.plot_density
    healforge.import_catalog(
        files, tmp_path / "cat", threshold=600, highest_order=8, summary=True, synchronous=True, quiet=True
    )
    assert visualize_catalog.plot_density is plot_density
    root = resolve_catalog(tmp_path / "cat")
    props = layout.read_properties(root)
    total = int(props[Key.NROWS])
    assert int(props[Key.SKYMAP_ORDER]) == 8 > DENSITY_PLOT_ORDER

    view = summary_view(root, tmp_path / "scratch")
    # the density hats draws: the skymap summed to the capped order
    density = read_skymap(view, None)
    full = read_fits_image(str(root / "skymap.fits"))
    assert len(density) == 12 * 4**DENSITY_PLOT_ORDER and density.sum() == total
    assert np.array_equal(density, full.reshape(len(density), -1).sum(axis=1))
    # rows and properties are the catalog's own
    catalog = read_hats(root)
    pixel = catalog.get_healpix_pixels()[0]
    assert view.read_pixel_to_pandas(pixel).equals(catalog.read_pixel_to_pandas(pixel))
    assert view.catalog_info == catalog.catalog_info and view.catalog_path.name == root.name
    # the summary written at import is this one, with both images and the catalog's row count
    text = summary_text(view, "markdown")
    assert "Density Skymap" in text and f"| {total:,} |" in text
    assert (root / "README.md").read_text() == text


def test_catalog_files_written_without_hats_read_back_as_hats_writes_them(tmp_path):
    """partition_info, properties, _metadata and the skymaps are written by healforge.hats.files
    (hats is not imported by a writer); hats' own writers give the same content, and a catalog
    with several files per pixel (appended batches) opens and validates in hats."""
    import subprocess
    import sys

    import pyarrow.parquet as pq
    from hats.catalog import PartitionInfo
    from hats.io.file_io import write_fits_image
    from hats.io.parquet_metadata import write_parquet_metadata
    from hats.io.validation import is_valid_catalog

    from healforge.hats import files

    shown = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, healforge.catalog.build.importer, healforge.catalog.change.append, "
            "healforge.catalog.derived.margin; print(sorted(m for m in ('hats', 'astropy', 'matplotlib') "
            "if m in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout.strip() == "[]"

    ra, dec = make_points("clustered", 6_000, seed=5)
    inputs = write_parquet_files(tmp_path / "in", survey_table(ra, dec, 0, 5), 2)
    out = tmp_path / "cat"
    healforge.import_catalog(inputs[:1], out, threshold=700, highest_order=7, synchronous=True, quiet=True)
    healforge.append(out, inputs[1:], "b", synchronous=True, quiet=True)
    root = resolve_catalog(out)
    assert is_valid_catalog(str(root), strict=True)
    catalog = read_hats(root)
    assert catalog.catalog_info.total_rows == 6_000

    ours = (root / "partition_info.csv").read_text()
    pixels = layout.read_partition_info(root)
    PartitionInfo.from_healpix(catalog.get_healpix_pixels()).write_to_file(tmp_path / "pi.csv")
    assert ours == (tmp_path / "pi.csv").read_text() == files.partition_info_text(pixels[::-1])

    copies = {}
    for side in ("ours", "theirs"):
        copy = copies[side] = tmp_path / side
        for f in layout.list_data_files(root):
            target = copy / f.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(f.read_bytes())
    assert (
        layout.write_dataset_metadata(copies["ours"])
        == write_parquet_metadata(str(copies["theirs"]))
        == 6_000
    )
    ours_meta, theirs_meta = (
        pq.read_metadata(copies[s] / "dataset" / "_metadata") for s in ("ours", "theirs")
    )
    paths = [ours_meta.row_group(i).column(0).file_path for i in range(ours_meta.num_row_groups)]
    assert paths == [theirs_meta.row_group(i).column(0).file_path for i in range(theirs_meta.num_row_groups)]
    assert any(p.count("/") == 3 for p in paths)  # Npix=P/<batch>.parquet files
    assert pq.read_schema(copies["ours"] / "dataset" / "_common_metadata").equals(
        pq.read_schema(copies["theirs"] / "dataset" / "_common_metadata")
    )

    for histogram in (np.arange(768, dtype=np.int64), np.eye(1, 3072, 17, dtype=np.int64)[0] * 5):
        write_fits_image(histogram, tmp_path / "theirs.fits")
        (tmp_path / "ours.fits").write_bytes(files.skymap_fits(histogram))
        assert np.array_equal(read_fits_image(tmp_path / "ours.fits"), histogram)
        assert len((tmp_path / "ours.fits").read_bytes()) == len((tmp_path / "theirs.fits").read_bytes())
    assert np.array_equal(read_skymap(catalog, None), read_fits_image(root / "point_map.fits"))
    assert TableProperties.read_from_dir(root).total_rows == 6_000

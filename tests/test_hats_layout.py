"""healforge.hats: property keys spelled as hats spells them; the summary drawn without patching hats."""

from __future__ import annotations

import numpy as np
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

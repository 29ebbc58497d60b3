"""Re-import: an existing HATS catalog (or collection) given as import input.

The catalog's data files become the inputs; its properties are carried over except the ones a new
import measures again (rows, orders, sizes, builder, dates, thresholds).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from healforge.catalog.opener import open_path
from healforge.errors import CatalogError
from healforge.hats import Key, layout
from healforge.io.storage import AnyPath

# Properties an import writes afresh; every other property of the input catalog is carried over.
RECOMPUTED = {
    "obs_collection",
    "dataproduct_type",
    Key.NROWS,
    Key.COL_RA,
    Key.COL_DEC,
    Key.COL_HEALPIX,
    Key.COL_HEALPIX_ORDER,
    Key.COLS_SORT,
    Key.MAX_ROWS,
    Key.MAX_BYTES,
    Key.ORDER,
    "moc_sky_fraction",
    Key.NPIX_SUFFIX,
    Key.SKYMAP_ORDER,
    Key.SKYMAP_ALT_ORDERS,
    Key.ESTSIZE,
    Key.BUILDER,
    Key.VERSION,
}


@dataclass
class SourceCatalog:
    """A HATS catalog given as import input."""

    root: AnyPath
    properties: dict[str, str]

    @property
    def files(self) -> list[str]:
        """Its data files."""
        return [str(p) for p in layout.list_data_files(self.root)]

    def carried_properties(self) -> dict[str, str]:
        """Properties to write again on the new catalog (dates are new, so not carried)."""
        return {k: v for k, v in self.properties.items() if k not in RECOMPUTED and "date" not in k}


def source_catalog(path: str | os.PathLike, storage_options: dict | None = None) -> SourceCatalog | None:
    """The catalog an input path or URL names (catalog or collection directory), or ``None``;
    decided by the one opener (:func:`healforge.catalog.opener.open_path`)."""
    if not isinstance(path, str | os.PathLike):
        return None
    opened = open_path(path, storage_options)
    if opened.kind == "collection" and not opened.properties:
        raise CatalogError(f"collection {opened.path}: primary catalog {opened.table} has no hats.properties")
    if not opened.is_hats:
        return None
    root, props = opened.table, opened.properties
    kind = props.get("dataproduct_type")
    if kind not in ("object", "source"):
        raise CatalogError(
            f"{root} is a {kind or 'untyped'} HATS catalog; only object and source catalogs can be re-imported"
        )
    if not layout.list_data_files(root):
        raise CatalogError(f"catalog {root} has no data files")
    return SourceCatalog(root, props)

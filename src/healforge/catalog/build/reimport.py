"""Re-import: an existing HATS catalog (or collection) given as import input.

The catalog's data files become the inputs; its properties are carried over except the ones a new
import measures again (rows, orders, sizes, builder, dates, thresholds).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healforge.catalog import format as fmt
from healforge.catalog.derived.collection import is_collection, resolve_catalog
from healforge.errors import CatalogError

# Properties an import writes afresh; every other property of the input catalog is carried over.
RECOMPUTED = {
    "obs_collection",
    "dataproduct_type",
    "hats_nrows",
    "hats_col_ra",
    "hats_col_dec",
    "hats_col_healpix",
    "hats_col_healpix_order",
    "hats_cols_sort",
    "hats_max_rows",
    "hats_max_bytes",
    "hats_order",
    "moc_sky_fraction",
    "hats_npix_suffix",
    "hats_skymap_order",
    "hats_skymap_alt_orders",
    "hats_estsize",
    "hats_builder",
    "hats_version",
}


@dataclass
class SourceCatalog:
    """A HATS catalog given as import input."""

    root: Path
    properties: dict[str, str]

    @property
    def files(self) -> list[str]:
        """Its data files."""
        return [str(p) for p in fmt.list_data_files(self.root)]

    def carried_properties(self) -> dict[str, str]:
        """Properties to write again on the new catalog (dates are new, so not carried)."""
        return {k: v for k, v in self.properties.items() if k not in RECOMPUTED and "date" not in k}


def source_catalog(path: str | Path) -> SourceCatalog | None:
    """The catalog an input path names (catalog or collection directory), or ``None``."""
    if "://" in str(path):
        return None
    path = Path(path)
    if not path.is_dir():
        return None
    if is_collection(path):
        path = resolve_catalog(path)
        if not (path / "hats.properties").is_file():
            raise CatalogError(f"collection {path.parent}: primary catalog {path} has no hats.properties")
    elif not (path / "hats.properties").is_file():
        return None
    props = fmt.read_properties(path)
    kind = props.get("dataproduct_type")
    if kind not in ("object", "source"):
        raise CatalogError(
            f"{path} is a {kind or 'untyped'} HATS catalog; only object and source catalogs can be re-imported"
        )
    if not fmt.list_data_files(path):
        raise CatalogError(f"catalog {path} has no data files")
    return SourceCatalog(path.absolute(), props)

"""hats' catalog summary (``README.md`` / ``index.html``) and density plot, at a capped order.

hats draws the density image one polygon per skymap pixel, which takes minutes at order 10; its
``plot_density(order=...)`` can draw a coarser map, but ``generate_summary`` calls it without an
order. The summary is therefore drawn from a :class:`SummaryView`: the catalog as hats reads it,
rooted in a scratch directory that holds copies of its small metadata files and the density map
summed to ``DENSITY_PLOT_ORDER``; rows and column statistics are read from the catalog itself.
Nothing of hats is patched.
"""

from __future__ import annotations

from pathlib import Path

from hats import read_hats
from hats.catalog import Catalog
from hats.inspection.visualize_catalog import plot_density
from hats.io import file_io, paths
from hats.io.parquet_metadata import aggregate_column_statistics
from hats.io.skymap import read_skymap
from hats.io.summary_file import generate_summary

from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

DENSITY_PLOT_ORDER = 6


def density_order(catalog) -> int | None:
    """The order to draw ``catalog``'s density at: ``DENSITY_PLOT_ORDER`` when its skymap is
    finer, else ``None`` (hats' default map)."""
    order = catalog.catalog_info.skymap_order
    return DENSITY_PLOT_ORDER if order is not None and order > DENSITY_PLOT_ORDER else None


def plot_density_capped(catalog, **kwargs):
    """hats' ``plot_density`` at :func:`density_order`; returns ``(fig, ax)``."""
    return plot_density(catalog, order=density_order(catalog), **kwargs)


class SummaryView(Catalog):
    """``source`` as hats' summary reads it, rooted in the local directory ``directory``.

    ``directory`` holds ``partition_info.csv``, ``dataset/_common_metadata``, the thumbnail
    (when the catalog has one) and the density map at :func:`density_order`, under the name hats
    reads the default map from. Pixel rows come from ``source``; column statistics from
    ``source`` too, or from the ``_metadata`` file ``metadata`` when given (a catalog with
    several files in a pixel has none of its own).
    """

    def __init__(self, source: Catalog, directory: Path, metadata: str | None = None) -> None:
        super().__init__(
            source.catalog_info,
            source.pixel_tree,
            catalog_path=directory,
            moc=source.moc,
            schema=source.schema,
            snapshot=source.snapshot,
        )
        self.source = source
        self.metadata = metadata

    def read_pixel_to_pandas(self, pixel, **kwargs):
        """The pixel's rows, read from the catalog itself."""
        return self.source.read_pixel_to_pandas(pixel, **kwargs)

    def aggregate_column_statistics(self, *, warn_on_modified_catalog: bool = True, **kwargs):
        """Column statistics of the catalog (from ``metadata`` when given)."""
        if self.metadata is None:
            return self.source.aggregate_column_statistics(
                warn_on_modified_catalog=warn_on_modified_catalog, **kwargs
            )
        return aggregate_column_statistics(self.metadata, **kwargs)


def summary_view(root: str | AnyPath, scratch: Path, metadata: str | None = None):
    """The catalog at ``root`` for :func:`summary_text`: a :class:`SummaryView` in a new directory
    of the local ``scratch`` directory, named like the catalog (hats prints that name), or the
    catalog itself when it is not a ``Catalog`` (margin, index: their summaries draw no map)."""
    root = as_path(root)
    catalog = read_hats(root)
    if type(catalog) is not Catalog:
        return catalog
    directory = Path(scratch) / "summary-view" / root.name
    directory.mkdir(parents=True)
    pointers = (
        paths.get_partition_info_pointer,
        paths.get_common_metadata_pointer,
        paths.get_data_thumbnail_pointer,
    )
    for pointer in pointers:
        rel = Path(pointer(directory).path).relative_to(directory)
        if (root / rel.as_posix()).exists():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            storage.copy_file(root / rel.as_posix(), directory / rel)
    try:
        density = read_skymap(catalog, density_order(catalog))
    except FileNotFoundError:  # no map at all: hats' summary draws none either
        density = None
    if density is not None:
        default_map = (
            paths.get_skymap_file_pointer(directory)
            if catalog.catalog_info.skymap_order
            else paths.get_point_map_file_pointer(directory)
        )
        file_io.write_fits_image(density, default_map)
    return SummaryView(catalog, directory, metadata)


def summary_text(catalog, kind: str) -> str:
    """hats' summary of ``catalog`` (a :func:`summary_view`) in ``kind`` (``markdown``/``html``)."""
    name = catalog.catalog_info.catalog_name
    return generate_summary(
        catalog,
        fmt=kind,
        name=name,
        description=f"This is the HATS catalog for {name}.",
        uri=None,
        huggingface_metadata=False,
    )


__all__ = [
    "DENSITY_PLOT_ORDER",
    "SummaryView",
    "density_order",
    "plot_density_capped",
    "summary_text",
    "summary_view",
]

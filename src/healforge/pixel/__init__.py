"""All HEALPix arithmetic of healforge, as hats keeps its ``pixel_math``: cells and the order-29
spatial index (:mod:`~healforge.pixel.cells`), partition alignment
(:mod:`~healforge.pixel.alignment`), pixel boundaries and distances
(:mod:`~healforge.pixel.geometry`), geodetic/authalic latitude and longitude conventions
(:mod:`~healforge.pixel.latitude`). Only this package imports cdshealpix and healpix-geo.
"""

from __future__ import annotations

from healforge.pixel.cells import (
    MAX_ORDER,
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    bad_coordinate_mask,
    border_cells,
    check_order,
    children_range,
    describe_bad_coordinate,
    index29_range,
    index29_shift,
    index_to_order,
    lonlat_to_pixel,
    neighbourhood,
    neighbours,
    npix_to_order,
    nside_to_order,
    order_to_npix,
    order_to_nside,
    pixel_area_deg2,
    pixel_centers,
    pixel_index29_range,
    pixel_vertices,
    spatial_index,
    to_parent,
    wrap_lon,
)

__all__ = [
    "MAX_ORDER",
    "SPATIAL_INDEX_COLUMN",
    "SPATIAL_INDEX_ORDER",
    "bad_coordinate_mask",
    "border_cells",
    "check_order",
    "children_range",
    "describe_bad_coordinate",
    "index_to_order",
    "neighbourhood",
    "index29_shift",
    "index29_range",
    "lonlat_to_pixel",
    "neighbours",
    "npix_to_order",
    "nside_to_order",
    "order_to_npix",
    "order_to_nside",
    "pixel_area_deg2",
    "pixel_centers",
    "pixel_index29_range",
    "pixel_vertices",
    "spatial_index",
    "to_parent",
    "wrap_lon",
]

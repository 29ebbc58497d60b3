"""HEALPix pixel math (nested scheme) on top of healpix-geo and cdshealpix.

healpix-geo (the cdshealpix Rust crate without astropy, 0.1 s to import) hashes positions and
draws cells; cdshealpix, whose import pulls astropy (about a second), is imported only by the
functions that need it.

Everything here is vectorised over numpy arrays. Orders run from 0 to 29; ``nside = 2**order``.
The order-29 spatial index is bit-identical to ``hats.pixel_math.compute_spatial_index``.
"""

from __future__ import annotations

import math

import numpy as np
from healpix_geo import nested as hgn

from healforge.errors import OptionError

MAX_ORDER = 29
SPATIAL_INDEX_COLUMN = "_healpix_29"
SPATIAL_INDEX_ORDER = 29


def check_order(order: int) -> int:
    """Return ``order`` as an int, raising ``OptionError`` (a ``ValueError``) unless ``0 <= order <= 29``."""
    if int(order) != order or not 0 <= int(order) <= MAX_ORDER:
        raise OptionError(f"HEALPix order must be an integer in [0, {MAX_ORDER}], got {order!r}")
    return int(order)


def order_to_nside(order: int) -> int:
    """Nside of a HEALPix order."""
    return 1 << check_order(order)


def nside_to_order(nside: int) -> int:
    """Order of a power-of-two nside; ``ValueError`` otherwise."""
    nside = int(nside)
    if nside < 1 or nside & (nside - 1):
        raise OptionError(f"nside must be a power of two, got {nside}")
    return check_order(nside.bit_length() - 1)


def order_to_npix(order: int) -> int:
    """Number of pixels covering the sphere at ``order``."""
    return 12 * (1 << (2 * check_order(order)))


def npix_to_order(npix: int) -> int:
    """Order whose full-sky pixel count is ``npix``."""
    order = int(math.log2(max(npix, 1) / 12)) >> 1
    if order_to_npix(order) != npix:
        raise OptionError(f"{npix} is not a full-sky HEALPix pixel count")
    return order


def pixel_area_deg2(order: int) -> float:
    """Area of one pixel at ``order`` in square degrees."""
    return 4 * math.pi * (180 / math.pi) ** 2 / order_to_npix(order)


def wrap_lon(lon: np.ndarray) -> np.ndarray:
    """Wrap longitudes (degrees) into [0, 360)."""
    lon = np.asarray(lon, dtype=np.float64)
    if lon.size and -360.0 <= lon.min() and lon.max() <= 720.0:
        # the usual ranges: one add or subtract is what np.mod computes there (exactly), at half
        # its cost
        out = np.where(lon < 0.0, lon + 360.0, np.where(lon >= 360.0, lon - 360.0, lon))
    else:
        out = np.mod(lon, 360.0)
    out[out >= 360.0] = 0.0  # tiny negative inputs round up to 360
    return out


def lonlat_to_pixel(lon: np.ndarray, lat: np.ndarray, order: int) -> np.ndarray:
    """Nested pixel index (int64) of each lon/lat pair (degrees) at ``order``.

    Coordinates must already be valid (see :func:`bad_coordinate_mask`).
    """
    order = check_order(order)
    lon = np.ascontiguousarray(lon, dtype=np.float64)
    lat = np.ascontiguousarray(lat, dtype=np.float64)
    if lon.size == 0:
        return np.empty(0, dtype=np.int64)
    if not (np.abs(lat) <= 90).all():  # the Rust hash would panic
        raise OptionError(
            f"latitude outside [-90, 90] at index {int(np.flatnonzero(~(np.abs(lat) <= 90))[0])}"
        )
    ipix = hgn.lonlat_to_healpix(lon, lat, order, ellipsoid="sphere")
    return ipix.astype(np.int64, copy=False)


def spatial_index(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The ``_healpix_29`` index (order-29 nested pixel) of each position."""
    return lonlat_to_pixel(lon, lat, SPATIAL_INDEX_ORDER)


def index_to_order(index29: np.ndarray, order: int) -> np.ndarray:
    """Pixel at ``order`` of order-29 indices."""
    return np.asarray(index29, dtype=np.int64) >> index29_shift(order)


def index29_shift(order: int | np.ndarray) -> int | np.ndarray:
    """Bits between pixels at ``order`` and the order-29 index, ``2 * (29 - order)`` (one per
    order for an array of orders)."""
    if np.ndim(order):
        return 2 * (SPATIAL_INDEX_ORDER - np.asarray(order, dtype=np.int64))
    return 2 * (SPATIAL_INDEX_ORDER - check_order(int(order)))


def index29_range(pixels: int | np.ndarray, orders: int | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half-open ranges ``[start, stop)`` of ``_healpix_29`` values inside pixels at ``orders``
    (one order, or one per pixel)."""
    shift = index29_shift(orders)
    pixels = np.asarray(pixels, dtype=np.int64)
    return pixels << shift, (pixels + 1) << shift


def neighbourhood(pixels: np.ndarray, order: int) -> np.ndarray:
    """Each pixel and its 8 neighbours, shape ``(n, 9)``; -1 where a neighbour does not exist."""
    import cdshealpix.nested as cdsn  # its 3x3 layout (healpix-geo's differs)

    return cdsn.neighbours(np.asarray(pixels, dtype=np.uint64), check_order(order)).astype(np.int64)


def to_parent(pixels: np.ndarray, order: int, parent_order: int) -> np.ndarray:
    """Parent pixels at ``parent_order`` (<= ``order``) of pixels at ``order``."""
    if parent_order > order:
        raise OptionError(f"parent order {parent_order} is finer than order {order}")
    return np.asarray(pixels, dtype=np.int64) >> (2 * (order - parent_order))


def children_range(pixel: int | np.ndarray, order: int, child_order: int) -> tuple[np.ndarray, np.ndarray]:
    """Half-open range ``[start, stop)`` of descendants at ``child_order`` of pixels at ``order``."""
    if child_order < order:
        raise OptionError(f"child order {child_order} is coarser than order {order}")
    shift = 2 * (child_order - order)
    pixel = np.asarray(pixel, dtype=np.int64)
    return pixel << shift, (pixel + 1) << shift


def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Bits of ``v`` moved to the even positions (nested indices interleave x and y this way)."""
    v = np.asarray(v, dtype=np.int64) & 0xFFFFFFFF
    for shift, mask in ((16, 0x0000FFFF0000FFFF), (8, 0x00FF00FF00FF00FF), (4, 0x0F0F0F0F0F0F0F0F)):
        v = (v | (v << shift)) & mask
    for shift, mask in ((2, 0x3333333333333333), (1, 0x5555555555555555)):
        v = (v | (v << shift)) & mask
    return v


def border_cells(order: int, pixel: int, border_order: int) -> np.ndarray:
    """Sorted descendants at ``border_order`` of one pixel that lie along its boundary (first or
    last row or column of the pixel's sub-grid)."""
    if border_order < order:
        raise OptionError(f"border order {border_order} is coarser than order {order}")
    side = 1 << (border_order - order)
    i = np.arange(side, dtype=np.int64)
    edge = np.full(side, side - 1, dtype=np.int64)
    zero = np.zeros(side, dtype=np.int64)
    x = np.concatenate([i, i, zero, edge])
    y = np.concatenate([zero, edge, i, i])
    local = _spread_bits(x) | (_spread_bits(y) << 1)
    return np.unique((np.int64(pixel) << (2 * (border_order - order))) + local)


def pixel_index29_range(order: int, pixel: int) -> tuple[int, int]:
    """Half-open range of ``_healpix_29`` values inside one pixel."""
    start, stop = index29_range(pixel, order)
    return int(start), int(stop)


def pixel_centers(pixels: np.ndarray, order: int) -> tuple[np.ndarray, np.ndarray]:
    """Centre lon (in [0, 360)) and lat (degrees) of nested pixels at ``order``."""
    pixels = np.asarray(pixels, dtype=np.uint64)
    if pixels.size == 0:
        return np.empty(0), np.empty(0)
    lon, lat = hgn.healpix_to_lonlat(pixels, check_order(order), ellipsoid="sphere")
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def pixel_vertices(pixels: np.ndarray, order: int, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Boundary vertices (lon, lat in degrees), shape ``(n, 4*step)``, counter-clockwise."""
    pixels = np.asarray(pixels, dtype=np.uint64)
    lon, lat = hgn.vertices(pixels, check_order(order), ellipsoid="sphere", step=step)
    return np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)


def neighbours(pixels: np.ndarray, order: int) -> np.ndarray:
    """The 8 neighbours of each pixel, shape ``(n, 8)``; -1 where a neighbour does not exist."""
    return np.delete(neighbourhood(pixels, order), 4, axis=1)  # column 4 is the pixel itself


def bad_coordinate_mask(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True where a position is bad input: NaN/inf, lon outside [-180, 360], lat outside [-90, 90]."""
    lon = np.asarray(lon, dtype=np.float64)
    lat = np.asarray(lat, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(lon) & np.isfinite(lat) & (lon >= -180) & (lon <= 360) & (lat >= -90) & (lat <= 90)
    return ~good


def describe_bad_coordinate(lon: float, lat: float, lon_name: str, lat_name: str) -> tuple[str, float]:
    """Name the column and value that make one position bad (for error messages)."""
    if not np.isfinite(lon) or not -180 <= lon <= 360:
        return lon_name, lon
    return lat_name, lat

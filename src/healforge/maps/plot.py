"""Fast map pictures: rasterise a pixel grid, inverse-project it and look the cells up.

No polygon is drawn per cell: every image pixel is turned into lon/lat by the inverse projection,
into a nested cell with cdshealpix, and into a value by a binary search in the map's sorted
``cell_ids``. Cells without data get a colour of their own (light grey), distinct from the colour
of the lowest value; pixels off the globe stay white.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.maps.table import CELL_IDS, MapError, map_metadata
from healforge.pixel import lonlat_to_pixel
from healforge.pixel.latitude import geodetic_to_authalic

PROJECTIONS = ("mollweide", "polar-north", "polar-south", "orthographic")
EMPTY_COLOUR = (0.86, 0.86, 0.86, 1.0)
ALT_EMPTY_COLOUR = (1.0, 0.75, 0.9, 1.0)
OFF_GLOBE = (1.0, 1.0, 1.0, 0.0)


def _mollweide(x: np.ndarray, y: np.ndarray, lon0: float):
    r2 = np.sqrt(2.0)
    valid = (x / (2 * r2)) ** 2 + (y / r2) ** 2 <= 1.0
    theta = np.arcsin(np.clip(y / r2, -1, 1))
    lat = np.degrees(np.arcsin(np.clip((2 * theta + np.sin(2 * theta)) / np.pi, -1, 1)))
    with np.errstate(divide="ignore", invalid="ignore"):
        lon = lon0 + np.degrees(np.pi * x / (2 * r2 * np.cos(theta)))
    valid &= np.abs(lon - lon0) <= 180.0
    return lon, lat, valid


def _stereo(x: np.ndarray, y: np.ndarray, lon0: float, north: bool, rho_max: float):
    rho = np.hypot(x, y)
    valid = rho <= rho_max
    colat = np.degrees(2 * np.arctan(rho / 2.0))
    if north:
        lat = 90.0 - colat
        lon = lon0 + np.degrees(np.arctan2(x, -y))
    else:
        lat = colat - 90.0
        lon = lon0 + np.degrees(np.arctan2(x, y))
    return lon, lat, valid


def _orthographic(x: np.ndarray, y: np.ndarray, lon0: float, lat0: float):
    rho = np.hypot(x, y)
    valid = rho <= 1.0
    c = np.arcsin(np.clip(rho, 0, 1))
    phi0 = np.radians(lat0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(rho > 0, y * np.sin(c) * np.cos(phi0) / rho, 0.0)
    lat = np.degrees(np.arcsin(np.clip(np.cos(c) * np.sin(phi0) + s, -1, 1)))
    lon = lon0 + np.degrees(
        np.arctan2(x * np.sin(c), rho * np.cos(c) * np.cos(phi0) - y * np.sin(c) * np.sin(phi0))
    )
    return lon, lat, valid


def raster_lonlat(
    projection: str,
    width: int,
    height: int | None = None,
    center: tuple[float, float] | None = None,
    bounding_lat: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Lon/lat (degrees) of every image pixel, the mask of pixels on the globe, and the shape.

    ``bounding_lat`` is the latitude at the edge of a polar view (default 0: a hemisphere).
    """
    if projection not in PROJECTIONS:
        raise MapError(f"unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    lon0, lat0 = center if center is not None else (0.0, 90.0 if projection == "polar-north" else 0.0)
    if projection == "mollweide":
        height = height or width // 2
        hx, hy = 2 * np.sqrt(2.0), np.sqrt(2.0)
    elif projection.startswith("polar"):
        height = height or width
        edge = 0.0 if bounding_lat is None else abs(float(bounding_lat))
        hx = hy = 2 * np.tan(np.radians(90.0 - edge) / 2)
    else:
        height = height or width
        hx = hy = 1.0
    # pixel centres, top row first
    x = (np.arange(width) + 0.5) / width * 2 * hx - hx
    y = hy - (np.arange(height) + 0.5) / height * 2 * hy
    xx, yy = np.meshgrid(x, y)
    if projection == "mollweide":
        lon, lat, valid = _mollweide(xx, yy, lon0)
    elif projection == "polar-north":
        lon, lat, valid = _stereo(xx, yy, lon0, True, hx)
    elif projection == "polar-south":
        lon, lat, valid = _stereo(xx, yy, lon0, False, hx)
    else:
        lon, lat, valid = _orthographic(xx, yy, lon0, lat0)
    return lon, lat, valid, (height, width)


def lookup_values(
    cell_ids: np.ndarray,
    values: np.ndarray,
    order: int,
    lon: np.ndarray,
    lat: np.ndarray,
    latitude: str = "spherical",
) -> tuple[np.ndarray, np.ndarray]:
    """Values of the cells holding each lon/lat and a mask of points whose cell is in the map."""
    lon = np.mod(np.asarray(lon, dtype=np.float64), 360.0)
    lon[lon >= 360.0] = 0.0
    lat = np.clip(np.asarray(lat, dtype=np.float64), -90.0, 90.0)
    if latitude == "authalic":
        lat = geodetic_to_authalic(lat)
    cells = lonlat_to_pixel(lon, lat, order)
    if cell_ids.size == 0:
        return np.full(cells.shape, np.nan), np.zeros(cells.shape, dtype=bool)
    if cell_ids.size == 12 * 4**order:  # full sky: cell_ids is 0..npix-1, no search needed
        idx = cells
    else:
        idx = np.minimum(np.searchsorted(cell_ids, cells), cell_ids.size - 1)
    found = cell_ids[idx] == cells
    out = np.where(found, values[idx], np.nan)
    return out, found & np.isfinite(out)


def _load(source: Any, var: str, order: int | None, storage_options) -> tuple[pa.Table, dict[str, Any]]:
    from healforge.maps.parquet import read_map

    if hasattr(source, "data_vars"):  # an xarray Dataset of one order
        meta = dict(source.attrs.get("healforge") or {})
        if "order" not in meta:
            meta["order"] = int(
                source[CELL_IDS].attrs.get("level", source.attrs.get("dggs", {}).get("refinement_level"))
            )
        meta.setdefault("latitude", "authalic" if "ellipsoid" in source[CELL_IDS].attrs else "spherical")
        units = source[var].attrs.get("units")
        if units:
            meta.setdefault("units", {})[var] = units
        table = pa.table(
            {
                CELL_IDS: np.asarray(source[CELL_IDS].values, dtype=np.int64),
                var: np.asarray(source[var].values),
            }
        )
        return table, meta
    try:
        table = read_map(source, order, variables=[var], storage_options=storage_options)
    except KeyError:
        raise MapError(f"variable {var!r} not in the map") from None
    return table, map_metadata(table)


def _units(meta: Mapping[str, Any], var: str) -> str | None:
    units = meta.get("units") or {}
    if var in units:
        return units[var]
    column, _, stat = var.rpartition("_")
    if column in units and stat != "count":
        return units[column]
    return None


def plot_map(
    map_or_path: Any,
    var: str,
    order: int | None = None,
    *,
    projection: str = "mollweide",
    center: tuple[float, float] | None = None,
    cmap: str = "viridis",
    vrange: tuple[float, float] | None = None,
    bounding_lat: float | None = None,
    width: int = 2000,
    title: str | None = None,
    out: str | os.PathLike | None = "map.png",
    dpi: int = 150,
    storage_options: dict[str, Any] | None = None,
):
    """Plot one variable of a map to a PNG.

    Parameters
    ----------
    map_or_path
        A map table, a pyramid dict, an xarray Dataset of one order, or a Zarr/Parquet map path.
    var
        Variable to show.
    order
        Order of a pyramid (finest by default).
    projection
        ``mollweide``, ``polar-north``, ``polar-south`` or ``orthographic``.
    center
        ``(lon, lat)`` of the view centre (lat used by ``orthographic`` only).
    cmap, vrange
        Colour map and ``(low, high)`` value range (2nd and 98th percentiles by default).
    bounding_lat
        Edge latitude of polar views; by default fitted to the data (at most a hemisphere).
    width
        Image raster width in pixels (height follows the projection).
    out
        PNG path; ``None`` returns the figure without saving.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import colors

    table, meta = _load(map_or_path, var, order, storage_options)
    if var not in table.schema.names:
        raise MapError(f"variable {var!r} not in the map; it has {table.schema.names[1:]}")
    order = int(meta["order"])
    cell_ids = table.column(CELL_IDS).to_numpy()
    values = table.column(var).to_numpy(zero_copy_only=False).astype(np.float64)
    latitude = meta.get("latitude", "spherical")

    if projection.startswith("polar") and bounding_lat is None and cell_ids.size:
        from healforge.pixel import pixel_centers

        _, clat = pixel_centers(cell_ids[:: max(1, cell_ids.size // 200_000)], order)
        edge = clat.min() if projection == "polar-north" else -clat.max()
        bounding_lat = float(np.clip(np.floor(edge - 2.0), 0.0, 85.0))
    lon, lat, valid, shape = raster_lonlat(projection, width, center=center, bounding_lat=bounding_lat)
    pix_values = np.full(shape, np.nan)
    has = np.zeros(shape, dtype=bool)
    v, f = lookup_values(cell_ids, values, order, lon[valid], lat[valid], latitude)
    pix_values[valid] = v
    has[valid] = f

    finite = values[np.isfinite(values)]
    if vrange is None:
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = vrange
    norm = colors.Normalize(vmin=lo, vmax=hi)
    cm = matplotlib.colormaps[cmap]
    empty = np.array(EMPTY_COLOUR)
    samples = np.asarray(cm(np.linspace(0.0, 1.0, 32)))[:, :3]
    if np.ptp(samples, axis=1).max() < 0.05 or np.abs(samples - empty[:3]).sum(axis=1).min() < 0.3:
        empty = np.array(ALT_EMPTY_COLOUR)  # grey-scale colour map: grey would pass for a value
    rgba = np.empty((*shape, 4))
    rgba[:] = OFF_GLOBE
    rgba[valid & ~has] = empty
    rgba[has] = cm(norm(pix_values[has]))

    aspect = shape[1] / shape[0]
    fig = plt.figure(figsize=(10, 10 / aspect + 1.3), dpi=dpi)
    ax = fig.add_axes((0.02, 0.16, 0.96, 0.76))
    ax.imshow(rgba, interpolation="nearest", origin="upper")
    ax.set_axis_off()
    cax = fig.add_axes((0.2, 0.08, 0.6, 0.03))
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cm)
    bar = fig.colorbar(sm, cax=cax, orientation="horizontal", extend="both")
    units = _units(meta, var)
    bar.set_label(f"{var} [{units}]" if units else var)
    if title is None:
        name = meta.get("name") or meta.get("title")
        title = f"{name}: {var}" if name else var
        title += f" (HEALPix order {order}, {projection})"
    fig.suptitle(title)
    fig.text(0.98, 0.01, "\u25a0", ha="right", va="bottom", fontsize=12, color=tuple(empty))
    fig.text(0.955, 0.012, "no data", ha="right", va="bottom", fontsize=8, color="0.3")
    if out is not None:
        fig.savefig(str(out), dpi=dpi)
        plt.close(fig)
        return str(out)
    return fig

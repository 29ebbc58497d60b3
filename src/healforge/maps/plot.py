"""Fast map pictures: rasterise a pixel grid, inverse-project it and look the cells up.

No polygon is drawn per cell: every image pixel is turned into lon/lat by the inverse projection,
into a nested cell with cdshealpix, and into a value by a binary search in the map's sorted
``cell_ids``. Cells without data get a colour of their own (light grey), distinct from the colour
of the lowest value; pixels off the globe stay white.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.maps.projections import raster_lonlat
from healforge.maps.table import CELL_IDS, MapError, map_metadata
from healforge.maps.views import FRAMES, PROJECTIONS, REGIONAL, SCALES
from healforge.pixel import lonlat_to_pixel
from healforge.pixel.latitude import geodetic_to_authalic

EMPTY_COLOUR = (0.86, 0.86, 0.86, 1.0)
ALT_EMPTY_COLOUR = (1.0, 0.75, 0.9, 1.0)
OFF_GLOBE = (1.0, 1.0, 1.0, 0.0)


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


def _nice_step(width_deg: float) -> float:
    """A graticule spacing giving about four lines across ``width_deg`` degrees."""
    for step in (30, 15, 10, 5, 2, 1, 0.5, 0.25, 0.1):
        if width_deg / step >= 3.5:
            return float(step)
    return 0.05


def _lon_label(value: float, frame: str) -> str:
    lon = ((value + 180.0) % 360.0) - 180.0
    if frame == "sky":
        return f"{lon % 360:g}\u00b0"
    return f"{abs(lon):g}\u00b0{'E' if lon > 0 else 'W' if lon < 0 else ''}"


def _lat_label(value: float, frame: str) -> str:
    if frame == "sky":
        return f"{value:+g}\u00b0" if value else "0\u00b0"
    return f"{abs(value):g}\u00b0{'N' if value > 0 else 'S' if value < 0 else ''}"


def _anchor(field: np.ndarray, valid: np.ndarray, level: float, choose) -> tuple[float, float] | None:
    """Where to label the contour ``field == level``: among the pixels nearest to it, the one
    ``choose(rows, cols)`` (an index into them) picks; ``None`` when it is not in the view."""
    diff = np.where(valid, np.abs(field - level), np.inf).ravel()
    k = min(200, diff.size - 1)
    near = np.argpartition(diff, k)[:k]
    near = near[np.isfinite(diff[near]) & (diff[near] < 1.0)]
    if not near.size:
        return None
    rows, cols = np.unravel_index(near, field.shape)
    i = choose(rows, cols)
    return float(cols[i]), float(rows[i])


def _graticule(ax, lon, lat, valid, lon0: float, step: float, frame: str, projection: str) -> None:
    """Meridians and parallels every ``step`` degrees (contours of the pixels' lon/lat), labelled
    where they read well: parallels at their leftmost point, meridians at the equator (whole
    sphere), the rim (polar views) or the bottom edge (regional views)."""
    from matplotlib import patheffects

    rel = ((lon - lon0 + 180.0) % 360.0) - 180.0
    rel = np.where(valid & (np.abs(rel) < 180.0 - step / 2), rel, np.nan)  # not across the seam
    lat_m = np.where(valid, lat, np.nan)
    lat_step = step
    if projection.startswith("polar") and valid.any():
        lat_step = min(step, _nice_step(90.0 - float(np.min(np.abs(lat[valid])))))
    style = {"colors": "k", "linewidths": 0.6, "alpha": 0.45}
    pole = -90.0 if projection == "polar-south" else 90.0
    if projection.startswith("polar"):
        pick = lambda r, c: int(np.argmax(np.abs(lat[r, c] - pole)))  # noqa: E731
    elif projection in REGIONAL:
        pick = lambda r, c: int(np.argmax(r))  # noqa: E731
    else:
        pick = lambda r, c: int(np.argmin(np.abs(lat[r, c])))  # noqa: E731
    meridians = list(np.arange(-180 + step, 180, step))
    parallels = list(np.arange(-90 + lat_step, 90, lat_step))
    for field, levels, choose, fmt in (
        (rel, meridians, pick, lambda v: _lon_label(v + lon0, frame)),
        (lat_m, parallels, lambda r, c: int(np.argmin(c)), lambda v: _lat_label(v, frame)),
    ):
        if not levels:
            continue
        cs = ax.contour(field, levels=levels, **style)
        spots = [p for p in (_anchor(field, valid, v, choose) for v in cs.levels) if p is not None]
        if spots:
            for text in ax.clabel(cs, fontsize=7, fmt=fmt, inline=True, manual=spots):
                text.set_color("0.1")
                text.set_path_effects([patheffects.withStroke(linewidth=2.5, foreground="white")])


def _norm(values: np.ndarray, scale: str, vrange):
    """The colour normalisation of a panel and its colour bar's ticks (``None``: automatic)."""
    from matplotlib import colors

    finite = values[np.isfinite(values)]
    if scale == "log":
        positive = finite[finite > 0]
        if not positive.size:
            raise MapError("log colour scale: the variable has no positive value")
        lo, hi = vrange if vrange is not None else np.percentile(positive, [2, 98])
        lo = max(lo, positive.min())
        return colors.LogNorm(vmin=lo, vmax=max(hi, lo * 10)), None
    if scale == "percentile":
        if finite.size < 2:
            return colors.Normalize(0.0, 1.0), None
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, 257)))
        if edges.size < 2:
            edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
        ticks = np.quantile(finite, [0.0, 0.25, 0.5, 0.75, 1.0])
        return colors.BoundaryNorm(edges, 256), ticks
    if vrange is None:
        lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
    else:
        lo, hi = vrange
    return colors.Normalize(vmin=lo, vmax=hi), None


def plot_map(
    map_or_path: Any,
    var: str | Sequence[str],
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
    frame: str | None = None,
    scale: str = "linear",
    extent: float | None = None,
    graticule: float | None = None,
):
    """Plot one variable of a map, or several side by side, to a PNG.

    Parameters
    ----------
    map_or_path
        A map table, a pyramid dict, an xarray Dataset of one order, or a Zarr/Parquet map path.
    var
        Variable to show, or a list of them (one panel each, each with its colour bar).
    order
        Order of a pyramid (finest by default).
    projection
        ``mollweide``, ``polar-north``, ``polar-south``, ``orthographic``, or the regional
        ``gnomonic`` and ``cartesian`` (``center`` and ``extent`` choose the region).
    center
        ``(lon, lat)`` of the view centre (lat used by ``orthographic`` and regional views).
    cmap, vrange, scale
        Colour map, ``(low, high)`` value range (2nd and 98th percentiles by default) and
        scaling: ``linear``, ``log`` or ``percentile`` (colours by rank; ticks at the quartiles).
    bounding_lat
        Edge latitude of polar views; by default fitted to the data (at most a hemisphere).
    width
        Image raster width in pixels of each panel (height follows the projection).
    frame
        ``sky`` (longitude/RA increasing to the left) or ``body`` (east to the right); default:
        the map's ``frame`` metadata, else ``body``. Written in the PNG's metadata.
    extent
        Width in degrees of a regional view (default 20).
    graticule
        Spacing in degrees of the labelled meridians and parallels (default: 30 for whole-sphere
        views, about four lines across regional ones; 0: none).
    out
        PNG path; ``None`` returns the figure without saving.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [var] if isinstance(var, str) else list(var)
    if not names:
        raise MapError("no variable to plot")
    if scale not in SCALES:
        raise MapError(f"unknown colour scale {scale!r}; expected one of {', '.join(SCALES)}")
    loaded = [_load(map_or_path, v, order, storage_options) for v in names]
    for (table, _), v in zip(loaded, names, strict=True):
        if v not in table.schema.names:
            raise MapError(f"variable {v!r} not in the map; it has {table.schema.names[1:]}")
    meta = loaded[0][1]
    order = int(meta["order"])
    frame = frame or meta.get("frame") or "body"
    if frame not in FRAMES:
        raise MapError(f"unknown frame {frame!r}; expected one of {', '.join(FRAMES)}")
    cell_ids = loaded[0][0].column(CELL_IDS).to_numpy()
    latitude = meta.get("latitude", "spherical")
    if projection.startswith("polar") and bounding_lat is None and cell_ids.size:
        from healforge.pixel import pixel_centers

        _, clat = pixel_centers(cell_ids[:: max(1, cell_ids.size // 200_000)], order)
        edge = clat.min() if projection == "polar-north" else -clat.max()
        bounding_lat = float(np.clip(np.floor(edge - 2.0), 0.0, 85.0))
    lon, lat, valid, shape = raster_lonlat(
        projection, width, center=center, bounding_lat=bounding_lat, extent=extent, frame=frame
    )
    if graticule is None:
        graticule = _nice_step(extent or 20.0) if projection in REGIONAL else 30.0
    lon0 = center[0] if center is not None else 0.0

    n = len(names)
    cols = min(n, 2)
    rows = -(-n // cols)
    aspect = shape[1] / shape[0]
    fig = plt.figure(figsize=(10 * cols, (10 / aspect + 1.3) * rows), dpi=dpi)
    for i, ((table, tmeta), v) in enumerate(zip(loaded, names, strict=True)):
        r, c = divmod(i, cols)
        x0, y0 = c / cols, 1 - (r + 1) / rows
        ax = fig.add_axes((x0 + 0.02 / cols, y0 + 0.16 / rows, 0.96 / cols, 0.74 / rows))
        cax = fig.add_axes((x0 + 0.2 / cols, y0 + 0.08 / rows, 0.6 / cols, 0.025 / rows))
        values = table.column(v).to_numpy(zero_copy_only=False).astype(np.float64)
        ids = table.column(CELL_IDS).to_numpy()
        pix, has = np.full(shape, np.nan), np.zeros(shape, dtype=bool)
        got, found = lookup_values(ids, values, order, lon[valid], lat[valid], latitude)
        pix[valid], has[valid] = got, found
        norm, ticks = _norm(values, scale, vrange)
        empty = _draw(ax, cax, fig, pix, has, valid, shape, norm, ticks, cmap, v, tmeta)
        if graticule:
            _graticule(ax, lon, lat, valid, lon0, float(graticule), frame, projection)
        if n > 1:
            ax.set_title(v, fontsize=10)
    if title is None:
        name = meta.get("name") or meta.get("title")
        what = ", ".join(names)
        title = f"{name}: {what}" if name else what
        orientation = "RA increasing to the left" if frame == "sky" else "east to the right"
        title += f" (HEALPix order {order}, {projection}, {orientation})"
    fig.suptitle(title)
    fig.text(0.98, 0.01, "\u25a0", ha="right", va="bottom", fontsize=12, color=tuple(empty))
    fig.text(0.955, 0.012, "no data", ha="right", va="bottom", fontsize=8, color="0.3")
    if out is not None:
        info = {"frame": frame, "projection": projection, "scale": scale, "order": str(order)}
        fig.savefig(str(out), dpi=dpi, metadata={"Description": json.dumps(info)})
        plt.close(fig)
        return str(out)
    return fig


def _draw(ax, cax, fig, pix, has, valid, shape, norm, ticks, cmap: str, var: str, meta) -> np.ndarray:
    """One panel's image and colour bar; returns the no-data colour used."""
    import matplotlib

    cm = matplotlib.colormaps[cmap]
    empty = np.array(EMPTY_COLOUR)
    samples = np.asarray(cm(np.linspace(0.0, 1.0, 32)))[:, :3]
    if np.ptp(samples, axis=1).max() < 0.05 or np.abs(samples - empty[:3]).sum(axis=1).min() < 0.3:
        empty = np.array(ALT_EMPTY_COLOUR)  # grey-scale colour map: grey would pass for a value
    rgba = np.empty((*shape, 4))
    rgba[:] = OFF_GLOBE
    rgba[valid & ~has] = empty
    with np.errstate(invalid="ignore", divide="ignore"):
        rgba[has] = cm(norm(np.ma.masked_invalid(pix[has])))
    ax.imshow(rgba, interpolation="nearest", origin="upper")
    ax.set_axis_off()
    sm = matplotlib.cm.ScalarMappable(norm=norm, cmap=cm)
    bar = fig.colorbar(sm, cax=cax, orientation="horizontal", extend="both" if ticks is None else "neither")
    if ticks is not None:
        bar.set_ticks(ticks)
        bar.set_ticklabels([f"{t:.4g}" for t in ticks])
    units = _units(meta, var)
    label = f"{var} [{units}]" if units else var
    if ticks is not None:
        label += " (colours by percentile; ticks at the quartiles)"
    bar.set_label(label)
    return empty


__all__ = ["EMPTY_COLOUR", "PROJECTIONS", "lookup_values", "plot_map", "raster_lonlat"]

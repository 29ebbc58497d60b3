"""GeoTIFF rasters of a map for GIS users: a region, a resolution and a projection of their choice.

Each output pixel takes the value of the cell under its centre (``nearest``) or the mean of the
cells under ``supersample`` x ``supersample`` points spread over it (``area``: an area-weighted
mean, to the sub-pixel). Pixel centres are carried to longitude/latitude with pyproj; maps made
with authalic latitude are looked up at the authalic latitude of the geodetic one, as they were
built. Pixels over no cell hold the nodata value (NaN). The CRS, the transform, the band names
and the map's provenance are written in the file; GDAL and rasterio read it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.maps.table import CELL_IDS, MapError, map_metadata
from healforge.pixel import lonlat_to_pixel, pixel_centers, wrap_lon
from healforge.pixel.latitude import authalic_to_geodetic, geodetic_to_authalic

RESAMPLING = ("nearest", "area")
#: Mean radius of the authalic sphere of WGS84 (metres): the size of a cell in projected units.
AUTHALIC_RADIUS_M = 6_371_007.2


def _require_rasterio():
    try:
        import rasterio
    except ImportError:  # pragma: no cover - depends on the installation
        raise MapError("GeoTIFF export needs rasterio: pip install rasterio") from None
    return rasterio


def default_resolution(order: int, geographic: bool) -> float:
    """About one cell: its side in degrees (geographic CRS) or in metres."""
    side_rad = math.sqrt(4 * math.pi / (12 * 4**order))
    return math.degrees(side_rad) if geographic else side_rad * AUTHALIC_RADIUS_M


def _sample(ids: np.ndarray, columns: Sequence[np.ndarray], lon, lat, order: int, authalic: bool):
    """Values of each of ``columns`` (float64, aligned with the map's sorted cell ``ids``) at
    lon/lat (degrees, geodetic), NaN off the map."""
    ok = np.isfinite(lon) & np.isfinite(lat) & (np.abs(lat) <= 90)
    lat_ = np.where(ok, lat, 0.0)
    if authalic:
        lat_ = geodetic_to_authalic(lat_)
    cells = lonlat_to_pixel(wrap_lon(np.where(ok, lon, 0.0)), lat_, order)
    if not ids.size:
        return [np.full(cells.shape, np.nan) for _ in columns]
    pos = np.minimum(np.searchsorted(ids, cells), ids.size - 1)
    hit = ok & (ids[pos] == cells)
    return [np.where(hit, vals[pos], np.nan) for vals in columns]


def export_geotiff(
    table: pa.Table,
    output: str | os.PathLike,
    *,
    variables: Sequence[str] | None = None,
    crs: str = "EPSG:4326",
    bounds: Sequence[float] | None = None,
    resolution: float | None = None,
    resampling: str = "nearest",
    supersample: int = 4,
    provenance: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write one order of a map as a GeoTIFF, one float32 band per variable.

    Parameters
    ----------
    table
        A map table (one order).
    variables
        Variables to write (default: every one).
    crs
        Output CRS (anything pyproj reads: ``"EPSG:3031"`` polar stereographic south, ...).
    bounds
        ``xmin ymin xmax ymax`` in the CRS's units (default: the map's cells, projected).
    resolution
        Pixel size in the CRS's units (default: about one cell).
    resampling
        ``"nearest"`` (the cell under each pixel centre) or ``"area"`` (mean over
        ``supersample`` x ``supersample`` points of each pixel).

    Returns
    -------
    dict
        ``width``, ``height``, ``transform`` (GDAL order), ``crs``, ``bands``.
    """
    rasterio = _require_rasterio()
    from pyproj import CRS, Transformer
    from rasterio.transform import from_origin

    if resampling not in RESAMPLING:
        raise MapError(f"resampling must be one of {', '.join(RESAMPLING)}; got {resampling!r}")
    meta = map_metadata(table)
    order = int(meta["order"])
    authalic = meta.get("latitude") == "authalic"
    names = [n for n in table.column_names if n != CELL_IDS]
    variables = list(variables or names)
    unknown = [v for v in variables if v not in names]
    if unknown:
        raise MapError(f"variable(s) {unknown} not in the map; it holds {', '.join(names)}")
    target = CRS.from_user_input(crs)
    to_lonlat = Transformer.from_crs(target, "EPSG:4326", always_xy=True)
    if bounds is None:
        clon, clat = pixel_centers(table.column(CELL_IDS).to_numpy(), order)
        if authalic:
            clat = authalic_to_geodetic(clat)
        x, y = Transformer.from_crs("EPSG:4326", target, always_xy=True).transform(
            np.where(clon > 180, clon - 360, clon), clat
        )
        good = np.isfinite(x) & np.isfinite(y)
        if not good.any():
            raise MapError("no cell of the map projects into the CRS: give --bounds")
        bounds = (x[good].min(), y[good].min(), x[good].max(), y[good].max())
    xmin, ymin, xmax, ymax = map(float, bounds)
    if not (xmax > xmin and ymax > ymin):
        raise MapError(f"bounds must be xmin ymin xmax ymax with xmin < xmax, ymin < ymax; got {bounds}")
    res = float(resolution or default_resolution(order, target.is_geographic))
    width, height = max(1, math.ceil((xmax - xmin) / res)), max(1, math.ceil((ymax - ymin) / res))
    if width * height > 400_000_000:
        raise MapError(f"a {width} x {height} raster is too large: give a coarser --resolution")
    k = supersample if resampling == "area" else 1
    offsets = (np.arange(k) + 0.5) / k
    ids = table.column(CELL_IDS).to_numpy()
    columns = [table.column(v).to_numpy(zero_copy_only=False).astype(np.float64) for v in variables]
    sums = [np.zeros((height, width)) for _ in variables]
    hits = [np.zeros((height, width)) for _ in variables]
    rows = np.arange(height)
    for dy in offsets:
        for dx in offsets:
            xs = xmin + (np.arange(width) + dx) * res
            ys = ymax - (rows + dy) * res
            gx, gy = np.meshgrid(xs, ys)
            lon, lat = to_lonlat.transform(gx.ravel(), gy.ravel())
            for i, vals in enumerate(
                _sample(ids, columns, np.asarray(lon), np.asarray(lat), order, authalic)
            ):
                vals = vals.reshape(height, width)
                good = np.isfinite(vals)
                sums[i][good] += vals[good]
                hits[i][good] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        bands = [np.where(h > 0, s / h, np.nan).astype(np.float32) for s, h in zip(sums, hits, strict=True)]
    transform = from_origin(xmin, ymax, res, res)
    with rasterio.open(
        os.fspath(output),
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=len(bands),
        dtype="float32",
        crs=target.to_wkt(),
        transform=transform,
        nodata=float("nan"),
        compress="deflate",
    ) as dst:
        for i, (name, band) in enumerate(zip(variables, bands, strict=True), start=1):
            dst.write(band, i)
            dst.set_band_description(i, name)
        dst.update_tags(
            healforge=json.dumps(
                {
                    **(provenance or {}),
                    "order": order,
                    "resampling": resampling,
                    "latitude": meta.get("latitude"),
                }
            )
        )
    return {
        "width": width,
        "height": height,
        "transform": tuple(transform)[:6],
        "crs": target.to_string(),
        "bands": variables,
    }

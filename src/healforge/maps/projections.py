"""Inverse map projections of image pixels: the lon/lat (degrees) under every pixel of a view.

Whole-sphere views (Mollweide, orthographic), polar stereographic views and regional views
(gnomonic and Cartesian longitude/latitude) round a centre with a width in degrees. In the
``sky`` frame the image is mirrored so that longitude (right ascension) increases to the left,
as astronomers draw the sky; the ``body`` frame draws a planet as seen from outside.
"""

from __future__ import annotations

import numpy as np

from healforge.maps.table import MapError
from healforge.maps.views import FRAMES, PROJECTIONS


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


def _azimuthal(x: np.ndarray, y: np.ndarray, c: np.ndarray, lon0: float, lat0: float):
    """Lon/lat of plane points at distance angle ``c`` from the centre (azimuthal projections)."""
    rho = np.hypot(x, y)
    phi0 = np.radians(lat0)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.where(rho > 0, y * np.sin(c) * np.cos(phi0) / rho, 0.0)
    lat = np.degrees(np.arcsin(np.clip(np.cos(c) * np.sin(phi0) + s, -1, 1)))
    lon = lon0 + np.degrees(
        np.arctan2(x * np.sin(c), rho * np.cos(c) * np.cos(phi0) - y * np.sin(c) * np.sin(phi0))
    )
    return lon, lat


def _orthographic(x: np.ndarray, y: np.ndarray, lon0: float, lat0: float):
    rho = np.hypot(x, y)
    lon, lat = _azimuthal(x, y, np.arcsin(np.clip(rho, 0, 1)), lon0, lat0)
    return lon, lat, rho <= 1.0


def _gnomonic(x: np.ndarray, y: np.ndarray, lon0: float, lat0: float):
    lon, lat = _azimuthal(x, y, np.arctan(np.hypot(x, y)), lon0, lat0)
    return lon, lat, np.ones(x.shape, dtype=bool)


def raster_lonlat(
    projection: str,
    width: int,
    height: int | None = None,
    center: tuple[float, float] | None = None,
    bounding_lat: float | None = None,
    extent: float | None = None,
    frame: str = "body",
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """Lon/lat (degrees) of every image pixel, the mask of pixels on the globe, and the shape.

    ``bounding_lat`` is the latitude at the edge of a polar view (default 0: a hemisphere);
    ``extent`` the width in degrees of a regional view (default 20) round ``center``.
    """
    if projection not in PROJECTIONS:
        raise MapError(f"unknown projection {projection!r}; expected one of {', '.join(PROJECTIONS)}")
    if frame not in FRAMES:
        raise MapError(f"unknown frame {frame!r}; expected one of {', '.join(FRAMES)}")
    lon0, lat0 = center if center is not None else (0.0, 90.0 if projection == "polar-north" else 0.0)
    width_deg = float(extent or 20.0)
    if not 0 < width_deg <= (170.0 if projection == "gnomonic" else 360.0):
        raise MapError(
            f"extent must be in (0, 170] degrees for gnomonic, (0, 360] for cartesian; got {extent}"
        )
    if projection == "gnomonic":
        height = height or width
        hx = np.tan(np.radians(width_deg) / 2)
        hy = hx * height / width
    elif projection == "cartesian":
        height = height or max(1, int(round(width * min(1.0, 180.0 / width_deg))))
        hx, hy = width_deg / 2, width_deg / 2 * height / width
    elif projection == "mollweide":
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
    if frame == "sky":  # seen from inside: longitude increases to the left
        xx = -xx
    if projection == "gnomonic":
        lon, lat, valid = _gnomonic(xx, yy, lon0, lat0)
    elif projection == "cartesian":
        lon, lat = lon0 + xx, lat0 + yy
        valid = np.abs(lat) <= 90.0
    elif projection == "mollweide":
        lon, lat, valid = _mollweide(xx, yy, lon0)
    elif projection == "polar-north":
        lon, lat, valid = _stereo(xx, yy, lon0, True, hx)
    elif projection == "polar-south":
        lon, lat, valid = _stereo(xx, yy, lon0, False, hx)
    else:
        lon, lat, valid = _orthographic(xx, yy, lon0, lat0)
    return lon, lat, valid, (height, width)

"""Latitudes on the WGS84 ellipsoid: geodetic <-> authalic (the sphere of equal area that HEALPix
cells of geodetic data are defined on), and the latitude and longitude conventions users choose."""

from __future__ import annotations

import numpy as np

#: Latitude conventions of an assignment: the latitudes as given, or geodetic made authalic.
LATITUDES = ("spherical", "authalic")
#: Longitude conventions recorded with a map.
LON_CONVENTIONS = ("0_360", "-180_180")
#: WGS84, used with authalic latitude, with xdggs' own attribute names (the ``cell_ids``
#: coordinate's ``ellipsoid``, which xdggs 0.6 reads).
WGS84 = {"name": "WGS84", "semimajor_axis": 6378137.0, "inverse_flattening": 298.257223563}
#: The same ellipsoid spelled as the Zarr DGGS convention (v1) spells it, for its ``dggs`` block.
WGS84_DGGS = {"name": "WGS84", "semi_major_axis": 6378137.0, "inverse_flattening": 298.257223563}


def _authalic_constants(inverse_flattening: float):
    f = 1.0 / inverse_flattening
    e2 = f * (2 - f)
    e = np.sqrt(e2)
    return e2, e


def _q(sinphi: np.ndarray, e2: float, e: float) -> np.ndarray:
    es = e * sinphi
    return (1 - e2) * (sinphi / (1 - e2 * sinphi**2) - np.log((1 - es) / (1 + es)) / (2 * e))


def geodetic_to_authalic(
    lat: np.ndarray, inverse_flattening: float = WGS84["inverse_flattening"]
) -> np.ndarray:
    """Authalic latitude (degrees) of geodetic latitudes (degrees) on an ellipsoid (WGS84)."""
    e2, e = _authalic_constants(inverse_flattening)
    qp = _q(np.float64(1.0), e2, e)
    ratio = _q(np.sin(np.radians(lat)), e2, e) / qp
    return np.degrees(np.arcsin(np.clip(ratio, -1.0, 1.0)))


def authalic_to_geodetic(
    beta: np.ndarray, inverse_flattening: float = WGS84["inverse_flattening"]
) -> np.ndarray:
    """Geodetic latitude (degrees) of authalic latitudes (degrees); series then Newton steps."""
    e2, e = _authalic_constants(inverse_flattening)
    qp = _q(np.float64(1.0), e2, e)
    b = np.radians(np.asarray(beta, dtype=np.float64))
    phi = (
        b
        + (e2 / 3 + 31 * e2**2 / 180 + 517 * e2**3 / 5040) * np.sin(2 * b)
        + (23 * e2**2 / 360 + 251 * e2**3 / 3780) * np.sin(4 * b)
        + (761 * e2**3 / 45360) * np.sin(6 * b)
    )
    target = qp * np.sin(b)
    for _ in range(2):
        s = np.sin(phi)
        c = np.cos(phi)
        ok = np.abs(c) > 1e-12
        dq = 2 * (1 - e2) * c / (1 - e2 * s**2) ** 2  # dq/dphi
        step = np.where(ok, (_q(s, e2, e) - target) / np.where(ok, dq, 1.0), 0.0)
        phi = phi - step
    return np.degrees(phi)

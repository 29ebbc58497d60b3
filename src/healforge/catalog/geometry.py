"""Angular distance from points to HEALPix pixel boundaries.

HEALPix pixel edges are not great circles. A boundary is sampled with ``cdshealpix.nested.vertices``
(every sample lies exactly on the true edge) and the samples are joined by great-circle arcs; the
distance to that polyline differs from the distance to the true edge by at most the sagitta of one
arc, ``k L**2 / 8`` for an arc of length ``L`` on an edge of geodesic curvature ``k``.
:func:`within_radius` measures against arcs about as long as the radius, keeps the pairs whose
distance is within that bound of the radius, and re-measures those with arcs 8 times shorter, down
to arcs of ``FINE_ARC`` (error below 1e-5 arcsec), so decisions are exact to far under 0.001 arcsec.
"""

from __future__ import annotations

import math

import cdshealpix.nested as cdsn
import numpy as np

ARCSEC_PER_RAD = 180 / math.pi * 3600
FINE_ARC = 0.5  # arcsec: sagitta below 1e-5 arcsec
# Bound on the geodesic curvature (per radian) of HEALPix edges used for the sagitta; measured
# values stay below 1.
CURVATURE = 4.0
_CHUNK = 2_000_000  # pair x vertex products per vectorised block


def lonlat_to_xyz(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit vectors, shape ``(..., 3)``, of lon/lat in degrees."""
    lon = np.radians(np.asarray(lon, dtype=np.float64))
    lat = np.radians(np.asarray(lat, dtype=np.float64))
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)], axis=-1)


def max_edge_arcsec(order: int) -> float:
    """Upper bound of the length of one pixel edge at ``order`` (the longest edges are about
    1.3 times the square root of the pixel area; 2 leaves room)."""
    return 2.0 * math.sqrt(4 * math.pi / (12 * 4**order)) * ARCSEC_PER_RAD


def boundary_step(order: int, arc_arcsec: float) -> int:
    """Samples per edge so that no arc between samples is longer than ``arc_arcsec``."""
    return max(1, math.ceil(max_edge_arcsec(order) / arc_arcsec))


def _arc_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angular distance (radians) from points ``p`` to great-circle arcs ``a``-``b``, all ``(..., 3)``."""
    n = np.cross(a, b)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    n = n / np.where(norm == 0, 1.0, norm)
    inside = (np.einsum("...i,...i->...", np.cross(a, p), n) >= 0) & (
        np.einsum("...i,...i->...", np.cross(p, b), n) >= 0
    )
    to_circle = np.arcsin(np.clip(np.abs(np.einsum("...i,...i->...", p, n)), 0.0, 1.0))
    to_a = 2 * np.arcsin(np.clip(np.linalg.norm(p - a, axis=-1) / 2, 0.0, 1.0))
    to_b = 2 * np.arcsin(np.clip(np.linalg.norm(p - b, axis=-1) / 2, 0.0, 1.0))
    return np.where(inside & (norm[..., 0] > 0), to_circle, np.minimum(to_a, to_b))


def _polyline_distance(points: np.ndarray, cells: np.ndarray, order: int, step: int) -> np.ndarray:
    """Distance (arcsec) from each point to the boundary of the matching cell (same length arrays)."""
    uniq, inv = np.unique(cells, return_inverse=True)
    lon, lat = cdsn.vertices(uniq.astype(np.uint64), order, step=step)
    verts = lonlat_to_xyz(lon.deg, lat.deg)  # (ncells, 4*step, 3)
    nv = verts.shape[1]
    out = np.empty(len(points))
    chunk = max(1, _CHUNK // nv)
    for s in range(0, len(points), chunk):
        v = verts[inv[s : s + chunk]]
        p = points[s : s + chunk, None, :]
        d = _arc_distance(p, v, np.roll(v, -1, axis=1))
        out[s : s + chunk] = d.min(axis=1)
    return out * ARCSEC_PER_RAD


def within_radius(
    points: np.ndarray, orders: np.ndarray, pixels: np.ndarray, radius_arcsec: float
) -> np.ndarray:
    """Whether each unit vector in ``points`` is closer than ``radius_arcsec`` to the boundary of the
    matching nested pixel ``(orders[i], pixels[i])``.

    Boundaries are first sampled with arcs about ``radius_arcsec`` long; a pair is decided as soon as
    its polyline distance is farther from the radius than the sagitta bound of the current arcs, and
    the undecided pairs are re-measured with arcs 8 times shorter, down to ``FINE_ARC``.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    orders = np.asarray(orders, dtype=np.int64)
    pixels = np.asarray(pixels, dtype=np.int64)
    inside = np.zeros(len(points), dtype=bool)
    todo = np.arange(len(points))
    arc = max(float(radius_arcsec), FINE_ARC)
    while len(todo):
        final = arc <= FINE_ARC
        dist = np.empty(len(todo))
        for order in np.unique(orders[todo]):
            sel = np.flatnonzero(orders[todo] == order)
            step = boundary_step(int(order), arc)
            dist[sel] = _polyline_distance(points[todo[sel]], pixels[todo[sel]], int(order), step)
        # the polyline is within CURVATURE * arc**2 / 8 of the true boundary
        slack = 0.0 if final else CURVATURE * (arc / ARCSEC_PER_RAD) ** 2 / 8 * ARCSEC_PER_RAD + 1e-6
        inside[todo[dist < radius_arcsec - slack]] = True
        todo = todo[np.abs(dist - radius_arcsec) <= slack]
        arc = max(arc / 8, FINE_ARC)
    return inside

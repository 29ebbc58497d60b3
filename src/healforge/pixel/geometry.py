"""Angular distance from points to HEALPix pixel boundaries.

HEALPix pixel edges are not great circles. A boundary is sampled with ``cdshealpix.nested.vertices``
(every sample lies exactly on the true edge) and the samples are joined by great-circle arcs; the
distance to that polyline differs from the distance to the true edge by at most the sagitta of one
arc, ``k L**2 / 8`` for an arc of length ``L`` on an edge of geodesic curvature ``k`` (``k`` is
below 3 except near the poles, where it grows as 1 / colatitude). :func:`within_radius` measures
against a few arcs per edge, bounds the error from the samples themselves, keeps the pairs whose
distance is within that bound of the radius, and re-measures those with arcs 8 times shorter, down
to arcs of ``FINE_ARC``, so decisions are exact to far under 0.001 arcsec (except within about 8
arcsec of a pole, where the last arcs' sagitta can reach 0.001 arcsec).
"""

from __future__ import annotations

import math

import numpy as np

from healforge.pixel.cells import pixel_centers, pixel_vertices

ARCSEC_PER_RAD = 180 / math.pi * 3600
# arcsec: the last arcs. Their sagitta is below 1e-4 arcsec wherever edges curve less than 3000 per
# radian, i.e. everywhere but within about 70 arcsec of a pole, where curvature grows as 1 / colatitude.
FINE_ARC = 0.25
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


def _arc_frames(verts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per arc ``a -> b`` of closed polylines ``verts`` ``(..., nv, 3)``: the unit normal ``n`` of
    its great circle and the vectors ``n x a`` and ``b x n``; a point ``p`` projects inside the arc
    when ``p . (n x a) >= 0`` and ``p . (b x n) >= 0``."""
    nxt = np.roll(verts, -1, axis=-2)
    n = np.cross(verts, nxt)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good = norm > 0
    n = np.where(good, n / np.where(good, norm, 1.0), 0.0)
    # a zero-length arc gets frames no point projects inside; its end vertex still counts
    return n, np.where(good, np.cross(n, verts), -verts), np.where(good, np.cross(nxt, n), -verts)


def _polyline_distance(
    points: np.ndarray, cells: np.ndarray, order: int, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (arcsec) from each point to the boundary of the matching cell (same length arrays),
    measured on the polyline of ``step`` arcs per edge, and an error bound (arcsec) per point.

    The distance to a polyline of great-circle arcs is the smaller of the distance to the nearest
    vertex and the distance to the great circle of any arc the point projects inside. The bound is
    the largest distance of the polyline's vertices from the great circles of the twice longer arcs
    joining every other vertex: the sagitta of those arcs, about four times the polyline's own.
    """
    uniq, inv = np.unique(cells, return_inverse=True)
    lon, lat = pixel_vertices(uniq, order, step=step)
    verts = lonlat_to_xyz(lon, lat)  # (ncells, 4*step, 3)
    normal, ea, eb = _arc_frames(verts)
    if step % 2 == 0:
        coarse, _, _ = _arc_frames(verts[:, 0::2])
        sagitta = np.abs(np.einsum("cvk,cvk->cv", coarse, verts[:, 1::2])).max(axis=1)
    else:
        sagitta = np.full(len(uniq), np.inf)
    out = _distances(points, inv, verts, normal, ea, eb)
    return out * ARCSEC_PER_RAD, sagitta[inv] * ARCSEC_PER_RAD


def _distances(points, inv, verts, normal, ea, eb):
    """Radians from each point to the polyline of its cell ``inv[i]``: the nearest vertex, or the
    great circle of an arc the point projects inside, whichever is closer (blocks of points;
    components kept apart, a dot product is three multiply-adds on ``(points, vertices)`` arrays)."""
    nv = verts.shape[1]
    comp = [np.ascontiguousarray(a.transpose(2, 0, 1)) for a in (verts, normal, ea, eb)]  # (3, cells, nv)
    out = np.empty(len(points))
    chunk = max(1, _CHUNK // nv)
    for s in range(0, len(points), chunk):
        idx = inv[s : s + chunk]
        p = points[s : s + chunk]

        def dot(a, idx=idx, p=p):
            return a[0][idx] * p[:, 0:1] + a[1][idx] * p[:, 1:2] + a[2][idx] * p[:, 2:3]

        # |v - p|^2 = 2 - 2 v.p for unit vectors
        chord = np.sqrt(np.maximum(2.0 - 2.0 * dot(comp[0]).max(axis=1), 0.0))
        d_vertex = 2 * np.arcsin(np.minimum(chord / 2, 1.0))
        inside = (dot(comp[2]) >= 0) & (dot(comp[3]) >= 0)
        sine = np.where(inside, np.abs(dot(comp[1])), 2.0).min(axis=1)
        d_line = np.where(sine <= 1.0, np.arcsin(np.minimum(sine, 1.0)), np.inf)
        out[s : s + chunk] = np.minimum(d_vertex, d_line)
    return out


def _may_be_within(
    points: np.ndarray, orders: np.ndarray, pixels: np.ndarray, radius_arcsec: float
) -> np.ndarray:
    """False where a point is certainly farther than the radius from its cell: its distance to the
    cell centre exceeds the radius plus the centre-to-corner distance (corners are the boundary
    points farthest from the centre)."""
    keep = np.zeros(len(points), dtype=bool)
    for order in np.unique(orders):
        sel = np.flatnonzero(orders == order)
        uniq, inv = np.unique(pixels[sel], return_inverse=True)
        cells = uniq.astype(np.uint64)
        centre = lonlat_to_xyz(*pixel_centers(cells, int(order)))
        corners = lonlat_to_xyz(*pixel_vertices(cells, int(order)))
        reach = 2 * np.arcsin(np.linalg.norm(corners - centre[:, None, :], axis=-1).max(axis=1) / 2)
        reach = reach * 1.01 + radius_arcsec / ARCSEC_PER_RAD + 1e-9
        d = 2 * np.arcsin(np.minimum(np.linalg.norm(points[sel] - centre[inv], axis=1) / 2, 1.0))
        keep[sel] = d <= reach[inv]
    return keep


def within_radius(
    points: np.ndarray, orders: np.ndarray, pixels: np.ndarray, radius_arcsec: float
) -> np.ndarray:
    """Whether each unit vector in ``points`` is closer than ``radius_arcsec`` to the boundary of the
    matching nested pixel ``(orders[i], pixels[i])``.

    Pairs farther than the radius from the cell's circumscribed circle are dropped first. Boundaries
    are then sampled with 2, 16, 128, ... arcs per edge: a pair is decided as soon as its polyline
    distance is farther from the radius than the error bound measured on the current samples (see
    :func:`_polyline_distance`); the last level has arcs of at most ``FINE_ARC`` and decides the
    rest.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    orders = np.asarray(orders, dtype=np.int64)
    pixels = np.asarray(pixels, dtype=np.int64)
    inside = np.zeros(len(points), dtype=bool)
    todo = np.flatnonzero(_may_be_within(points, orders, pixels, radius_arcsec))
    level = 0
    while len(todo):
        dist = np.empty(len(todo))
        slack = np.empty(len(todo))
        for order in np.unique(orders[todo]):
            sel = np.flatnonzero(orders[todo] == order)
            finest = boundary_step(int(order), FINE_ARC)
            step = min(2 * 8**level, finest)
            dist[sel], bound = _polyline_distance(points[todo[sel]], pixels[todo[sel]], int(order), step)
            slack[sel] = 0.0 if step == finest else bound + 1e-6
        inside[todo[dist < radius_arcsec - slack]] = True
        todo = todo[np.abs(dist - radius_arcsec) <= slack]
        level += 1
    return inside

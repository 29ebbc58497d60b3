"""Assignment of polygon footprints to HEALPix cells.

Footprint edges are great-circle arcs between consecutive vertices (the shorter way), so a
footprint written with longitudes either side of the antimeridian (179.8 .. -179.7) or beyond 180
is the small polygon it means, and footprints near a pole need no special care.

* ``strict`` (alias ``center``): the cell containing the area centroid (computed in the
  gnomonic plane about the footprint's centre, where great circles are straight), weight 1;
* ``fuzzy`` (alias ``overlap``): every cell the footprint overlaps, weighted by overlap area over
  the footprint's area (summing to 1). Footprints are mapped to the HEALPix projection plane, which
  is equal-area and where cells are unit squares (:mod:`healforge.aggregate.coverage`): overlaps
  there are exact up to the subdivision of the curved edges (chords within 2.5e-5 of a cell of
  the arcs). The few footprints that reach into a polar cap across its quarter boundaries
  (around a pole, or one of the eight points where three base pixels meet) are first cut along
  those meridians, exactly, in their own gnomonic plane.

Everything is vectorised over footprints; the inner loops run in numba, in threads.
"""

from __future__ import annotations

import math
import os
from functools import cached_property

import numba
import numpy as np

from healforge.aggregate.coverage import chart_cells
from healforge.arrays import concat_ranges
from healforge.pixel import lonlat_to_pixel, wrap_lon

MODES = {"strict": "strict", "center": "strict", "fuzzy": "fuzzy", "overlap": "fuzzy"}
MAX_FOOTPRINT_DEG = 60.0


def _unit(lon_deg: np.ndarray, lat_deg: np.ndarray) -> np.ndarray:
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    cl = np.cos(lat)
    return np.stack([cl * np.cos(lon), cl * np.sin(lon), np.sin(lat)], axis=-1)


def _lonlat(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = p / np.linalg.norm(p, axis=-1, keepdims=True)
    lon = wrap_lon(np.degrees(np.arctan2(p[..., 1], p[..., 0])))
    lat = np.degrees(np.arcsin(np.clip(p[..., 2], -1.0, 1.0)))
    return lon, lat


def _frames(centre: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """East and north unit vectors at each centre (any orthonormal pair at the poles)."""
    z = np.array([0.0, 0.0, 1.0])
    e1 = np.cross(z, centre)
    norm = np.linalg.norm(e1, axis=-1, keepdims=True)
    polar = norm[:, 0] < 1e-12
    e1[polar] = np.array([0.0, 1.0, 0.0])
    norm[polar] = 1.0
    e1 = e1 / norm
    e2 = np.cross(centre, e1)
    return e1, e2


def _project(p: np.ndarray, c: np.ndarray, e1: np.ndarray, e2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = np.einsum("...k,...k->...", p, c)
    return np.einsum("...k,...k->...", p, e1) / d, np.einsum("...k,...k->...", p, e2) / d


class Rings:
    """Footprints as flat ring arrays (lon/lat degrees, no closing vertex)."""

    def __init__(self, lon, lat, ring_off, ring_sign, poly_ring_off):
        self.lon, self.lat = np.asarray(lon, float), np.asarray(lat, float)
        self.ring_off = np.asarray(ring_off, np.int64)
        self.ring_sign = np.asarray(ring_sign, np.float64)
        self.poly_ring_off = np.asarray(poly_ring_off, np.int64)

    @property
    def n(self) -> int:
        return self.poly_ring_off.size - 1

    @cached_property
    def vectors(self) -> np.ndarray:
        """Unit vectors of the vertices."""
        return _unit(self.lon, self.lat)

    @cached_property
    def vertex_poly(self) -> np.ndarray:
        """Footprint of each vertex."""
        return np.repeat(np.repeat(np.arange(self.n), np.diff(self.poly_ring_off)), np.diff(self.ring_off))

    @cached_property
    def centres(self) -> np.ndarray:
        """Each footprint's centre: the normalised sum of its exterior ring's vertices."""
        ext_start = self.ring_off[self.poly_ring_off[:-1]]
        ext_len = np.diff(self.ring_off)[self.poly_ring_off[:-1]]
        cs = np.vstack([np.zeros((1, 3)), np.cumsum(self.vectors, axis=0)])
        ext_sum = cs[ext_start + ext_len] - cs[ext_start]
        return ext_sum / np.linalg.norm(ext_sum, axis=1, keepdims=True)

    @cached_property
    def far(self) -> np.ndarray:
        """Footprints with a vertex more than ``MAX_FOOTPRINT_DEG`` from their centre."""
        cosd = np.einsum("ij,ij->i", self.vectors, self.centres[self.vertex_poly])
        out = np.zeros(self.n, bool)
        np.logical_or.at(out, self.vertex_poly, cosd < math.cos(math.radians(MAX_FOOTPRINT_DEG)))
        return out

    def subset(self, idx: np.ndarray) -> Rings:
        """The footprints ``idx`` (in that order)."""
        nring = np.diff(self.poly_ring_off)[idx]
        rings = concat_ranges(self.poly_ring_off[idx], nring)
        nvert = np.diff(self.ring_off)[rings]
        verts = concat_ranges(self.ring_off[rings], nvert)
        return Rings(
            self.lon[verts],
            self.lat[verts],
            np.concatenate([[0], np.cumsum(nvert)]),
            self.ring_sign[rings],
            np.concatenate([[0], np.cumsum(nring)]),
        )


def rings_from_shapely(geoms: np.ndarray) -> Rings:
    """Flat ring arrays of shapely Polygons (validated by the caller)."""
    import shapely

    n_int = shapely.get_num_interior_rings(geoms)
    if not n_int.any():
        # one ring a polygon: the polygons' coordinates are the rings'
        coords, pidx = shapely.get_coordinates(geoms, return_index=True)
        counts = np.bincount(pidx, minlength=geoms.size)
        return _rings_from_coords(coords, counts, np.ones(geoms.size), np.arange(geoms.size + 1))
    ext = shapely.get_exterior_ring(geoms)
    rings = [ext]
    owners = [np.arange(geoms.size)]
    signs = [np.ones(geoms.size)]
    if n_int.any():
        idx = np.repeat(np.arange(geoms.size), n_int)
        which = np.concatenate([np.arange(k) for k in n_int[n_int > 0]])
        rings.append(shapely.get_interior_ring(geoms[idx], which))
        owners.append(idx)
        signs.append(-np.ones(idx.size))
    rings_arr = np.concatenate(rings)
    owner = np.concatenate(owners)
    sign = np.concatenate(signs)
    order = np.argsort(owner, kind="stable")
    rings_arr, owner, sign = rings_arr[order], owner[order], sign[order]
    coords, ridx = shapely.get_coordinates(rings_arr, return_index=True)
    counts = np.bincount(ridx, minlength=rings_arr.size)
    poly_ring_off = np.zeros(geoms.size + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=geoms.size), out=poly_ring_off[1:])
    return _rings_from_coords(coords, counts, sign, poly_ring_off)


def _rings_from_coords(coords: np.ndarray, counts: np.ndarray, sign: np.ndarray, poly_ring_off) -> Rings:
    """Rings from closed rings' coordinates (``counts`` vertices each), closing vertices dropped,
    parallels around a pole followed (:func:`polar_rings`)."""
    ends = np.cumsum(counts) - 1
    keep = np.ones(coords.shape[0], bool)
    closed = (coords[ends, 0] == coords[ends - counts + 1, 0]) & (
        coords[ends, 1] == coords[ends - counts + 1, 1]
    )
    keep[ends[closed]] = False
    counts = counts - closed
    coords = coords[keep]
    ring_off = np.zeros(counts.size + 1, np.int64)
    np.cumsum(counts, out=ring_off[1:])
    lon, lat, ring_off = polar_rings(coords[:, 0], coords[:, 1], ring_off)
    return Rings(lon, lat, ring_off, sign, poly_ring_off)


# Longitude step (degrees) of the vertices put along a parallel that an edge follows round a pole.
PARALLEL_STEP_DEG = 0.25


def polar_rings(lon: np.ndarray, lat: np.ndarray, ring_off: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rings that go round a pole, as a lon/lat box such as ``box(-180, 89, 180, 90)`` does, made
    into the polygons they mean on the sphere.

    An edge whose longitudes differ by a full turn (``-180 -> 180``, ``0 -> 360``) joins a point
    to itself as a great circle; in a lon/lat ring it means the parallel round the pole, so it
    gets vertices every :data:`PARALLEL_STEP_DEG` along it (arcs between them stay within 0.25
    arcsec of the parallel). Vertices at a pole with different longitudes are one point: repeated
    points and the spikes left by going up a meridian to the pole and back down the same
    meridian are removed. Other rings are returned unchanged.
    """
    n = ring_off.size - 1
    counts = np.diff(ring_off)
    ring = np.repeat(np.arange(n), counts)
    nxt = np.arange(lon.size) + 1
    if lon.size:
        nxt[ring_off[1:][counts > 0] - 1] = ring_off[:-1][counts > 0]
    full = np.abs(lon[nxt] - lon) >= 360.0 - 1e-9 if lon.size else np.zeros(0, bool)
    at_pole = np.abs(lat) >= 90.0
    touched = np.zeros(n, bool)
    np.logical_or.at(touched, ring, full)
    touched |= np.bincount(ring, weights=at_pole, minlength=n) >= 2
    if not touched.any():
        return lon, lat, ring_off
    out_lon, out_lat, new_counts = [], [], counts.copy()
    for r in range(n):
        a, b = ring_off[r], ring_off[r + 1]
        if not touched[r]:
            out_lon.append(lon[a:b])
            out_lat.append(lat[a:b])
            continue
        pts_lon, pts_lat = [], []
        for v in range(a, b):
            pts_lon.append(lon[v])
            pts_lat.append(lat[v])
            if full[v]:
                w = nxt[v]
                k = math.ceil(abs(lon[w] - lon[v]) / PARALLEL_STEP_DEG)
                t = np.arange(1, k) / k
                pts_lon.extend(lon[v] + (lon[w] - lon[v]) * t)
                pts_lat.extend(lat[v] + (lat[w] - lat[v]) * t)
        rl, rb = _drop_repeats_and_spikes(np.array(pts_lon), np.array(pts_lat))
        out_lon.append(rl)
        out_lat.append(rb)
        new_counts[r] = rl.size
    new_off = np.zeros(n + 1, np.int64)
    np.cumsum(new_counts, out=new_off[1:])
    return np.concatenate(out_lon), np.concatenate(out_lat), new_off


def _drop_repeats_and_spikes(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A closed ring without repeated points (on the sphere) and without spikes ``a -> b -> a``."""
    keep = list(range(lon.size))
    p = _unit(lon, lat)
    same = lambda i, j: float(np.dot(p[i], p[j])) > 1.0 - 1e-15  # noqa: E731
    changed = True
    while changed and len(keep) >= 3:
        changed = False
        m = len(keep)
        for k in range(m):
            i, j = keep[k], keep[(k + 1) % m]
            if same(i, j):
                del keep[(k + 1) % m]
                changed = True
                break
            if m >= 3 and same(keep[k - 1], j):  # spike at i: drop it and the repeat after it
                for pos in sorted({k, (k + 1) % m}, reverse=True):
                    del keep[pos]
                changed = True
                break
    return lon[keep], lat[keep]


def _geometry(r: Rings):
    """Centres, frames and gnomonic ring coordinates; checks footprint sizes."""
    p, c, vpoly = r.vectors, r.centres, r.vertex_poly
    e1, e2 = _frames(c)
    x, y = _project(p, c[vpoly], e1[vpoly], e2[vpoly])
    return c, e1, e2, x, y, vpoly, r.far


def valid_on_sphere(geoms: np.ndarray) -> np.ndarray:
    """Validity of Polygons judged in each one's gnomonic plane (great-circle edges)."""
    import shapely

    out = np.zeros(geoms.size, bool)
    if geoms.size == 0:
        return out
    r = rings_from_shapely(geoms)
    bad = np.zeros(r.n, bool)
    np.logical_or.at(
        bad,
        np.repeat(np.repeat(np.arange(r.n), np.diff(r.poly_ring_off)), np.diff(r.ring_off)),
        ~(np.isfinite(r.lon) & np.isfinite(r.lat) & (np.abs(r.lat) <= 90)),
    )
    if bad.all():
        return out
    keep = np.flatnonzero(~bad)
    if keep.size != r.n:
        r = rings_from_shapely(geoms[keep])
    _, _, _, x, y, _, far = _geometry(r)
    for i in range(r.n):
        if far[i]:
            continue
        rings = []
        for k in range(r.poly_ring_off[i], r.poly_ring_off[i + 1]):
            a, b = r.ring_off[k], r.ring_off[k + 1]
            rings.append(np.column_stack([x[a:b], y[a:b]]))
        poly = shapely.Polygon(rings[0], rings[1:])
        out[keep[i]] = bool(shapely.is_valid(poly) and poly.area > 0)
    return out


def footprint_sizes_ok(r: Rings) -> np.ndarray:
    """True for footprints whose vertices are all within 60 degrees of their centre."""
    return ~r.far


def zero_area(r: Rings) -> np.ndarray:
    """Footprints without area on the sphere (rings of fewer than 3 distinct points, or all on
    one great circle), judged by their area in their gnomonic plane. Footprints far from their
    centre (``Rings.far``) are not judged."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        _, _, _, x, y, _, far = _geometry(r)
        nxt = np.arange(x.size) + 1
        nxt[r.ring_off[1:] - 1] = r.ring_off[:-1]
        ring_of_vertex = np.repeat(np.arange(r.ring_off.size - 1), np.diff(r.ring_off))
        ring_area = np.bincount(
            ring_of_vertex, weights=x * y[nxt] - x[nxt] * y, minlength=r.ring_off.size - 1
        )
        ext = np.abs(ring_area[r.poly_ring_off[:-1]]) if r.n else np.zeros(0)
    # (1e-12 rad)**2: far below any real footprint (a square of 1 milliarcsec has 2e-17)
    return ~far & ~(ext > 1e-24)


def strict_cells(r: Rings, order: int) -> np.ndarray:
    """Cell (at ``order``) of each footprint's area centroid."""
    c, e1, e2, x, y, vpoly, _ = _geometry(r)
    nxt = np.arange(x.size) + 1
    ring_of_vertex = np.repeat(np.arange(r.ring_off.size - 1), np.diff(r.ring_off))
    last = r.ring_off[1:] - 1
    nxt[last] = r.ring_off[:-1]
    cross = x * y[nxt] - x[nxt] * y
    # exterior rings count positively and holes negatively, whatever their orientation
    ring_area = np.bincount(ring_of_vertex, weights=cross, minlength=r.ring_off.size - 1)
    sign = (r.ring_sign * np.sign(ring_area))[ring_of_vertex]
    a = np.bincount(vpoly, weights=sign * cross, minlength=r.n)
    cx = np.bincount(vpoly, weights=sign * (x + x[nxt]) * cross, minlength=r.n)
    cy = np.bincount(vpoly, weights=sign * (y + y[nxt]) * cross, minlength=r.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        gx, gy = cx / (3 * a), cy / (3 * a)
    bad = ~np.isfinite(gx) | ~np.isfinite(gy)
    gx[bad] = 0.0
    gy[bad] = 0.0
    p = c + gx[:, None] * e1 + gy[:, None] * e2
    lon, lat = _lonlat(p)
    return lonlat_to_pixel(lon, lat, order)


@numba.njit(cache=True, nogil=True)
def _simple_convex_flags(x, y, ring_off, poly_ring_off):
    """Single-ring footprints whose ring is strictly convex and turns around once (so a valid
    polygon with positive area: no repeated, collinear or crossing vertices)."""
    n = poly_ring_off.size - 1
    out = np.zeros(n, np.bool_)
    for p in range(n):
        r = poly_ring_off[p]
        if poly_ring_off[p + 1] - r != 1:
            continue
        a, b = ring_off[r], ring_off[r + 1]
        m = b - a
        if m < 3:
            continue
        sign = 0
        turn = 0.0
        ok = True
        for i in range(m):
            i0, i1, i2 = a + i, a + (i + 1) % m, a + (i + 2) % m
            ux, uy = x[i1] - x[i0], y[i1] - y[i0]
            vx, vy = x[i2] - x[i1], y[i2] - y[i1]
            cr = ux * vy - uy * vx
            s = 1 if cr > 0 else (-1 if cr < 0 else 0)
            if s == 0 or (sign != 0 and s != sign):
                ok = False
                break
            sign = s
            turn += math.atan2(cr, ux * vx + uy * vy)
        out[p] = ok and abs(abs(turn) - 2 * math.pi) < 1e-6
    return out


def simple_convex(r: Rings) -> np.ndarray:
    """Footprints that are, in the lon/lat plane, strictly convex simple polygons (valid there)."""
    return _simple_convex_flags(r.lon, r.lat, r.ring_off, r.poly_ring_off)


# Chords of footprint edges in the HEALPix plane stay within this fraction of a cell of the arcs.
PLANE_TOL_CELLS = 2.5e-5

# Footprints per thread below which one thread does all the work.
MIN_FOOTPRINTS_PER_THREAD = 2048


def _threads(n: int) -> int:
    """Threads for ``n`` footprints (the numba kernels release the GIL)."""
    return max(1, min(os.cpu_count() or 1, 8, n // MIN_FOOTPRINTS_PER_THREAD))


def _run_chunks(fn, nchunk: int) -> list:
    """``[fn(0), ..., fn(nchunk - 1)]``, in threads when ``nchunk > 1`` (results in order)."""
    if nchunk == 1:
        return [fn(0)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=nchunk) as pool:
        return list(pool.map(fn, range(nchunk)))


def fuzzy_cells(r: Rings, order: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(footprint index, cell, weight)`` for every cell each footprint overlaps, sorted by
    footprint then cell; weights are overlap area fractions, summing to 1 per footprint."""
    p, c = r.vectors, r.centres
    nchunk = _threads(r.n)
    bounds = np.linspace(0, r.n, nchunk + 1).astype(np.int64)
    parts = _run_chunks(
        lambda i: chart_cells(
            order, p, c, r.ring_off, r.ring_sign, r.poly_ring_off, bounds[i], bounds[i + 1], PLANE_TOL_CELLS
        ),
        nchunk,
    )
    return tuple(np.concatenate([q[j] for q in parts]) for j in range(3))

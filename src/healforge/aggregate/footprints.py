"""Assignment of polygon footprints to HEALPix cells.

Footprint edges are great-circle arcs between consecutive vertices (the shorter way), so a
footprint written with longitudes either side of the antimeridian (179.8 .. -179.7) or beyond 180
is the small polygon it means, and footprints near a pole need no special care. Each footprint is
projected gnomonically about its own centre (great circles become straight lines; the area
distortion across a footprint 2 degrees wide is below 1e-3), then:

* ``strict`` (alias ``center``): the cell containing the area centroid, weight 1;
* ``fuzzy`` (alias ``overlap``): the cells are those holding a point of the footprint, found by
  sampling its interior on a grid finer than a cell and walking every edge, bisecting each step
  that changes cell until it is shorter than 2.5e-5 of a cell (1e-7 rad at order 8); the weight of a cell is its overlap area
  (polygon clipping against the cell boundary sampled with 4 points per edge, 16 in the polar
  caps; weights within 1% of the exact area fractions) over the footprint's total (summing to 1).

Everything is vectorised over footprints; the clipping runs in numba.
"""

from __future__ import annotations

import math
import os

import numba
import numpy as np

from healforge.aggregate.hpnumba import boundary_vecs, vec2pix_nest
from healforge.healpix import lonlat_to_pixel, order_to_npix, wrap_lon

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


@numba.njit(cache=True)
def _signed_area(x, y, a, b):
    s = 0.0
    for i in range(a, b):
        j = i + 1 if i + 1 < b else a
        s += x[i] * y[j] - x[j] * y[i]
    return 0.5 * s


@numba.njit(cache=True)
def _is_convex(x, y, a, b):
    n = b - a
    sign = 0
    for i in range(n):
        i0 = a + i
        i1 = a + (i + 1) % n
        i2 = a + (i + 2) % n
        cr = (x[i1] - x[i0]) * (y[i2] - y[i1]) - (y[i1] - y[i0]) * (x[i2] - x[i1])
        if cr > 1e-18:
            if sign < 0:
                return False
            sign = 1
        elif cr < -1e-18:
            if sign > 0:
                return False
            sign = -1
    return True


@numba.njit(cache=True)
def _clip_area(sx, sy, cx, cy):
    """Area of subject polygon (sx, sy) clipped by the convex counter-clockwise polygon (cx, cy)."""
    cap = 2 * (sx.size + cx.size) + 8
    ax = np.empty(cap)
    ay = np.empty(cap)
    bx = np.empty(cap)
    by = np.empty(cap)
    n = sx.size
    for i in range(n):
        ax[i] = sx[i]
        ay[i] = sy[i]
    m = cx.size
    for e in range(m):
        if n == 0:
            return 0.0
        px, py = cx[e], cy[e]
        qx, qy = cx[(e + 1) % m], cy[(e + 1) % m]
        ex, ey = qx - px, qy - py
        k = 0
        for i in range(n):
            x0, y0 = ax[i], ay[i]
            x1, y1 = ax[(i + 1) % n], ay[(i + 1) % n]
            s0 = ex * (y0 - py) - ey * (x0 - px)
            s1 = ex * (y1 - py) - ey * (x1 - px)
            if s0 >= 0:
                bx[k] = x0
                by[k] = y0
                k += 1
                if s1 < 0:
                    t = s0 / (s0 - s1)
                    bx[k] = x0 + t * (x1 - x0)
                    by[k] = y0 + t * (y1 - y0)
                    k += 1
            elif s1 >= 0:
                t = s0 / (s0 - s1)
                bx[k] = x0 + t * (x1 - x0)
                by[k] = y0 + t * (y1 - y0)
                k += 1
        for i in range(k):
            ax[i] = bx[i]
            ay[i] = by[i]
        n = k
    s = 0.0
    for i in range(n):
        j = (i + 1) % n
        s += ax[i] * ay[j] - ax[j] * ay[i]
    return abs(0.5 * s)


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


def rings_from_shapely(geoms: np.ndarray) -> Rings:
    """Flat ring arrays of shapely Polygons (validated by the caller)."""
    import shapely

    ext = shapely.get_exterior_ring(geoms)
    n_int = shapely.get_num_interior_rings(geoms)
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
    # drop each ring's closing vertex
    ends = np.cumsum(counts) - 1
    keep = np.ones(coords.shape[0], bool)
    closed = (coords[ends, 0] == coords[ends - counts + 1, 0]) & (
        coords[ends, 1] == coords[ends - counts + 1, 1]
    )
    keep[ends[closed]] = False
    counts = counts - closed
    coords = coords[keep]
    ring_off = np.zeros(rings_arr.size + 1, np.int64)
    np.cumsum(counts, out=ring_off[1:])
    poly_ring_off = np.zeros(geoms.size + 1, np.int64)
    np.cumsum(np.bincount(owner, minlength=geoms.size), out=poly_ring_off[1:])
    return Rings(coords[:, 0], coords[:, 1], ring_off, sign, poly_ring_off)


def _geometry(r: Rings):
    """Centres, frames and gnomonic ring coordinates; checks footprint sizes."""
    p = _unit(r.lon, r.lat)
    ext_start = r.ring_off[r.poly_ring_off[:-1]]
    ext_len = np.diff(r.ring_off)[r.poly_ring_off[:-1]]
    # sum of the exterior ring's vertices
    cs = np.vstack([np.zeros((1, 3)), np.cumsum(p, axis=0)])
    ext_sum = cs[ext_start + ext_len] - cs[ext_start]
    c = ext_sum / np.linalg.norm(ext_sum, axis=1, keepdims=True)
    e1, e2 = _frames(c)
    vpoly = np.repeat(np.repeat(np.arange(r.n), np.diff(r.poly_ring_off)), np.diff(r.ring_off))
    cosd = np.einsum("ij,ij->i", p, c[vpoly])
    far = np.zeros(r.n, bool)
    np.logical_or.at(far, vpoly, cosd < math.cos(math.radians(MAX_FOOTPRINT_DEG)))
    x, y = _project(p, c[vpoly], e1[vpoly], e2[vpoly])
    return c, e1, e2, x, y, vpoly, far


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
    return ~_geometry(r)[-1]


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


@numba.njit(cache=True)
def _inside(px, py, x, y, ring_off, r0, r1):
    """Even-odd point-in-polygon over rings ``r0 .. r1`` (holes included)."""
    inside = False
    for r in range(r0, r1):
        a, b = ring_off[r], ring_off[r + 1]
        j = b - 1
        for i in range(a, b):
            if (y[i] > py) != (y[j] > py):
                xc = x[i] + (py - y[i]) * (x[j] - x[i]) / (y[j] - y[i])
                if px < xc:
                    inside = not inside
            j = i
    return inside


@numba.njit(cache=True)
def _cell_at(order, cx, cy, cz, e1x, e1y, e1z, e2x, e2y, e2z, u, v):
    return vec2pix_nest(order, cx + u * e1x + v * e2x, cy + u * e1y + v * e2y, cz + u * e1z + v * e2z)


@numba.njit(cache=True, nogil=True)
def _candidates(order, c, e1, e2, x, y, ring_off, poly_ring_off, h_in, min_area, eps, p_lo, p_hi):
    """Cells each footprint touches: interior grid samples (only for footprints larger than a
    cell), every vertex, and bisection of every edge piece whose ends lie in different cells down
    to pieces shorter than ``eps`` (radians). A piece with both ends in one cell lies in it
    (cells are convex). Footprints ``p_lo .. p_hi - 1`` only (threads take ranges)."""
    n = p_hi - p_lo
    cap = 16 * n + 16
    out_p = np.empty(cap, np.int64)
    out_c = np.empty(cap, np.int64)
    k_out = 0
    local = np.empty(1 << 14, np.int64)
    stack = np.empty((256, 4))
    cstack = np.empty((256, 2), np.int64)
    for p in range(p_lo, p_hi):
        cx, cy, cz = c[p, 0], c[p, 1], c[p, 2]
        ax, ay, az = e1[p, 0], e1[p, 1], e1[p, 2]
        bx, by, bz = e2[p, 0], e2[p, 1], e2[p, 2]
        r0, r1 = poly_ring_off[p], poly_ring_off[p + 1]
        v0, v1 = ring_off[r0], ring_off[r1]
        k = 0
        # interior samples: only a footprint larger than a cell can hold a whole cell
        area = 0.0
        for r in range(r0, r1):
            area += abs(_signed_area(x, y, ring_off[r], ring_off[r + 1])) * (1.0 if r == r0 else -1.0)
        if area >= min_area:
            xmin, xmax = x[v0:v1].min(), x[v0:v1].max()
            ymin, ymax = y[v0:v1].min(), y[v0:v1].max()
            nx = np.int64(math.ceil((xmax - xmin) / h_in)) + 1
            ny = np.int64(math.ceil((ymax - ymin) / h_in)) + 1
            for iy in range(ny):
                py = ymin + (ymax - ymin) * (iy + 0.5) / ny
                for ix in range(nx):
                    px = xmin + (xmax - xmin) * (ix + 0.5) / nx
                    if _inside(px, py, x, y, ring_off, r0, r1):
                        cell = _cell_at(order, cx, cy, cz, ax, ay, az, bx, by, bz, px, py)
                        if k == 0 or local[k - 1] != cell:
                            if k == local.size:
                                local = np.concatenate((local, np.empty(local.size, np.int64)))
                            local[k] = cell
                            k += 1
        # edges: vertices, then bisection between vertices in different cells
        for r in range(r0, r1):
            a, b = ring_off[r], ring_off[r + 1]
            for i in range(a, b):
                j = i + 1 if i + 1 < b else a
                pu, pv, qu, qv = x[i], y[i], x[j], y[j]
                pc = _cell_at(order, cx, cy, cz, ax, ay, az, bx, by, bz, pu, pv)
                qc = _cell_at(order, cx, cy, cz, ax, ay, az, bx, by, bz, qu, qv)
                if k + 2 >= local.size:
                    local = np.concatenate((local, np.empty(local.size, np.int64)))
                local[k] = pc
                k += 1
                if qc == pc:
                    continue
                stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = pu, pv, qu, qv
                cstack[0, 0], cstack[0, 1] = pc, qc
                top = 1
                while top > 0:
                    top -= 1
                    su, sv, tu, tv = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
                    sc, tc = cstack[top, 0], cstack[top, 1]
                    length = math.hypot(tu - su, tv - sv)
                    if length < eps:
                        continue
                    mu, mv = 0.5 * (su + tu), 0.5 * (sv + tv)
                    mc = _cell_at(order, cx, cy, cz, ax, ay, az, bx, by, bz, mu, mv)
                    if mc != sc and mc != tc:
                        if k == local.size:
                            local = np.concatenate((local, np.empty(local.size, np.int64)))
                        local[k] = mc
                        k += 1
                    if top + 2 >= stack.shape[0]:
                        stack = np.concatenate((stack, np.empty_like(stack)))
                        cstack = np.concatenate((cstack, np.empty_like(cstack)))
                    if mc != sc:
                        stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = su, sv, mu, mv
                        cstack[top, 0], cstack[top, 1] = sc, mc
                        top += 1
                    if mc != tc:
                        stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = mu, mv, tu, tv
                        cstack[top, 0], cstack[top, 1] = mc, tc
                        top += 1
        srt = np.sort(local[:k])
        for t in range(k):
            if t > 0 and srt[t] == srt[t - 1]:
                continue
            if k_out == cap:
                cap *= 2
                out_p = np.concatenate((out_p, np.empty(cap - out_p.size, np.int64)))
                out_c = np.concatenate((out_c, np.empty(cap - out_c.size, np.int64)))
            out_p[k_out] = p
            out_c[k_out] = srt[t]
            k_out += 1
    return out_p[:k_out].copy(), out_c[:k_out].copy()


@numba.njit(cache=True, nogil=True)
def _clip_areas(
    order, cand_poly, cand_cell, c, e1, e2, ring_off, ring_sign, poly_ring_off, x, y, convex, step, polar_step
):
    """Overlap area of each (footprint, cell) pair in the footprint's gnomonic plane.

    Cell boundaries are sampled with ``step`` points per edge (``polar_step`` in the polar caps,
    where edges curve more). A convex footprint clips the cell
    polygon; otherwise each footprint ring is clipped by the triangles of a fan from the cell's
    centre (cells are star-shaped about it), holes counting negatively.
    """
    nc = cand_poly.size
    out = np.zeros(nc)
    nmax = 4 * max(step, polar_step)
    vec = np.empty((nmax + 1, 3))
    qxb = np.empty(nmax + 1)
    qyb = np.empty(nmax + 1)
    tx = np.empty(3)
    ty = np.empty(3)
    for ci in range(nc):
        p = cand_poly[ci]
        boundary_vecs(order, cand_cell[ci], step, vec)
        st = step
        if abs(vec[4 * step, 2]) > 2.0 / 3.0:
            st = polar_step
            boundary_vecs(order, cand_cell[ci], st, vec)
        nb = 4 * st
        qx = qxb[: nb + 1]
        qy = qyb[: nb + 1]
        for v in range(nb + 1):
            px, py, pz = vec[v, 0], vec[v, 1], vec[v, 2]
            d = px * c[p, 0] + py * c[p, 1] + pz * c[p, 2]
            qx[v] = (px * e1[p, 0] + py * e1[p, 1] + pz * e1[p, 2]) / d
            qy[v] = (px * e2[p, 0] + py * e2[p, 1] + pz * e2[p, 2]) / d
        ccw = _signed_area(qx, qy, 0, nb) >= 0
        r0 = poly_ring_off[p]
        if convex[p]:
            a, b = ring_off[r0], ring_off[r0 + 1]
            out[ci] = _clip_area(qx[:nb], qy[:nb], x[a:b], y[a:b])
            continue
        tot = 0.0
        for v in range(nb):
            w = v + 1 if v + 1 < nb else 0
            tx[0], ty[0] = qx[nb], qy[nb]
            if ccw:
                tx[1], ty[1], tx[2], ty[2] = qx[v], qy[v], qx[w], qy[w]
            else:
                tx[1], ty[1], tx[2], ty[2] = qx[w], qy[w], qx[v], qy[v]
            for r in range(r0, poly_ring_off[p + 1]):
                a, b = ring_off[r], ring_off[r + 1]
                tot += ring_sign[r] * _clip_area(x[a:b], y[a:b], tx, ty)
        out[ci] = max(tot, 0.0)
    return out


@numba.njit(cache=True)
def _convex_flags(x, y, ring_off, poly_ring_off):
    n = poly_ring_off.size - 1
    out = np.zeros(n, np.bool_)
    for p in range(n):
        r = poly_ring_off[p]
        if poly_ring_off[p + 1] - r == 1:
            out[p] = _is_convex(x, y, ring_off[r], ring_off[r + 1])
    return out


@numba.njit(cache=True)
def _orient(x, y, ring_off):
    """Copies of the ring coordinates with every ring counter-clockwise."""
    x = x.copy()
    y = y.copy()
    for r in range(ring_off.size - 1):
        a, b = ring_off[r], ring_off[r + 1]
        if _signed_area(x, y, a, b) < 0:
            x[a:b] = x[a:b][::-1].copy()
            y[a:b] = y[a:b][::-1].copy()
    return x, y


# Cell edges are sampled with this many points for the overlap areas (more in the polar caps).
CELL_EDGE_STEP = 4
CELL_EDGE_STEP_POLAR = 16
# Edge pieces are bisected down to this fraction of a cell's size (1e-7 rad, 0.02 arcsec, at
# order 8): a cell that a footprint edge enters for less than that may be missed.
BISECT_EPS_CELLS = 2.5e-5


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
    """``(footprint index, cell, weight)`` for every cell each footprint overlaps.

    Every cell returned contains a point of the footprint (found by sampling its interior and
    walking its edges), so none is spurious; weights are overlap areas (computed in the gnomonic
    plane against the sampled cell boundary) over their sum.
    """
    c, e1, e2, x, y, vpoly, _ = _geometry(r)
    x, y = np.ascontiguousarray(x), np.ascontiguousarray(y)
    cell_sr = 4 * math.pi / order_to_npix(order)
    n = r.n
    nchunk = _threads(n)
    bounds = np.linspace(0, n, nchunk + 1).astype(np.int64)
    args = (
        order,
        c,
        e1,
        e2,
        x,
        y,
        r.ring_off,
        r.poly_ring_off,
        0.4 * math.sqrt(cell_sr),
        0.9 * cell_sr,
        BISECT_EPS_CELLS * math.sqrt(cell_sr),
    )
    parts = _run_chunks(lambda i: _candidates(*args, bounds[i], bounds[i + 1]), nchunk)
    cand_poly = np.concatenate([p[0] for p in parts])
    cand_cell = np.concatenate([p[1] for p in parts])
    convex = _convex_flags(x, y, r.ring_off, r.poly_ring_off)
    xo, yo = _orient(x, y, r.ring_off)
    cb = np.linspace(0, cand_poly.size, nchunk + 1).astype(np.int64)
    area = np.concatenate(
        _run_chunks(
            lambda i: _clip_areas(
                order,
                cand_poly[cb[i] : cb[i + 1]],
                cand_cell[cb[i] : cb[i + 1]],
                c,
                e1,
                e2,
                r.ring_off,
                r.ring_sign,
                r.poly_ring_off,
                xo,
                yo,
                convex,
                CELL_EDGE_STEP,
                CELL_EDGE_STEP_POLAR,
            ),
            nchunk,
        )
    )
    total = np.bincount(cand_poly, weights=area, minlength=r.n)
    with np.errstate(invalid="ignore", divide="ignore"):
        w = area / total[cand_poly]
    return cand_poly, cand_cell, w

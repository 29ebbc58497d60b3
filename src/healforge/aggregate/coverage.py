"""Exact cell coverage of footprints in the HEALPix projection plane.

The HEALPix projection (Calabretta & Roukema 2007) is equal-area, and in the plane coordinates
used here, rotated by 45 degrees and scaled by ``nside``,

* equatorial belt (``|z| <= 2/3``): ``U = nside (t + 3z/4 + 1/2)``, ``V = nside (3z/4 - t + 1/2)``;
* polar caps, sector ``k = floor(t)``, ``p = t - k``, ``s = sqrt(3 (1 - |z|))``: north
  ``U = nside (k + 2 - (1 - p) s)``, ``V = nside (1 - k - p s)``; south ``U = nside (k + p s)``,
  ``V = nside (-k - 1 + (1 - p) s)``;

with ``t = 2 phi / pi``, every cell at every order is a unit square ``[I, I+1] x [J, J+1]``: base
pixel ``(I // nside, J // nside)``, ``ix = I mod nside``, ``iy = J mod nside``. The plane is
continuous over the belt and over each polar sector (a quarter of the sphere in longitude), so a
footprint lying in the belt, or in one sector, becomes a plane polygon whose overlap with each
square is its overlap area with the cell, up to a constant. A footprint reaching into a polar cap
across sector boundaries (around a pole, or one of the eight points where three base pixels meet)
is first cut along the sector meridians, exactly, in its gnomonic plane (where the meridians and
its edges are straight lines), and the pieces' overlaps are added up. Great-circle edges are
curves in the HEALPix plane: they are subdivided until every chord is within ``tol`` (in cells)
of the arc. Overlaps come from one sweep over the edge pieces (each piece adds its signed area to
the square it lies in and its height to the squares right of it, as font rasterisers do), so a
footprint costs time in proportion to its edge pieces and covered cells.
"""

from __future__ import annotations

import math

import numba
import numpy as np

TWO_THIRDS = 2.0 / 3.0
# Footprints with a vertex this close to |z| = 2/3 (or beyond) must lie in one polar sector.
BELT_MARGIN = 1e-3


@numba.njit(cache=True, nogil=True)
def _spread(v):
    """Bits of ``v`` moved to the even positions (the nested index interleaves x and y)."""
    v = v & 0xFFFFFFFF
    v = (v | (v << 16)) & 0x0000FFFF0000FFFF
    v = (v | (v << 8)) & 0x00FF00FF00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F0F0F0F0F
    v = (v | (v << 2)) & 0x3333333333333333
    v = (v | (v << 1)) & 0x5555555555555555
    return v


@numba.njit(cache=True, nogil=True, inline="always")
def _chart(nside, x, y, z, phi_ref, mode, sector):
    """Plane coordinates of a unit vector; longitude unwrapped to within pi of ``phi_ref``.

    ``mode`` 0: belt formulas only. ``mode`` 1: polar formulas for ``|z| > 2/3`` in ``sector``.
    Returns ``(U, V, t)``."""
    phi = math.atan2(y, x)
    phi += 2.0 * math.pi * math.floor((phi_ref - phi) / (2.0 * math.pi) + 0.5)
    t = phi * (2.0 / math.pi)
    za = abs(z)
    if mode == 0 or za <= TWO_THIRDS:
        return nside * (t + 0.75 * z + 0.5), nside * (0.75 * z - t + 0.5), t
    s = math.sqrt(3.0 * (x * x + y * y) / (1.0 + za))
    p = t - sector
    if z > 0:
        return nside * (sector + 2.0 - (1.0 - p) * s), nside * (1.0 - sector - p * s), t
    return nside * (sector + p * s), nside * (-sector - 1.0 + (1.0 - p) * s), t


@numba.njit(cache=True, nogil=True)
def square_cell(order, i, j):
    """Nested index of plane square ``(i, j)`` at ``order``; -1 outside the projection's image."""
    nside = np.int64(1) << order
    fi = i // nside
    fj = j // nside
    s = fi + fj
    if s == 0:
        face = 4 + fi % 4
    elif s == 1:
        face = (fi - 1) % 4
    elif s == -1:
        face = 8 + fi % 4
    else:
        return np.int64(-1)
    ix = i - fi * nside
    iy = j - fj * nside
    return (np.int64(face) << (2 * order)) + _spread(ix) + (_spread(iy) << 1)


@numba.njit(cache=True, nogil=True)
def _grow(a, n):
    if n <= a.size:
        return a
    out = np.empty(max(n, 2 * a.size), a.dtype)
    out[: a.size] = a
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _arc(a, b, pa, pb, chart, out, k):
    """Write the polyline of a great-circle arc from unit vector ``a`` to ``b`` (plane points
    ``pa``, ``pb`` as ``(U, V, t)``), smooth in the plane (it does not cross ``|z| = 2/3`` in
    polar mode), into ``out = (U, V, t, z)`` arrays from position ``k``: its start point, then
    ``n - 1`` points in between, with ``n`` such that chords are at most a cell long and, from the
    deviation of the arc's midpoint, within ``tol`` of the arc (deviation falls as ``1 / n**2``;
    a factor 2 to spare). ``chart = (nside, phi_ref, mode, sector, tol)``. Returns the new count,
    or ``-n`` (nothing written) when the arrays are too short."""
    nside, phi_ref, mode, sector, tol = chart
    ou, ov, ot, oz = out
    mx, my, mz = a[0] + b[0], a[1] + b[1], a[2] + b[2]
    nm = math.sqrt(mx * mx + my * my + mz * mz)
    n = 1
    if nm > 1e-300:
        um, vm, _ = _chart(nside, mx / nm, my / nm, mz / nm, phi_ref, mode, sector)
        dev = math.hypot(um - 0.5 * (pa[0] + pb[0]), vm - 0.5 * (pa[1] + pb[1]))
        n = max(math.ceil(math.hypot(pb[0] - pa[0], pb[1] - pa[1])), math.ceil(math.sqrt(2.0 * dev / tol)), 1)
    if k + n > ou.size:
        return -n
    ou[k], ov[k], ot[k], oz[k] = pa[0], pa[1], pa[2], a[2]
    dx, dy, dz = b[0] - a[0], b[1] - a[1], b[2] - a[2]
    for i in range(1, n):
        f = i / n
        px, py, pz = a[0] + f * dx, a[1] + f * dy, a[2] + f * dz
        q = 1.0 / math.sqrt(px * px + py * py + pz * pz)
        px, py, pz = px * q, py * q, pz * q
        u, v, t = _chart(nside, px, py, pz, phi_ref, mode, sector)
        ou[k + i], ov[k + i], ot[k + i], oz[k + i] = u, v, t, pz
    return k + n


@numba.njit(cache=True, nogil=True)
def _densify(p, i, j, chart, out, k):
    """Write the plane polyline of the edge from vertex ``i`` to vertex ``j`` of ``p`` (``i``
    included, ``j`` not) into ``out`` from position ``k`` (see :func:`_arc`). In polar mode an
    edge crossing ``|z| = 2/3``, where the plane bends, is first split there. Returns the new
    count, or a negative number when the arrays are too short (nothing to keep then)."""
    nside, phi_ref, mode, sector, _ = chart
    a = (p[i, 0], p[i, 1], p[i, 2])
    b = (p[j, 0], p[j, 1], p[j, 2])
    pa = _chart(nside, a[0], a[1], a[2], phi_ref, mode, sector)
    pb = _chart(nside, b[0], b[1], b[2], phi_ref, mode, sector)
    az, bz = a[2], b[2]
    if mode == 1 and (abs(az) - TWO_THIRDS) * (abs(bz) - TWO_THIRDS) < 0:
        # point (A + f (B - A)) / |...| with z = +-2/3: (az + f dz)^2 = 4/9 |A + f D|^2
        zs = TWO_THIRDS if az + bz > 0 else -TWO_THIRDS
        dx, dy, dz = b[0] - a[0], b[1] - a[1], bz - az
        c2 = dz * dz - zs * zs * (dx * dx + dy * dy + dz * dz)
        c1 = 2.0 * (az * dz - zs * zs * (a[0] * dx + a[1] * dy + az * dz))
        c0 = az * az - zs * zs
        f = -1.0
        if c2 != 0.0:
            disc = math.sqrt(max(c1 * c1 - 4.0 * c2 * c0, 0.0))
            for cand in ((-c1 - disc) / (2.0 * c2), (-c1 + disc) / (2.0 * c2)):
                if 0.0 < cand < 1.0 and (az + cand * dz) * zs > 0:
                    f = cand
        elif c1 != 0.0:
            f = -c0 / c1
        if 0.0 < f < 1.0:
            mx, my, mz = a[0] + f * dx, a[1] + f * dy, az + f * dz
            q = 1.0 / math.sqrt(mx * mx + my * my + mz * mz)
            m = (mx * q, my * q, mz * q)
            pm = _chart(nside, m[0], m[1], m[2], phi_ref, mode, sector)
            k = _arc(a, m, pa, pm, chart, out, k)
            if k < 0:
                return k
            a, pa = m, pm  # the rest of the edge, from the bend on
    return _arc(a, b, pa, pb, chart, out, k)


@numba.njit(cache=True, nogil=True, inline="always")
def _add_segment(x0, y0, x1, y1, scale, area, cover, ncols, nrows, ts):
    """Split a segment at the grid lines and add each piece to the square it lies in."""
    dx, dy = x1 - x0, y1 - y0
    n = 0
    ts[n] = 0.0
    n += 1
    if dx != 0.0:
        for g in range(int(math.floor(min(x0, x1))) + 1, int(math.ceil(max(x0, x1)))):
            ts[n] = (g - x0) / dx
            n += 1
    if dy != 0.0:
        for g in range(int(math.floor(min(y0, y1))) + 1, int(math.ceil(max(y0, y1)))):
            ts[n] = (g - y0) / dy
            n += 1
    ts[n] = 1.0
    n += 1
    # insertion sort (a handful of values)
    for a in range(1, n):
        v = ts[a]
        b = a - 1
        while b >= 0 and ts[b] > v:
            ts[b + 1] = ts[b]
            b -= 1
        ts[b + 1] = v
    for q in range(n - 1):
        ta, tb = ts[q], ts[q + 1]
        if tb <= ta:
            continue
        ya, yb = y0 + ta * dy, y0 + tb * dy
        xm = x0 + 0.5 * (ta + tb) * dx
        # clamped: rounding may put a piece on an edge a hair outside the box
        i = min(max(int(math.floor(xm)), 0), ncols - 1)
        j = min(max(int(math.floor(0.5 * (ya + yb))), 0), nrows - 1)
        h = scale * (yb - ya)
        area[j * ncols + i] += h * (i + 1.0 - xm)
        cover[j * ncols + i] += h


@numba.njit(cache=True, nogil=True)
def _polyline(p, ring_off, r0, r1, chart, out, pring):
    """Plane polylines of rings ``r0 .. r1 - 1`` into ``out = (U, V, t, z)``, ring starts in
    ``pring``. Returns the point count, or -1 when the arrays are too short."""
    k = 0
    for r in range(r0, r1):
        pring[r - r0] = k
        a, b = ring_off[r], ring_off[r + 1]
        for i in range(a, b):
            k = _densify(p, i, i + 1 if i + 1 < b else a, chart, out, k)
            if k < 0:
                return -1
    pring[r1 - r0] = k
    return k


@numba.njit(cache=True, nogil=True)
def _polyline_grown(p, ring_off, r0, r1, chart, out, pring):
    """:func:`_polyline`, growing the point arrays until they hold it: ``(count, out)``."""
    while True:
        k = _polyline(p, ring_off, r0, r1, chart, out, pring)
        if k >= 0:
            return k, out
        out = (
            _grow(out[0], 2 * out[0].size),
            _grow(out[1], 2 * out[1].size),
            _grow(out[2], 2 * out[2].size),
            _grow(out[3], 2 * out[3].size),
        )


@numba.njit(cache=True, nogil=True)
def _in_sector(pt, pz, k, sector):
    """Whether the polyline's points lie in polar sector ``sector`` (points at a pole do)."""
    for q in range(k):
        if pt[q] < sector - 1e-9 or pt[q] > sector + 1.0 + 1e-9:
            if 1.0 - abs(pz[q]) > 1e-15:
                return False
    return True


@numba.njit(cache=True, nogil=True)
def _cover(order, pu, pv, pring, nring, ring_sign, rs0, area, cover, ts, cells, covs, n):
    """Overlap of the plane polygon with each square, appended to ``cells, covs`` from ``n``
    (unnormalised, in cell areas). ``area`` and ``cover`` must hold the bounding box and
    ``cells, covs`` room for it; returns the new count, or -1 if a covered square is outside the
    projection's image.

    Overlaps below the rounding of the sweep (the perimeter times the precision of the plane
    coordinates, which grow with ``nside``) are not area and are dropped."""
    k = pring[nring]
    perimeter = 0.0
    for r in range(nring):
        a, b = pring[r], pring[r + 1]
        for q in range(a, b):
            w = q + 1 if q + 1 < b else a
            perimeter += math.hypot(pu[w] - pu[q], pv[w] - pv[q])
    thr = perimeter * 1e-14 * (100.0 + (1 << order))
    umin, umax = pu[:k].min(), pu[:k].max()
    vmin, vmax = pv[:k].min(), pv[:k].max()
    i0, j0 = math.floor(umin), math.floor(vmin)
    ncols = int(math.floor(umax) - i0) + 1
    nrows = int(math.floor(vmax) - j0) + 1
    area[: ncols * nrows] = 0.0
    cover[: ncols * nrows] = 0.0
    for r in range(nring):
        a, b = pring[r], pring[r + 1]
        # ring orientation in the plane: exteriors add, holes subtract, whatever their order
        s = 0.0
        for q in range(a, b):
            w = q + 1 if q + 1 < b else a
            s += (pu[q] - i0) * (pv[w] - j0) - (pu[w] - i0) * (pv[q] - j0)
        if s == 0.0:
            continue
        scale = -ring_sign[rs0 + r] if s > 0 else ring_sign[rs0 + r]
        for q in range(a, b):
            w = q + 1 if q + 1 < b else a
            _add_segment(pu[q] - i0, pv[q] - j0, pu[w] - i0, pv[w] - j0, scale, area, cover, ncols, nrows, ts)
    for jj in range(nrows):
        run = 0.0
        for ii in range(ncols):
            cov = area[jj * ncols + ii] + run
            run += cover[jj * ncols + ii]
            if cov > thr:
                cell = square_cell(order, np.int64(i0) + ii, np.int64(j0) + jj)
                if cell < 0:
                    return -1
                cells[n] = cell
                covs[n] = cov
                n += 1
    return n


@numba.njit(cache=True, nogil=True)
def _max_abs(a, k):
    m = 0.0
    for q in range(k):
        m = max(m, abs(a[q]))
    return m


@numba.njit(cache=True, nogil=True)
def _box_size(pu, pv, k):
    return (int(math.floor(pu[:k].max()) - math.floor(pu[:k].min())) + 1) * (
        int(math.floor(pv[:k].max()) - math.floor(pv[:k].min())) + 1
    )


@numba.njit(cache=True, nogil=True)
def _frame(c):
    """East and north unit vectors at ``c`` (any orthonormal pair at a pole)."""
    ex, ey = -c[1], c[0]
    ne = math.hypot(ex, ey)
    if ne < 1e-12:
        ex, ey, ne = 0.0, 1.0, 1.0
    ex, ey = ex / ne, ey / ne
    return ex, ey, 0.0, c[1] * 0.0 - c[2] * ey, c[2] * ex - c[0] * 0.0, c[0] * ey - c[1] * ex


@numba.njit(cache=True, nogil=True)
def _clip_ring(x, y, a, b, ca, cb, cc):
    """Sutherland-Hodgman: the ring ``x[a:b], y[a:b]`` cut to ``ca + cb x + cc y >= 0``."""
    n = b - a
    ox = np.empty(2 * n + 2)
    oy = np.empty(2 * n + 2)
    m = 0
    for i in range(n):
        i0, i1 = a + i, a + (i + 1) % n
        s0 = ca + cb * x[i0] + cc * y[i0]
        s1 = ca + cb * x[i1] + cc * y[i1]
        if s0 >= 0:
            ox[m], oy[m] = x[i0], y[i0]
            m += 1
        if (s0 >= 0) != (s1 >= 0):
            t = s0 / (s0 - s1)
            ox[m], oy[m] = x[i0] + t * (x[i1] - x[i0]), y[i0] + t * (y[i1] - y[i0])
            m += 1
    return ox[:m], oy[:m]


@numba.njit(cache=True, nogil=True)
def _lune_piece(p, ring_off, ring_sign, r0, r1, c, sector):
    """The part of a footprint in longitude ``[sector, sector + 1] * pi / 2``, cut in the
    gnomonic plane about ``c``: ``(vectors, ring_off, ring_sign)`` of its non-empty rings."""
    ex, ey, ez, nx, ny, nz = _frame(c)
    nv = ring_off[r1] - ring_off[r0]
    x = np.empty(nv)
    y = np.empty(nv)
    for v in range(nv):
        q = ring_off[r0] + v
        d = p[q, 0] * c[0] + p[q, 1] * c[1] + p[q, 2] * c[2]
        x[v] = (p[q, 0] * ex + p[q, 1] * ey + p[q, 2] * ez) / d
        y[v] = (p[q, 0] * nx + p[q, 1] * ny + p[q, 2] * nz) / d
    lo, hi = sector * (math.pi / 2), (sector + 1.0) * (math.pi / 2)
    # half-spaces n . P >= 0 of the two meridian planes, as lines in the gnomonic plane
    planes = ((-math.sin(lo), math.cos(lo)), (math.sin(hi), -math.cos(hi)))
    out = np.empty((4 * nv + 8, 3))
    off = np.zeros(r1 - r0 + 1, np.int64)
    sign = np.empty(r1 - r0)
    m = 0
    nr = 0
    for r in range(r0, r1):
        rx, ry = (
            x[ring_off[r] - ring_off[r0] : ring_off[r + 1] - ring_off[r0]],
            y[ring_off[r] - ring_off[r0] : ring_off[r + 1] - ring_off[r0]],
        )
        for gx, gy in planes:
            ca = gx * c[0] + gy * c[1]
            cb = gx * ex + gy * ey
            cc = gx * nx + gy * ny
            rx, ry = _clip_ring(rx, ry, 0, rx.size, ca, cb, cc)
            if rx.size < 3:
                break
        if rx.size < 3:
            continue
        for v in range(rx.size):
            px, py, pz = (
                c[0] + rx[v] * ex + ry[v] * nx,
                c[1] + rx[v] * ey + ry[v] * ny,
                c[2] + rx[v] * ez + ry[v] * nz,
            )
            q = 1.0 / math.sqrt(px * px + py * py + pz * pz)
            out[m, 0], out[m, 1], out[m, 2] = px * q, py * q, pz * q
            m += 1
        sign[nr] = ring_sign[r]
        nr += 1
        off[nr] = m
    return out[:m], off[: nr + 1], sign[:nr]


@numba.njit(cache=True, nogil=True)
def _sort_cells(cells, covs, n):
    """Sort ``cells[:n]`` (with ``covs``) and sum the overlaps of repeated cells; returns the new
    count."""
    if n > 32:
        o = np.argsort(cells[:n])
        c2 = cells[:n][o]
        w2 = covs[:n][o]
        cells[:n] = c2
        covs[:n] = w2
    else:
        for a in range(1, n):
            cv, wv = cells[a], covs[a]
            b = a - 1
            while b >= 0 and cells[b] > cv:
                cells[b + 1] = cells[b]
                covs[b + 1] = covs[b]
                b -= 1
            cells[b + 1] = cv
            covs[b + 1] = wv
    m = 0
    for a in range(n):
        if m > 0 and cells[a] == cells[m - 1]:
            covs[m - 1] += covs[a]
        else:
            cells[m], covs[m] = cells[a], covs[a]
            m += 1
    return m


@numba.njit(cache=True, nogil=True)
def chart_cells(order, p, centres, ring_off, ring_sign, poly_ring_off, p_lo, p_hi, tol):
    """Cells and overlap weights of footprints ``p_lo .. p_hi - 1``.

    ``p`` holds the vertices' unit vectors (rings flat, no closing vertex), ``centres`` the
    footprints' centre vectors (footprints lie within 90 degrees of them). Returns
    ``(footprint, cell, weight)``: pairs sorted by footprint then cell, weights summing to 1 per
    footprint.
    """
    nside = float(np.int64(1) << order)
    cap = 16 * (p_hi - p_lo) + 16
    out_p = np.empty(cap, np.int64)
    out_c = np.empty(cap, np.int64)
    out_w = np.empty(cap)
    k_out = 0
    out = (np.empty(256), np.empty(256), np.empty(256), np.empty(256))  # plane U, V, t, z
    pring = np.empty(64, np.int64)
    area = np.zeros(256)
    cover = np.zeros(256)
    ts = np.empty(64)
    cells = np.empty(256, np.int64)
    covs = np.empty(256)
    for f in range(p_lo, p_hi):
        r0, r1 = poly_ring_off[f], poly_ring_off[f + 1]
        c = centres[f]
        phi_ref = math.atan2(c[1], c[0])
        # belt formulas unless the footprint comes near the polar caps; then one polar sector
        mode = 0
        for v in range(ring_off[r0], ring_off[r1]):
            if abs(p[v, 2]) > TWO_THIRDS - BELT_MARGIN:
                mode = 1
                break
        sector = math.floor(phi_ref * (2.0 / math.pi))
        if r1 - r0 + 1 > pring.size:
            pring = np.empty(2 * (r1 - r0 + 1), np.int64)
        k, out = _polyline_grown(p, ring_off, r0, r1, (nside, phi_ref, mode, sector, tol), out, pring)
        if mode == 0 and _max_abs(out[3], k) > TWO_THIRDS - 0.5 * BELT_MARGIN:
            mode = 1  # an edge bulges towards a pole: redo in one sector
            k, out = _polyline_grown(p, ring_off, r0, r1, (nside, phi_ref, mode, sector, tol), out, pring)
        pu, pv = out[0], out[1]
        n = 0
        if mode == 0 or _in_sector(out[2], out[3], k, sector):
            box = _box_size(pu, pv, k)
            if box > area.size:
                area, cover = np.zeros(2 * box), np.zeros(2 * box)
            if box > cells.size:
                cells, covs = np.empty(2 * box, np.int64), np.empty(2 * box)
            n = _cover(order, pu, pv, pring, r1 - r0, ring_sign, r0, area, cover, ts, cells, covs, 0)
        else:
            # across polar sectors: the footprint's part in each sector, overlaps added up
            for ks in range(4):
                q, q_off, q_sign = _lune_piece(p, ring_off, ring_sign, r0, r1, c, ks)
                nq = q_off.size - 1
                if nq == 0:
                    continue
                if nq + 1 > pring.size:
                    pring = np.empty(2 * (nq + 1), np.int64)
                lune = (nside, (ks + 0.5) * (math.pi / 2), 1, float(ks), tol)
                kq, out = _polyline_grown(q, q_off, 0, nq, lune, out, pring)
                pu, pv = out[0], out[1]
                box = _box_size(pu, pv, kq)
                if box > area.size:
                    area, cover = np.zeros(2 * box), np.zeros(2 * box)
                if n + box > cells.size:
                    cells, covs = _grow(cells, 2 * (n + box)), _grow(covs, 2 * (n + box))
                n = _cover(order, pu, pv, pring, nq, q_sign, 0, area, cover, ts, cells, covs, n)
                if n < 0:
                    break
        if n < 0:
            raise ValueError("footprint mapped outside the HEALPix plane")
        if n == 0:  # smaller than the rounding of the sweep: all in the cell of a vertex
            cells[0] = square_cell(order, np.int64(math.floor(pu[0])), np.int64(math.floor(pv[0])))
            covs[0] = 1.0
            n = 1
        n = _sort_cells(cells, covs, n)
        total = 0.0
        for a in range(n):
            total += covs[a]
        if k_out + n > out_p.size:
            out_p = _grow(out_p, k_out + n)
            out_c = _grow(out_c, k_out + n)
            out_w = _grow(out_w, k_out + n)
        for a in range(n):
            out_p[k_out] = f
            out_c[k_out] = cells[a]
            out_w[k_out] = covs[a] / total
            k_out += 1
    return out_p[:k_out].copy(), out_c[:k_out].copy(), out_w[:k_out].copy()

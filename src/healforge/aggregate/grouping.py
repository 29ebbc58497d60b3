"""Grouping rows by cell and sorting values within cells (numba; one O(n) pass plus small sorts)."""

from __future__ import annotations

import numba
import numpy as np

_DENSE_LIMIT = 1 << 25


def cell_index(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique cells and each row's index into them (like ``np.unique(..., return_inverse)``)."""
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    top = int(cells.max())
    if cells.min() >= 0 and top < _DENSE_LIMIT and top < 64 * cells.size:
        present = np.zeros(top + 1, dtype=np.int64)
        present[cells] = 1
        cell_ids = np.flatnonzero(present)
        rank = np.cumsum(present) - 1
        return cell_ids.astype(np.int64), rank[cells]
    cell_ids, inv = np.unique(cells, return_inverse=True)
    return cell_ids, inv.astype(np.int64)


@numba.njit(cache=True, nogil=True)
def segment_offsets(inv, ncell):
    """Start of each cell's run in cell order (a counting sort's prefix sums), ``ncell + 1`` long."""
    offsets = np.zeros(ncell + 1, np.int64)
    for i in range(inv.size):
        offsets[inv[i] + 1] += 1
    for c in range(ncell):
        offsets[c + 1] += offsets[c]
    return offsets


@numba.njit(cache=True, nogil=True)
def insertion_sort_pairs(keys, values, a, b):
    """Sort ``keys[a:b]`` in place, moving ``values[a:b]`` along (short segments: no allocation)."""
    for k in range(a + 1, b):
        x = keys[k]
        y = values[k]
        j = k - 1
        while j >= a and keys[j] > x:
            keys[j + 1] = keys[j]
            values[j + 1] = values[j]
            j -= 1
        keys[j + 1] = x
        values[j + 1] = y


@numba.njit(cache=True, nogil=True)
def _group_sort(inv, values, ncell):
    n = inv.size
    offsets = segment_offsets(inv, ncell)
    pos = offsets[:-1].copy()
    perm = np.empty(n, np.int64)
    vs = np.empty(n, np.float64)
    for i in range(n):
        c = inv[i]
        perm[pos[c]] = i
        vs[pos[c]] = values[i]
        pos[c] += 1
    for c in range(ncell):
        a = offsets[c]
        b = offsets[c + 1]
        if b - a <= 1:
            continue
        if b - a <= 32:  # insertion sort on contiguous values, no allocation
            insertion_sort_pairs(vs, perm, a, b)
        else:
            o = np.argsort(vs[a:b])
            seg = perm[a:b][o]
            perm[a:b] = seg
            vs[a:b] = vs[a:b][o]
    return perm, offsets, vs


@numba.njit(cache=True, nogil=True)
def _segment_mad(v, starts, n, med):
    out = np.full(starts.size, np.nan)
    for s in range(starts.size):
        a = starts[s]
        m = n[s]
        if m == 0:
            continue
        c = med[s]
        # deviations below the median (read backwards) and above it are each ascending: merge
        split = a
        while split < a + m and v[split] < c:
            split += 1
        i = split - 1
        j = split
        lo_rank = (m - 1) // 2
        hi_rank = m // 2
        prev = 0.0
        for r in range(hi_rank + 1):
            if i >= a and (j >= a + m or c - v[i] <= v[j] - c):
                d = c - v[i]
                i -= 1
            else:
                d = v[j] - c
                j += 1
            if r == lo_rank:
                prev = d
            if r == hi_rank:
                out[s] = 0.5 * (prev + d)
    return out


def segment_mad(v_sorted: np.ndarray, starts: np.ndarray, n: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Median absolute deviation from ``median`` of each segment of values sorted within segments."""
    return _segment_mad(
        np.ascontiguousarray(v_sorted, np.float64),
        np.ascontiguousarray(starts, np.int64),
        np.ascontiguousarray(n, np.int64),
        np.ascontiguousarray(median, np.float64),
    )


def group_sort(inv: np.ndarray, values: np.ndarray, ncell: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permutation ordering rows by (cell index, value), the ``ncell + 1`` segment offsets, and the
    values in that order."""
    return _group_sort(
        np.ascontiguousarray(inv, dtype=np.int64), np.ascontiguousarray(values, dtype=np.float64), int(ncell)
    )


@numba.njit(cache=True, nogil=True)
def _minmax(ci, v, ncell):
    lo = np.full(ncell, np.nan)
    hi = np.full(ncell, np.nan)
    for i in range(ci.size):
        c = ci[i]
        x = v[i]
        if not (lo[c] <= x):  # also true while lo[c] is NaN
            lo[c] = x
        if not (hi[c] >= x):
            hi[c] = x
    return lo, hi


def minmax(ci: np.ndarray, v: np.ndarray, ncell: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell minimum and maximum of non-NaN values (NaN for cells without values)."""
    return _minmax(np.ascontiguousarray(ci, np.int64), np.ascontiguousarray(v, np.float64), int(ncell))


@numba.njit(cache=True, nogil=True)
def _group_cells(inv, ncell):
    n = inv.size
    offsets = segment_offsets(inv, ncell)
    pos = offsets[:-1].copy()
    perm = np.empty(n, np.int64)
    for i in range(n):
        c = inv[i]
        perm[pos[c]] = i
        pos[c] += 1
    return perm, offsets


@numba.njit(cache=True, nogil=True)
def _group_dense(cells, top):
    counts = np.zeros(top + 1, np.int64)
    for i in range(cells.size):
        counts[cells[i]] += 1
    ncell = 0
    for c in range(top + 1):
        if counts[c] > 0:
            ncell += 1
    cell_ids = np.empty(ncell, np.int64)
    offsets = np.zeros(ncell + 1, np.int64)
    pos = np.empty(top + 1, np.int64)
    k = 0
    for c in range(top + 1):
        if counts[c] > 0:
            cell_ids[k] = c
            pos[c] = offsets[k]
            offsets[k + 1] = offsets[k] + counts[c]
            k += 1
    perm = np.empty(cells.size, np.int64)
    for i in range(cells.size):
        c = cells[i]
        perm[pos[c]] = i
        pos[c] += 1
    return cell_ids, perm, offsets


def group_by_cell(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted unique cells, and the counting sort of rows by cell (permutation, ``ncell + 1``
    offsets): :func:`cell_index` then :func:`group_cells` in one pass where cells are small."""
    cells = np.ascontiguousarray(cells, dtype=np.int64)
    if cells.size and cells.min() >= 0:
        top = int(cells.max())
        if top < _DENSE_LIMIT and top < 64 * cells.size:
            return _group_dense(cells, top)
    cell_ids, inv = cell_index(cells)
    return (cell_ids, *group_cells(inv, cell_ids.size))


def group_cells(inv: np.ndarray, ncell: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort of rows by cell index: permutation and ``ncell + 1`` offsets."""
    return _group_cells(np.ascontiguousarray(inv, np.int64), int(ncell))


@numba.njit(cache=True, nogil=True)
def _gather(values, perm):
    out = np.empty(perm.size, np.float64)
    for i in range(perm.size):
        out[i] = values[perm[i]]
    return out


@numba.njit(cache=True, nogil=True)
def _sort_within(vs, offsets):
    ncell = offsets.size - 1
    out_off = np.zeros(ncell + 1, np.int64)
    k = 0
    for c in range(ncell):
        a = offsets[c]
        b = offsets[c + 1]
        if b - a <= 32:
            # small segment: drop NaNs, moving it down to position k (k <= a: reads stay ahead
            # of writes), then insertion sort in place (indexing only, no views)
            k0 = k
            for i in range(a, b):
                x = vs[i]
                if x == x:
                    vs[k] = x
                    k += 1
            for i in range(k0 + 1, k):
                x = vs[i]
                j = i - 1
                while j >= k0 and vs[j] > x:
                    vs[j + 1] = vs[j]
                    j -= 1
                vs[j + 1] = x
        else:
            # np.sort on a copy, not ndarray.sort() on a view: the latter came back wrong when
            # loaded from numba's on-disk cache (numba 0.68), fine when freshly compiled.
            seg = np.sort(vs[a:b])  # NaNs last
            for i in range(b - a):
                x = seg[i]
                if x != x:
                    break
                vs[k] = x
                k += 1
        out_off[c + 1] = k
    return vs[:k], out_off


def gathered(values: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """``values[perm]`` as float64 (rows grouped by cell with a permutation of :func:`group_cells`)."""
    return _gather(np.ascontiguousarray(values, np.float64), np.ascontiguousarray(perm, np.int64))


def sorted_by_cell(
    values: np.ndarray, perm: np.ndarray, offsets: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Non-NaN values ordered by (cell, value) using a cell grouping from :func:`group_cells`,
    and the new ``ncell + 1`` offsets."""
    return _sort_within(gathered(values, perm), np.ascontiguousarray(offsets, np.int64))


@numba.njit(cache=True, nogil=True, inline="always")
def _add(hi, lo, x):
    """``hi + lo`` plus ``x`` as a sum and its rounding error (TwoSum): summing this way is
    exact to about 2**-106, so its rounded result does not depend on the order of the values."""
    s = hi + x
    t = s - hi
    return s, lo + ((hi - (s - t)) + (x - t))


@numba.njit(cache=True, nogil=True)
def _sum_and_m2(v, a, b):
    hi = 0.0
    lo = 0.0
    for i in range(a, b):
        hi, lo = _add(hi, lo, v[i])
    total = hi + lo
    mean = total / (b - a)
    hi = 0.0
    lo = 0.0
    for i in range(a, b):
        d = v[i] - mean
        hi, lo = _add(hi, lo, d * d)
    return total, hi + lo


@numba.njit(cache=True, nogil=True)
def _segment_sums(v, starts, n):
    total = np.zeros(starts.size)
    m2 = np.zeros(starts.size)
    for s in range(starts.size):
        if n[s] > 0:
            total[s], m2[s] = _sum_and_m2(v, starts[s], starts[s] + n[s])
    return total, m2


def segment_sums(v: np.ndarray, starts: np.ndarray, n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum and M2 (squared deviations from the mean) of each segment ``v[starts:starts + n]``,
    accumulated exactly enough that the order of the values does not change them."""
    return _segment_sums(
        np.ascontiguousarray(v, np.float64),
        np.ascontiguousarray(starts, np.int64),
        np.ascontiguousarray(n, np.int64),
    )


@numba.njit(cache=True, nogil=True)
def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi]`` so that ``a[k]`` is its k-th smallest, smaller values before it and
    larger after (Hoare partitions, median-of-three pivots)."""
    while hi - lo > 1:
        mid = (lo + hi - 1) // 2
        x, y, z = a[lo], a[mid], a[hi - 1]
        pivot = max(min(x, y), min(max(x, y), z))
        i = lo
        j = hi - 1
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j + 1
        elif k >= i:
            lo = i
        else:
            return


@numba.njit(cache=True, nogil=True)
def _rank_pair(buf, m, r):
    """The r-th and (r+1)-th smallest of ``buf[:m]`` (the same twice at the end)."""
    _select(buf, 0, m, r)
    a = buf[r]
    if r + 1 >= m:
        return a, a
    b = buf[r + 1]
    for i in range(r + 2, m):
        if buf[i] < b:
            b = buf[i]
    return a, b


@numba.njit(cache=True, nogil=True)
def _quantile_of(buf, m, q):
    pos = q * (m - 1)
    lo = int(np.floor(pos))
    frac = pos - lo
    a, b = _rank_pair(buf, m, lo)
    return a if frac == 0 else a + frac * (b - a)


@numba.njit(cache=True, nogil=True)
def _segment_select(vs, offsets, qs, want_mad):
    nseg = offsets.size - 1
    n = np.zeros(nseg, np.int64)
    total = np.zeros(nseg)
    m2 = np.full(nseg, np.nan)
    lo_v = np.full(nseg, np.nan)
    hi_v = np.full(nseg, np.nan)
    quant = np.full((qs.size, nseg), np.nan)
    mad = np.full(nseg, np.nan)
    longest = 0
    for s in range(nseg):
        longest = max(longest, offsets[s + 1] - offsets[s])
    buf = np.empty(longest)
    dev = np.empty(longest)
    for s in range(nseg):
        m = 0
        for i in range(offsets[s], offsets[s + 1]):
            x = vs[i]
            if x == x:
                buf[m] = x
                m += 1
        n[s] = m
        if m == 0:
            continue
        total[s], m2[s] = _sum_and_m2(buf, 0, m)
        mn = buf[0]
        mx = buf[0]
        for i in range(m):
            mn = min(mn, buf[i])
            mx = max(mx, buf[i])
        lo_v[s] = mn
        hi_v[s] = mx
        for j in range(qs.size):
            quant[j, s] = _quantile_of(buf, m, qs[j])
        if want_mad:
            c = _quantile_of(buf, m, 0.5)
            for i in range(m):
                dev[i] = abs(buf[i] - c)
            a, b = _rank_pair(dev, m, (m - 1) // 2)
            mad[s] = 0.5 * (a + (a if m % 2 else b))
    return n, total, m2, lo_v, hi_v, quant, mad


def segment_select(
    values: np.ndarray, offsets: np.ndarray, qs: np.ndarray, mad: bool
) -> tuple[np.ndarray, ...]:
    """Per segment of ``values`` (grouped, not sorted; NaN = missing) by selection instead of a
    sort: count, sum, M2 about the mean, min, max, the numpy-linear quantiles ``qs`` (one row
    each) and, with ``mad``, the median absolute deviation (NaN for empty segments)."""
    return _segment_select(
        np.ascontiguousarray(values, np.float64),
        np.ascontiguousarray(offsets, np.int64),
        np.ascontiguousarray(qs, np.float64),
        bool(mad),
    )

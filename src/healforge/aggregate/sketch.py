"""Mergeable quantile sketch (merging t-digest), held as columnar arrays.

A sketch set covers many segments (one per cell): ``offsets`` (int64, ``nseg + 1``) delimit each
segment's centroids in the flat arrays ``means`` and ``weights`` (float64), sorted by mean within
a segment. Weights are point counts. Compression uses the arcsine scale function
``k(q) = delta / (2 pi) * asin(2 q - 1)``: a centroid may grow while it spans at most one unit of
``k``, so tails keep small centroids and a segment keeps about ``pi * delta / 2`` centroids at most.
Segments with at most ``2 * delta`` centroids are not compressed, so cells with few points keep
every value and give exact quantiles.
"""

from __future__ import annotations

import numba
import numpy as np

from healforge.aggregate.grouping import insertion_sort_pairs

DEFAULT_DELTA = 200.0
# Segments with at most KEEP_FACTOR * delta centroids are left as they are (small cells stay exact).
KEEP_FACTOR = 2.0


@numba.njit(cache=True, nogil=True)
def _k(q: float, delta: float) -> float:
    x = 2.0 * q - 1.0
    if x > 1.0:
        x = 1.0
    elif x < -1.0:
        x = -1.0
    return delta / (2.0 * np.pi) * np.arcsin(x)


@numba.njit(cache=True, nogil=True)
def _compress(offsets, means, weights, delta, keep):
    nseg = offsets.size - 1
    out_m = np.empty(means.size, dtype=np.float64)
    out_w = np.empty(means.size, dtype=np.float64)
    out_off = np.zeros(nseg + 1, dtype=np.int64)
    k = 0
    for s in range(nseg):
        a = offsets[s]
        b = offsets[s + 1]
        if b - a <= keep:
            for i in range(a, b):
                out_m[k] = means[i]
                out_w[k] = weights[i]
                k += 1
        else:
            total = 0.0
            for i in range(a, b):
                total += weights[i]
            cur_m = means[a]
            cur_w = weights[a]
            left = 0.0
            k_left = _k(0.0, delta)
            for i in range(a + 1, b):
                w = weights[i]
                if _k((left + cur_w + w) / total, delta) - k_left <= 1.0:
                    cur_w += w
                    cur_m += (means[i] - cur_m) * (w / cur_w)
                else:
                    out_m[k] = cur_m
                    out_w[k] = cur_w
                    k += 1
                    left += cur_w
                    k_left = _k(left / total, delta)
                    cur_m = means[i]
                    cur_w = w
            out_m[k] = cur_m
            out_w[k] = cur_w
            k += 1
        out_off[s + 1] = k
    return out_off, out_m[:k].copy(), out_w[:k].copy()


def compress(
    offsets: np.ndarray, means: np.ndarray, weights: np.ndarray, delta: float = DEFAULT_DELTA
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Compress segments whose centroids are sorted by mean; returns ``(offsets, means, weights)``."""
    return _compress(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(means, dtype=np.float64),
        np.ascontiguousarray(weights, dtype=np.float64),
        float(delta),
        int(KEEP_FACTOR * delta),
    )


def _compress_fresh(offsets, means, weights, delta):
    """:func:`compress` for arrays the caller has just made: when no segment is large enough to
    be compressed, they are returned as they are (no copy)."""
    offsets = np.ascontiguousarray(offsets, dtype=np.int64)
    keep = int(KEEP_FACTOR * delta)
    if offsets.size < 2 or int(np.diff(offsets).max()) <= keep:
        return (
            offsets,
            np.ascontiguousarray(means, dtype=np.float64),
            np.ascontiguousarray(weights, dtype=np.float64),
        )
    return compress(offsets, means, weights, delta)


def from_sorted_values(offsets: np.ndarray, values: np.ndarray, delta: float = DEFAULT_DELTA):
    """Sketches of segments of values already sorted within each segment."""
    return _compress_fresh(offsets, values, np.ones(values.size), delta)


@numba.njit(cache=True, nogil=True)
def _merge_runs(means, weights, run_start, run_len, run_order, run_segment, nseg):
    # runs (the input segments, each sorted by mean) copied in run_order, which groups them by
    # output segment and keeps input order within one: sequential reads, no scatter
    offsets = np.zeros(nseg + 1, np.int64)
    longest = 0
    for r in range(run_order.size):
        offsets[run_segment[run_order[r]] + 1] += run_len[run_order[r]]
    for c in range(nseg):
        longest = max(longest, offsets[c + 1])
        offsets[c + 1] += offsets[c]
    m = np.empty(offsets[nseg])
    w = np.empty(offsets[nseg])
    k = 0
    for r in range(run_order.size):
        g = run_order[r]
        for i in range(run_start[g], run_start[g] + run_len[g]):
            m[k] = means[i]
            w[k] = weights[i]
            k += 1
    tm = np.empty(longest)
    tw = np.empty(longest)
    for c in range(nseg):
        a = offsets[c]
        b = offsets[c + 1]
        if b - a <= 1:
            continue
        if b - a <= 32:
            insertion_sort_pairs(m, w, a, b)
            continue
        runs = 0
        split = a
        for k in range(a + 1, b):
            if m[k] < m[k - 1]:
                runs += 1
                split = k
        if runs == 0:
            continue
        if runs == 1:  # two sorted runs: merge them linearly
            n = b - a
            for i in range(n):
                tm[i] = m[a + i]
                tw[i] = w[a + i]
            i = 0
            j = split - a
            mid = split - a
            for k in range(a, b):
                if j >= n or (i < mid and tm[i] <= tm[j]):
                    m[k] = tm[i]
                    w[k] = tw[i]
                    i += 1
                else:
                    m[k] = tm[j]
                    w[k] = tw[j]
                    j += 1
        else:
            o = np.argsort(m[a:b])
            m[a:b] = m[a:b][o]
            w[a:b] = w[a:b][o]
    return offsets, m, w


def merge(
    sets: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    segment_of: np.ndarray,
    run_order: np.ndarray,
    nseg: int,
    delta: float = DEFAULT_DELTA,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge sketch sets (``(offsets, means, weights)`` each) into ``nseg`` compressed sketches.

    ``segment_of``: the output segment of every input segment, the sets' segments end to end;
    ``run_order``: those input segments ordered by output segment, in input order within one
    (a stable argsort of ``segment_of``)."""
    starts, lengths, base = [], [], 0
    for off, means, _ in sets:
        off = np.asarray(off, np.int64)
        starts.append(base + off[:-1])
        lengths.append(np.diff(off))
        base += means.size
    offsets, m, w = _merge_runs(
        np.concatenate([np.asarray(x[1], np.float64) for x in sets]),
        np.concatenate([np.asarray(x[2], np.float64) for x in sets]),
        np.concatenate(starts),
        np.concatenate(lengths),
        np.ascontiguousarray(run_order, np.int64),
        np.ascontiguousarray(segment_of, np.int64),
        int(nseg),
    )
    return _compress_fresh(offsets, m, w, delta)


@numba.njit(cache=True, nogil=True)
def _quantiles(offsets, means, weights, lo, hi, qs):
    nseg = offsets.size - 1
    out = np.full((nseg, qs.size), np.nan)
    for s in range(nseg):
        a = offsets[s]
        b = offsets[s + 1]
        if b == a:
            continue
        n = 0.0
        for i in range(a, b):
            n += weights[i]
        for j in range(qs.size):
            r = qs[j] * (n - 1.0)  # 0-based rank, numpy 'linear' definition
            # centroid i covers ranks [c, c + w - 1], centred at c + (w - 1) / 2
            prev_pos = 0.0
            prev_val = lo[s]
            c = 0.0
            done = False
            for i in range(a, b):
                pos = c + (weights[i] - 1.0) / 2.0
                if r <= pos:
                    if pos > prev_pos:
                        out[s, j] = prev_val + (means[i] - prev_val) * (r - prev_pos) / (pos - prev_pos)
                    else:
                        out[s, j] = means[i]
                    done = True
                    break
                prev_pos = pos
                prev_val = means[i]
                c += weights[i]
            if not done:
                end = n - 1.0
                if end > prev_pos:
                    out[s, j] = prev_val + (hi[s] - prev_val) * (r - prev_pos) / (end - prev_pos)
                else:
                    out[s, j] = hi[s]
    return out


def quantiles(
    offsets: np.ndarray, means: np.ndarray, weights: np.ndarray, lo: np.ndarray, hi: np.ndarray, qs
) -> np.ndarray:
    """Quantiles ``qs`` of each segment, shape ``(nseg, len(qs))``; ``lo``/``hi`` are exact min/max."""
    return _quantiles(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(means, dtype=np.float64),
        np.ascontiguousarray(weights, dtype=np.float64),
        np.ascontiguousarray(lo, dtype=np.float64),
        np.ascontiguousarray(hi, dtype=np.float64),
        np.ascontiguousarray(np.atleast_1d(qs), dtype=np.float64),
    )


@numba.njit(cache=True, nogil=True)
def _mad(offsets, means, weights, med):
    nseg = offsets.size - 1
    out = np.full(nseg, np.nan)
    for s in range(nseg):
        a = offsets[s]
        b = offsets[s + 1]
        if b == a:
            continue
        d = np.abs(means[a:b] - med[s])
        w = weights[a:b]
        order = np.argsort(d)
        n = 0.0
        for i in range(b - a):
            n += w[i]
        r = 0.5 * (n - 1.0)
        c = 0.0
        prev_pos = 0.0
        prev_val = 0.0
        first = True
        for ii in range(b - a):
            i = order[ii]
            pos = c + (w[i] - 1.0) / 2.0
            if r <= pos:
                if first or pos <= prev_pos:
                    out[s] = d[i]
                else:
                    out[s] = prev_val + (d[i] - prev_val) * (r - prev_pos) / (pos - prev_pos)
                break
            first = False
            prev_pos = pos
            prev_val = d[i]
            c += w[i]
    return out


def mad(offsets: np.ndarray, means: np.ndarray, weights: np.ndarray, median: np.ndarray) -> np.ndarray:
    """Approximate median absolute deviation of each segment from its (sketch) median."""
    return _mad(
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(means, dtype=np.float64),
        np.ascontiguousarray(weights, dtype=np.float64),
        np.ascontiguousarray(median, dtype=np.float64),
    )

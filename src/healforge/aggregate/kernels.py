"""Exact per-cell statistics, vectorised: one sort by (cell, value), then segment arithmetic.

Statistic names are those of :mod:`healforge.aggregate.statistics` (the one vocabulary): output
columns are ``{column}_{name as given}``. Quantiles use numpy's default linear interpolation;
``weighted_*`` use weights = sidecar (area) weight times an optional user weight.

User statistics: a binary numpy ufunc of :mod:`healforge.registry` (``maximum``, ``add``, ...
applied with ``ufunc.reduceat``, vectorised), one of its numpy reductions (``ptp``...) or, from
the Python API, a callable taking the 1-D array of a cell's valid values (called once per cell,
so it is as fast as the function). Names never import a module.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numba
import numpy as np

from healforge.aggregate.grouping import (
    cell_index,
    gathered,
    group_by_cell,
    group_sort,
    minmax,
    segment_mad,
    segment_select,
    segment_sums,
    sorted_by_cell,
)
from healforge.aggregate.statistics import (
    DEFAULT_STATS,
    MAD_TO_STD,
    MOMENTS,
    REGISTERED,
    WEIGHTED,
    Stat,
    resolve_all,
)

__all__ = ["DEFAULT_STATS", "cell_statistics", "validate_stats"]


def validate_stats(stats: Sequence[str]) -> list[Stat]:
    """Resolve statistic names (``count`` first; ``ValueError`` naming a bad one)."""
    return resolve_all(stats)


def _segment_quantile(sorted_vals: np.ndarray, starts: np.ndarray, n: np.ndarray, q: float) -> np.ndarray:
    """numpy-linear quantile of each segment of sorted values (NaN where n == 0)."""
    out = np.full(starts.shape, np.nan)
    ok = n > 0
    pos = q * (n[ok] - 1)
    lo = np.floor(pos).astype(np.int64)
    frac = pos - lo
    hi = np.minimum(lo + 1, n[ok] - 1)
    a = sorted_vals[starts[ok] + lo]
    b = sorted_vals[starts[ok] + hi]
    out[ok] = a + frac * (b - a)
    # exact endpoints (avoid a + 0 * (inf - inf) surprises)
    out[ok] = np.where(frac == 0, a, out[ok])
    return out


def cell_statistics(
    cells: np.ndarray,
    values: dict[str, np.ndarray],
    stats: Sequence[str | Stat] = DEFAULT_STATS,
    weights: np.ndarray | None = None,
    ddof: int = 1,
    min_count: int = 1,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Exact statistics of every column per cell.

    Parameters
    ----------
    cells
        int64 cell of each row.
    values
        Column name -> float64 values (NaN = missing, not counted).
    stats
        Statistic names or resolved :class:`~healforge.aggregate.statistics.Stat`; ``count`` is
        always included.
    weights
        Per-row weights for the ``weighted_*`` statistics (default 1).
    ddof
        Delta degrees of freedom of ``var`` / ``std`` (unless a statistic carries its own).
    min_count
        Statistics of a cell with fewer valid values are NaN (the count is kept).

    Returns
    -------
    cell_ids, columns
        Sorted unique cells having at least one row, and ``{column}_{label}`` -> array.
    """
    if not all(isinstance(s, Stat) for s in stats) or not any(s.function == "count" for s in stats):
        stats = validate_stats([s.label if isinstance(s, Stat) else s for s in stats])
    cells = np.asarray(cells, dtype=np.int64)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    moments_only = all(s.function in MOMENTS or s.function in WEIGHTED for s in stats)
    if moments_only and cells.size and cells.min() >= 0 and cells.max() < 64 * cells.size:
        return _dense_moments(cells, values, weights, stats, ddof, min_count)
    if moments_only or any(s.weighted for s in stats):
        cell_ids, cidx = cell_index(cells)
        shared = None
    else:  # one grouping by cell shared by every column, then in-place sorts per cell
        cell_ids, *shared = group_by_cell(cells)
        cidx = None
    ncell = cell_ids.size
    if shared is not None and all(s.function in SELECTABLE for s in stats):
        return cell_ids, _selected_columns(values, *shared, stats, ddof, min_count)

    def one(item):
        col, vals = item
        return _column_statistics(col, vals, cidx, ncell, stats, weights, ddof, min_count, shared)

    out: dict[str, np.ndarray] = {}
    for part in _over_columns(one, list(values.items()), cells.size):
        out.update(part)
    return cell_ids, out


def _over_columns(fn, items: list, rows: int) -> list:
    """``fn`` over the columns, on threads when there are several and enough rows: the kernels
    release the GIL, so columns sort and reduce side by side."""
    if len(items) < 2 or rows < PARALLEL_ROWS:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, items))


#: Rows from which :func:`cell_statistics` computes columns on threads.
PARALLEL_ROWS = 200_000


def _column_statistics(
    col, vals, cidx, ncell, stats, weights, ddof, min_count, shared
) -> dict[str, np.ndarray]:
    """Every statistic of one column: ``{column}_{label}`` -> array over the ``ncell`` cells."""
    vals = np.asarray(vals, dtype=np.float64)
    if shared is not None:  # NaNs are dropped by the sort within cells
        v, starts_all = sorted_by_cell(vals, *shared)
        return _sorted_statistics(col, v, starts_all, None, ncell, stats, ddof, min_count)
    out: dict[str, np.ndarray] = {}
    valid = ~np.isnan(vals)
    all_valid = bool(valid.all())
    idx = None if all_valid else np.flatnonzero(valid)
    ci = cidx if all_valid else cidx[idx]
    v = vals if all_valid else vals[idx]
    if all(s.function in MOMENTS or s.function in WEIGHTED for s in stats):
        wv = None if weights is None else (weights if all_valid else weights[idx])
        res = _moment_stats(ci, v, wv, ncell, stats, ddof)
        for s in stats:
            out[f"{col}_{s.label}"] = _min_count(res[s.label], res["count"], s, min_count)
        return out
    # weighted statistics: this column's own sort, weights moved along
    order, starts_all, v = group_sort(ci, v, ncell)
    w = None if weights is None else (weights if all_valid else weights[idx])[order]
    return _sorted_statistics(col, v, starts_all, w, ncell, stats, ddof, min_count)


#: Statistics found by selection (order statistics without sorting each cell).
SELECTABLE = (*MOMENTS, "quantile", "mad", "robust_std")


def _selected_columns(values, perm, offsets, stats, ddof, min_count) -> dict[str, np.ndarray]:
    """The statistics of every column from a grouping of the rows by cell (``perm``,
    ``offsets``), each cell's quantiles and MAD by selection: the same values as after a sort,
    in linear time. Columns and ranges of cells are computed side by side on threads."""
    qs = sorted({s.q for s in stats if s.function == "quantile"})
    want_mad = any(s.function in ("mad", "robust_std") for s in stats)
    nseg = offsets.size - 1
    # ranges of cells holding about equal numbers of rows, one per core
    cuts = np.searchsorted(offsets, np.linspace(0, offsets[-1], (os.cpu_count() or 1) + 1)[1:-1])
    bounds = np.unique(np.r_[0, np.minimum(cuts, nseg), nseg])
    ranges = list(zip(bounds[:-1], bounds[1:], strict=True)) or [(0, 0)]

    def one(task):
        col, a, b = task
        rows = perm[offsets[a] : offsets[b]]
        return segment_select(
            gathered(values[col], rows), offsets[a : b + 1] - offsets[a], np.asarray(qs, np.float64), want_mad
        )

    values = {col: np.ascontiguousarray(v, np.float64) for col, v in values.items()}
    tasks = [(col, a, b) for col in values for a, b in ranges]
    parts = _over_columns(one, tasks, int(offsets[-1]))
    out: dict[str, np.ndarray] = {}
    for i, col in enumerate(values):
        mine = parts[i * len(ranges) : (i + 1) * len(ranges)]
        joined = [np.concatenate([p[k] for p in mine], axis=-1) for k in range(7)]
        out.update(_selected_statistics(col, *joined, qs, stats, ddof, min_count))
    return out


def _selected_statistics(
    col, n, total, m2, lo, hi, quant, mad, qs, stats, ddof, min_count
) -> dict[str, np.ndarray]:
    """The statistics of one column from :func:`segment_select`'s per-cell results."""
    res: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
        for s in stats:
            f = s.function
            if f == "count":
                r = n
            elif f == "sum":
                r = total
            elif f == "mean":
                r = mean
            elif f in ("var", "std"):
                d = s.ddof_or(ddof)
                var = np.where(n - d > 0, m2 / np.maximum(n - d, 1), np.nan)
                r = var if f == "var" else np.sqrt(var)
            elif f in ("min", "max"):
                r = lo if f == "min" else hi
            elif f == "quantile":
                r = quant[qs.index(s.q)]
            else:
                r = mad if f == "mad" else MAD_TO_STD * mad
            res[s.label] = r
    return {f"{col}_{s.label}": _min_count(res[s.label], n, s, min_count) for s in stats}


def _sorted_statistics(col, v, starts_all, w, ncell, stats, ddof, min_count) -> dict[str, np.ndarray]:
    """The statistics of one column from its valid values sorted by (cell, value), the
    ``ncell + 1`` segment offsets and the weights in the same order (``None``: ones)."""
    out: dict[str, np.ndarray] = {}
    n = np.diff(starts_all)
    starts_all = starts_all[:-1]
    has = n > 0
    starts = starts_all[has]
    nh = n[has]

    def full(x, fill=np.nan, has=has):
        o = np.full(ncell, fill, dtype=np.float64)
        o[has] = x
        return o

    sums, m2 = segment_sums(v, starts, nh)  # the same in any row order
    mean = sums / nh
    med = None
    wparts = None
    res: dict[str, np.ndarray] = {}
    for s in stats:
        f = s.function
        if f == "count":
            r = n
        elif f == "sum":
            r = full(sums, 0.0)
        elif f == "mean":
            r = full(mean)
        elif f in ("var", "std"):
            d = s.ddof_or(ddof)
            with np.errstate(invalid="ignore", divide="ignore"):
                var = np.where(nh - d > 0, m2 / np.maximum(nh - d, 1), np.nan)
            r = full(var if f == "var" else np.sqrt(var))
        elif f == "min":
            r = full(v[starts])
        elif f == "max":
            r = full(v[starts + nh - 1])
        elif f == "quantile":
            r = full(_segment_quantile(v, starts, nh, s.q))
        elif f in ("mad", "robust_std"):
            if med is None:
                med = _segment_quantile(v, starts, nh, 0.5)
                mad = segment_mad(v, starts, nh, med)
            r = full(mad if f == "mad" else MAD_TO_STD * mad)
        elif s.weighted:
            if wparts is None:
                ww = w if w is not None else np.ones_like(v)
                wsum = np.add.reduceat(ww, starts) if starts.size else np.empty(0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    wmean = np.add.reduceat(ww * v, starts) / wsum if starts.size else np.empty(0)
                dev = v - np.repeat(wmean, nh)
                wm2 = np.add.reduceat(ww * dev * dev, starts) if starts.size else np.empty(0)
                wparts = wsum, wmean, wm2
            wsum, wmean, wm2 = wparts
            if f == "weighted_sum":
                r = full(wsum, 0.0)
            elif f == "weighted_mean":
                r = full(wmean)
            else:
                r = full(_weighted_var(wm2, wsum, s.ddof_or(), f == "weighted_std"))
        elif f in REGISTERED:
            r = full(REGISTERED[f].exact(v, starts, nh))
        else:
            kind, fn = s.user
            if kind == "ufunc":
                rr = fn.reduceat(v, starts) if starts.size else np.empty(0)
            else:
                with warnings.catch_warnings(), np.errstate(all="ignore"):  # a cell's NaN is its answer
                    warnings.simplefilter("ignore", RuntimeWarning)
                    rr = np.array([fn(seg) for seg in np.split(v, starts[1:])], dtype=np.float64)
            r = full(rr)
        res[s.label] = r
    for s in stats:
        out[f"{col}_{s.label}"] = _min_count(res[s.label], n, s, min_count)
    return out


def _min_count(arr: np.ndarray, n: np.ndarray, s: Stat, min_count: int) -> np.ndarray:
    if s.function != "count" and min_count > 1:
        return np.where(n >= min_count, arr, np.nan)
    return arr


def _weighted_var(wm2: np.ndarray, wsum: np.ndarray, ddof: int, std: bool) -> np.ndarray:
    """``wm2 / (wsum - ddof)`` (NaN where that is not positive), or its square root."""
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.where(wsum - ddof > 0, wm2 / (wsum - ddof), np.nan)
    return np.sqrt(v) if std else v


def _dense_moments(cells, values, weights, stats, ddof, min_count):
    """Moment statistics indexed directly by cell number (no unique/rank pass), then compacted."""
    ncell = int(cells.max()) + 1
    present = np.bincount(cells, minlength=ncell) > 0
    cell_ids = np.flatnonzero(present).astype(np.int64)

    def one(item):
        col, vals = item
        vals = np.asarray(vals, dtype=np.float64)
        valid = ~np.isnan(vals)
        if valid.all():
            ci, v, w = cells, vals, weights
        else:
            ci, v = cells[valid], vals[valid]
            w = None if weights is None else weights[valid]
        res = _moment_stats(ci, v, w, ncell, stats, ddof)
        n = res["count"][present]
        return {f"{col}_{s.label}": _min_count(res[s.label][present], n, s, min_count) for s in stats}

    out = {}
    for part in _over_columns(one, list(values.items()), cells.size):
        out.update(part)
    return cell_ids, out


@numba.njit(cache=True, nogil=True)
def _moments_nb(ci, v, ncell):
    """Count, sum, mean and M2 per cell in two passes over the rows (the second pass takes
    deviations from the first pass's mean and corrects both: exact to rounding with large
    offsets). Cells without rows get NaN mean and M2."""
    n = np.zeros(ncell, np.int64)
    s = np.zeros(ncell)
    for i in range(ci.size):
        n[ci[i]] += 1
        s[ci[i]] += v[i]
    mean0 = np.empty(ncell)
    for c in range(ncell):
        mean0[c] = s[c] / n[c] if n[c] > 0 else np.nan
    sd = np.zeros(ncell)
    sdd = np.zeros(ncell)
    for i in range(ci.size):
        c = ci[i]
        d = v[i] - mean0[c]
        sd[c] += d
        sdd[c] += d * d
    mean = np.empty(ncell)
    m2 = np.empty(ncell)
    for c in range(ncell):
        if n[c] > 0:
            mean[c] = mean0[c] + sd[c] / n[c]
            m2[c] = max(sdd[c] - sd[c] * sd[c] / n[c], 0.0)
        else:
            mean[c] = np.nan
            m2[c] = np.nan
    return n, s, mean, m2


def _moment_stats(ci, v, w, ncell, stats, ddof) -> dict[str, np.ndarray]:
    """Moment statistics by bincount (no sorting): two passes, exact to rounding; keyed by label
    (and ``count``)."""
    n, s, mean, m2 = _moments_nb(
        np.ascontiguousarray(ci, np.int64), np.ascontiguousarray(v, np.float64), ncell
    )
    res: dict[str, np.ndarray] = {"count": n}
    mm = wparts = None
    with np.errstate(invalid="ignore", divide="ignore"):
        for st in stats:
            f = st.function
            if f == "count":
                r = n
            elif f == "sum":
                r = s
            elif f == "mean":
                r = mean
            elif f in ("var", "std"):
                d = st.ddof_or(ddof)
                var = np.where(n - d > 0, m2 / np.maximum(n - d, 1), np.nan)
                r = var if f == "var" else np.sqrt(var)
            elif f in ("min", "max"):
                if mm is None:
                    mm = minmax(ci, v, ncell)
                r = mm[0] if f == "min" else mm[1]
            else:  # weighted
                if wparts is None:
                    ww = np.ones_like(v) if w is None else w
                    d = v - mean[ci]
                    wsum = np.bincount(ci, weights=ww, minlength=ncell)
                    wmean = mean + np.bincount(ci, weights=ww * d, minlength=ncell) / wsum
                    dw = v - wmean[ci]
                    wm2 = np.bincount(ci, weights=ww * dw * dw, minlength=ncell)
                    wparts = wsum, wmean, wm2
                wsum, wmean, wm2 = wparts
                if f == "weighted_sum":
                    r = wsum
                elif f == "weighted_mean":
                    r = wmean
                else:
                    r = _weighted_var(wm2, wsum, st.ddof_or(), f == "weighted_std")
            res[st.label] = r
    return res

"""Exact per-cell statistics, vectorised: one sort by (cell, value), then segment arithmetic.

Statistic names (``{column}_{name}`` in the output):

``count`` valid (non-NaN) values; ``sum``; ``mean``; ``var`` / ``std`` (``ddof``); ``min``; ``max``;
``median``; ``qNN`` quantiles (``q05``, ``q25``, ``q999`` = 0.999; numpy's default linear
interpolation); ``mad`` (median absolute deviation from the median); ``robust_std``
(1.4826 x mad); ``wsum`` / ``wmean`` / ``wvar`` / ``wstd`` (weights = sidecar weight times an
optional user weight; ``wvar`` is the population weighted variance ``sum w (x - wmean)^2 / sum w``).

User statistics: a numpy ufunc name (``maximum``, ``add``, ... applied with ``ufunc.reduceat``,
vectorised) or ``module.path:function`` / ``module.path.function`` (a callable taking the 1-D
array of a cell's valid values; called once per cell, so it is as fast as the function).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Sequence

import numba
import numpy as np

from healforge.aggregate.grouping import (
    cell_index,
    group_cells,
    group_sort,
    minmax,
    segment_mad,
    sorted_by_cell,
)

BUILTIN = ("count", "sum", "mean", "var", "std", "min", "max", "median", "mad", "robust_std")
WEIGHTED = ("wsum", "wmean", "wvar", "wstd")
QUANTILE_RE = re.compile(r"^q(\d{2,})$")
MAD_TO_STD = 1.4826
DEFAULT_STATS = ("count", "mean", "std", "min", "max", "median")


def quantile_of(name: str) -> float | None:
    """The quantile level of a ``qNN`` statistic name (``q05`` -> 0.05, ``q999`` -> 0.999)."""
    m = QUANTILE_RE.match(name)
    if not m:
        return None
    digits = m.group(1)
    return int(digits) / 10 ** len(digits)


def stat_label(name: str) -> str:
    """Column-name suffix of a statistic (user functions: last component of their name)."""
    if name in BUILTIN or name in WEIGHTED or quantile_of(name) is not None:
        return name
    return re.split(r"[.:]", name)[-1]


def resolve_user_stat(name: str) -> tuple[str, Callable]:
    """``("ufunc", ufunc)`` or ``("callable", function)`` for a user statistic name."""
    fn = getattr(np, name, None)
    if isinstance(fn, np.ufunc) and fn.nin == 2:
        return "ufunc", fn
    if ":" in name:
        mod, attr = name.split(":", 1)
    elif "." in name:
        mod, attr = name.rsplit(".", 1)
    elif callable(fn):
        return "callable", fn
    else:
        raise ValueError(
            f"unknown statistic {name!r}; built-in: {', '.join(BUILTIN + WEIGHTED)}, qNN, "
            "a numpy function name or a dotted import path"
        )
    try:
        func = getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import statistic {name!r}: {exc}") from None
    if isinstance(func, np.ufunc) and func.nin == 2:
        return "ufunc", func
    if not callable(func):
        raise ValueError(f"statistic {name!r} is not callable")
    return "callable", func


def validate_stats(stats: Sequence[str]) -> list[str]:
    """Check statistic names (raises ``ValueError`` naming the bad one)."""
    out = []
    for s in stats:
        if s in BUILTIN or s in WEIGHTED or quantile_of(s) is not None:
            out.append(s)
        else:
            resolve_user_stat(s)
            out.append(s)
    if "count" not in out:
        out.insert(0, "count")
    return out


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
    stats: Sequence[str] = DEFAULT_STATS,
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
        Statistic names (see module docstring); ``count`` is always included.
    weights
        Per-row weights for the ``w*`` statistics (default 1).
    ddof
        Delta degrees of freedom of ``var`` / ``std``.
    min_count
        Statistics of a cell with fewer valid values are NaN (the count is kept).

    Returns
    -------
    cell_ids, columns
        Sorted unique cells having at least one row, and ``{column}_{stat}`` -> array.
    """
    stats = validate_stats(stats)
    cells = np.asarray(cells, dtype=np.int64)
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
    moments_only = all(s in MOMENT_STATS for s in stats)
    if moments_only and cells.size and cells.min() >= 0 and cells.max() < 64 * cells.size:
        return _dense_moments(cells, values, weights, stats, ddof, min_count)
    cell_ids, cidx = cell_index(cells)
    ncell = cell_ids.size
    out: dict[str, np.ndarray] = {}
    need_w = any(s in WEIGHTED for s in stats)
    shared = None
    for col, vals in values.items():
        vals = np.asarray(vals, dtype=np.float64)
        valid = ~np.isnan(vals)
        all_valid = bool(valid.all())
        idx = None if all_valid else np.flatnonzero(valid)
        ci = cidx if all_valid else cidx[idx]
        v = vals if all_valid else vals[idx]
        if moments_only:
            wv = None if weights is None else (weights if all_valid else weights[idx])
            res = _moment_stats(ci, v, wv, ncell, stats, ddof)
            for s in stats:
                arr = res[s]
                if s != "count" and min_count > 1:
                    arr = np.where(res["count"] >= min_count, arr, np.nan)
                out[f"{col}_{stat_label(s)}"] = arr
            continue
        w = None
        if need_w:
            order, starts_all, v = group_sort(ci, v, ncell)
            if weights is not None:
                w = (weights if all_valid else weights[idx])[order]
        else:  # one grouping by cell shared by all columns, then in-place sorts per cell
            if shared is None:
                shared = group_cells(cidx, ncell)
            v, starts_all = sorted_by_cell(vals, *shared)
        n = np.diff(starts_all)
        starts_all = starts_all[:-1]
        has = n > 0
        starts = starts_all[has]
        nh = n[has]

        def full(x, fill=np.nan, has=has):
            o = np.full(ncell, fill, dtype=np.float64)
            o[has] = x
            return o

        sums = np.add.reduceat(v, starts) if starts.size else np.empty(0)
        mean = sums / nh
        res: dict[str, np.ndarray] = {"count": n}
        need_m2 = any(s in stats for s in ("var", "std"))
        if need_m2 and starts.size:
            dev = v - np.repeat(mean, nh)
            m2 = np.add.reduceat(dev * dev, starts)
            with np.errstate(invalid="ignore", divide="ignore"):
                var = np.where(nh - ddof > 0, m2 / np.maximum(nh - ddof, 1), np.nan)
        else:
            var = np.full(nh.size, np.nan)
        med = None
        for s in stats:
            if s == "count":
                continue
            if s == "sum":
                res[s] = full(sums, 0.0)
            elif s == "mean":
                res[s] = full(mean)
            elif s == "var":
                res[s] = full(var)
            elif s == "std":
                res[s] = full(np.sqrt(var))
            elif s == "min":
                res[s] = full(v[starts])
            elif s == "max":
                res[s] = full(v[starts + nh - 1])
            elif s == "median" or quantile_of(s) is not None:
                q = 0.5 if s == "median" else quantile_of(s)
                res[s] = full(_segment_quantile(v, starts, nh, q))
            elif s in ("mad", "robust_std"):
                if med is None:
                    med = _segment_quantile(v, starts, nh, 0.5)
                    mad = segment_mad(v, starts, nh, med)
                res[s] = full(mad if s == "mad" else MAD_TO_STD * mad)
            elif s in WEIGHTED:
                ww = w if w is not None else np.ones_like(v)
                wsum = np.add.reduceat(ww, starts) if starts.size else np.empty(0)
                with np.errstate(invalid="ignore", divide="ignore"):
                    wmean = np.add.reduceat(ww * v, starts) / wsum if starts.size else np.empty(0)
                    if s == "wsum":
                        res[s] = full(wsum, 0.0)
                    elif s == "wmean":
                        res[s] = full(wmean)
                    else:
                        dev = v - np.repeat(wmean, nh)
                        wvar = np.add.reduceat(ww * dev * dev, starts) / wsum if starts.size else np.empty(0)
                        res[s] = full(wvar if s == "wvar" else np.sqrt(wvar))
            else:
                kind, fn = resolve_user_stat(s)
                if kind == "ufunc":
                    r = fn.reduceat(v, starts) if starts.size else np.empty(0)
                else:
                    r = np.array([fn(seg) for seg in np.split(v, starts[1:])], dtype=np.float64)
                res[s] = full(r)
        for s in stats:
            arr = res[s]
            if s != "count" and min_count > 1:
                arr = np.where(n >= min_count, arr, np.nan)
            out[f"{col}_{stat_label(s)}"] = arr
    return cell_ids, out


MOMENT_STATS = ("count", "sum", "mean", "var", "std", "min", "max", "wsum", "wmean", "wvar", "wstd")


def _dense_moments(cells, values, weights, stats, ddof, min_count):
    """Moment statistics indexed directly by cell number (no unique/rank pass), then compacted."""
    ncell = int(cells.max()) + 1
    present = np.bincount(cells, minlength=ncell) > 0
    cell_ids = np.flatnonzero(present).astype(np.int64)
    out = {}
    for col, vals in values.items():
        vals = np.asarray(vals, dtype=np.float64)
        valid = ~np.isnan(vals)
        if valid.all():
            ci, v, w = cells, vals, weights
        else:
            ci, v = cells[valid], vals[valid]
            w = None if weights is None else weights[valid]
        res = _moment_stats(ci, v, w, ncell, stats, ddof)
        for s in stats:
            arr = res[s][present]
            if s != "count" and min_count > 1:
                arr = np.where(res["count"][present] >= min_count, arr, np.nan)
            out[f"{col}_{stat_label(s)}"] = arr
    return cell_ids, out


@numba.njit(cache=True)
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
    """Moment statistics by bincount (no sorting): two passes, exact to rounding."""
    n, s, mean, m2 = _moments_nb(
        np.ascontiguousarray(ci, np.int64), np.ascontiguousarray(v, np.float64), ncell
    )
    res: dict[str, np.ndarray] = {"count": n}
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(n - ddof > 0, m2 / np.maximum(n - ddof, 1), np.nan)
        res.update(sum=s, mean=mean, var=var, std=np.sqrt(var))
        if any(x in stats for x in ("min", "max")):
            res["min"], res["max"] = minmax(ci, v, ncell)
        if any(x in stats for x in WEIGHTED):
            ww = np.ones_like(v) if w is None else w
            d = v - mean[ci]
            wsum = np.bincount(ci, weights=ww, minlength=ncell)
            wmean = mean + np.bincount(ci, weights=ww * d, minlength=ncell) / wsum
            dw = v - wmean[ci]
            wvar = np.bincount(ci, weights=ww * dw * dw, minlength=ncell) / wsum
            res.update(wsum=wsum, wmean=wmean, wvar=wvar, wstd=np.sqrt(wvar))
    return res

"""Turn a streaming :class:`~healforge.aggregate.state.State` into statistics and map tables.

The one finalize of healforge: the CLI ``finalize``, :func:`healforge.finalize` and ``healforge run``
all compute statistics from a state here, with the vocabulary of
:mod:`healforge.aggregate.statistics`. Moments are exact; quantiles, ``mad`` and ``robust_std``
come from the sketch. Cell expressions (:mod:`healforge.expressions`) read the aggregates of their
row expressions from the state's moments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa

from healforge.aggregate import sketch as sk
from healforge.aggregate.maptable import make_map_table
from healforge.aggregate.state import State
from healforge.aggregate.statistics import (
    DEFAULT_STATS,
    MAD_TO_STD,
    REGISTERED,
    CellMoments,
    Stat,
    resolve_all,
)
from healforge.errors import OptionError
from healforge.pixel import order_to_npix

DEFAULT_STATE_STATS = DEFAULT_STATS


def column_statistics(
    state: State, key: str, stats: Sequence[Stat], ddof: int = 1, min_count: int = 1
) -> dict[str, np.ndarray]:
    """Statistics of one state column, ``{stat.label: array}`` aligned with ``state.cell_ids``.

    ``ddof`` applies to ``var`` / ``std`` without their own; cells with fewer than ``min_count``
    valid values get NaN (the count is kept).
    """
    m = state.moments[key]
    n = m["n"]
    off, means, weights = state.sketches[key]
    qs = sorted(
        {
            0.5 if s.function in ("mad", "robust_std") else s.q
            for s in stats
            if s.q is not None or s.function in ("mad", "robust_std")
        }
    )
    qv = sk.quantiles(off, means, weights, m["min"], m["max"], qs) if qs else None
    mad = None
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        for s in stats:
            f = s.function
            if f == "count":
                out[s.label] = n
                continue
            if f == "sum":
                v = np.where(n > 0, (m["min"] + m["dmean"]) * n, 0.0)
            elif f == "mean":
                v = m["min"] + m["dmean"]
            elif f in ("var", "std"):
                d = s.ddof_or(ddof)
                v = np.where(n - d > 0, m["m2"] / np.maximum(n - d, 1), np.nan)
                v = np.sqrt(v) if f == "std" else v
            elif f in ("min", "max"):
                v = m[f]
            elif f == "quantile":
                v = qv[:, qs.index(s.q)]
            elif f in ("mad", "robust_std"):
                if mad is None:
                    mad = sk.mad(off, means, weights, qv[:, qs.index(0.5)])
                v = mad if f == "mad" else MAD_TO_STD * mad
            elif f == "weighted_sum":
                v = m["wsum"]
            elif f == "weighted_mean":
                v = np.where(m["wsum"] > 0, m["min"] + m["wdmean"], np.nan)
            elif f in ("weighted_var", "weighted_std"):
                d = s.ddof_or()
                v = np.where(m["wsum"] - d > 0, m["wm2"] / (m["wsum"] - d), np.nan)
                v = np.sqrt(v) if f == "weighted_std" else v
            elif f in REGISTERED and REGISTERED[f].streaming is not None:
                mean = m["min"] + m["dmean"]
                cells = CellMoments(n, np.where(n > 0, mean * n, 0.0), mean, m["min"], m["max"], m["m2"])
                v = REGISTERED[f].streaming(cells)
            else:
                raise OptionError(f"statistic {f!r} cannot be computed from a streaming state")
            out[s.label] = np.where(n >= max(min_count, 1), v, np.nan)
    return out


def aggregate_values(state: State, key: str, func: str, ddof: int = 0) -> np.ndarray:
    """A cell-expression aggregate (sum count mean min max var std; var/std with ``ddof``,
    default 0: population) of one state column."""
    m = state.moments[key]
    n = m["n"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if func == "count":
            return n.astype(np.float64)
        if func == "sum":
            return np.where(n > 0, (m["min"] + m["dmean"]) * n, 0.0)
        if func == "mean":
            return np.where(n > 0, m["min"] + m["dmean"], np.nan)
        if func in ("min", "max"):
            return np.where(n > 0, m[func], np.nan)
        if func in ("var", "std"):
            v = np.where(n - ddof > 0, m["m2"] / np.maximum(n - ddof, 1), np.nan)
            return np.sqrt(v) if func == "std" else v
    raise OptionError(f"unknown aggregate {func!r}")


def cell_area(order: int, radius_km: float | None = None) -> float:
    """Area of one HEALPix cell at ``order``: steradians, or km2 on a sphere of ``radius_km``."""
    sr = 4 * np.pi / order_to_npix(order)
    return sr if radius_km is None else sr * float(radius_km) ** 2


def cell_expression_values(
    state: State, expression, keys: Mapping[str, str], radius_km: float | None = None
) -> np.ndarray:
    """Evaluate a cell expression over a state; ``keys`` maps each aggregate's row source to the
    state column holding that row expression's values."""
    values = {
        a.key: aggregate_values(state, keys[a.row.source], a.func, a.ddof) for a in expression.aggregates
    }
    area = cell_area(state.order, radius_km) if expression.uses_area else None
    out = np.asarray(expression.evaluate(values, area=area), dtype=np.float64)
    return np.broadcast_to(out, state.cell_ids.shape).copy() if out.ndim == 0 else out


def state_statistics(
    state: State, stats: Sequence[str] = DEFAULT_STATE_STATS, ddof: int = 1, min_count: int = 1
) -> dict[str, np.ndarray]:
    """``{column}_{stat}`` arrays aligned with ``state.cell_ids`` for every column of the state."""
    resolved = resolve_all(stats, from_state=True)
    out: dict[str, np.ndarray] = {}
    for c in state.columns:
        for label, arr in column_statistics(state, c, resolved, ddof, min_count).items():
            out[f"{c}_{label}"] = arr
    return out


def finalize_state(
    state: State,
    stats: Sequence[str] = DEFAULT_STATE_STATS,
    ddof: int = 1,
    min_count: int = 1,
    cell_expressions: Mapping[str, object] | None = None,
    radius_km: float | None = None,
) -> pa.Table:
    """Map table (see :mod:`healforge.aggregate.maptable`) of a state.

    ``cell_expressions`` maps output names to parsed cell expressions whose row expressions are
    columns of the state (by their source text).
    """
    cols = state_statistics(state, stats, ddof, min_count)
    exprs = dict(cell_expressions or {})
    for name, expr in exprs.items():
        keys = {a.row.source: state_column_of(state, a.row.source) for a in expr.aggregates}
        cols[name] = cell_expression_values(state, expr, keys, radius_km)
    stats = list(dict.fromkeys(["count", *stats]))
    meta = {
        "order": state.order,
        "lon_convention": state.lon_convention,
        "latitude": state.latitude,
        "statistics": stats,
        "columns": list(state.columns),
        "ddof": ddof,
        "min_count": min_count,
        "source": "state",
        "rows_in": state.rows_in,
        "rows_rejected": state.rows_rejected,
    }
    if exprs:
        meta["cell_expressions"] = {k: e.source for k, e in exprs.items()}
    return make_map_table(state.cell_ids, cols, meta)


def state_column_of(state: State, row_source: str) -> str:
    """The unweighted state column holding a row expression's values (its source text)."""
    if row_source in state.columns:
        return row_source
    raise OptionError(
        f"the state has no column for row expression {row_source!r} (state columns: "
        f"{', '.join(state.columns)}); accumulate with --cell-expr so that its aggregates are kept"
    )

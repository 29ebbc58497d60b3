"""Turn a streaming :class:`~healforge.aggregate.state.State` into a map table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from healforge.aggregate import sketch as sk
from healforge.aggregate.maptable import make_map_table
from healforge.aggregate.state import State
from healforge.aggregate.stats import BUILTIN, MAD_TO_STD, WEIGHTED, quantile_of
from healforge.errors import OptionError

DEFAULT_STATE_STATS = ("count", "mean", "std", "min", "max", "median")


def state_statistics(
    state: State, stats: Sequence[str] = DEFAULT_STATE_STATS, ddof: int = 1, min_count: int = 1
) -> dict[str, np.ndarray]:
    """``{column}_{stat}`` arrays aligned with ``state.cell_ids``.

    Moments are exact; ``median``, ``qNN``, ``mad`` and ``robust_std`` come from the sketch.
    User-defined functions need the raw values: use :func:`healforge.aggregate` instead.
    """
    stats = list(stats)
    if "count" not in stats:
        stats.insert(0, "count")
    for s in stats:
        if not (s in BUILTIN or s in WEIGHTED or quantile_of(s) is not None):
            raise OptionError(
                f"statistic {s!r} cannot be computed from a streaming state; available: "
                f"{', '.join(BUILTIN + WEIGHTED)}, qNN"
            )
    out: dict[str, np.ndarray] = {}
    for c in state.columns:
        m = state.moments[c]
        n = m["n"]
        off, means, weights = state.sketches[c]
        qs = sorted(
            {
                0.5 if s in ("median", "mad", "robust_std") else quantile_of(s)
                for s in stats
                if s in ("median", "mad", "robust_std") or quantile_of(s) is not None
            }
        )
        qv = sk.quantiles(off, means, weights, m["min"], m["max"], qs) if qs else None
        mad = None
        with np.errstate(invalid="ignore", divide="ignore"):
            for s in stats:
                if s == "count":
                    v = n
                elif s == "sum":
                    v = np.where(n > 0, (m["min"] + m["dmean"]) * n, 0.0)
                elif s == "mean":
                    v = m["min"] + m["dmean"]
                elif s in ("var", "std"):
                    v = np.where(n - ddof > 0, m["m2"] / np.maximum(n - ddof, 1), np.nan)
                    v = np.sqrt(v) if s == "std" else v
                elif s in ("min", "max"):
                    v = m[s]
                elif s == "median" or quantile_of(s) is not None:
                    v = qv[:, qs.index(0.5 if s == "median" else quantile_of(s))]
                elif s in ("mad", "robust_std"):
                    if mad is None:
                        mad = sk.mad(off, means, weights, qv[:, qs.index(0.5)])
                    v = mad if s == "mad" else MAD_TO_STD * mad
                elif s == "wsum":
                    v = m["wsum"]
                elif s == "wmean":
                    v = m["min"] + m["wdmean"]
                else:  # wvar / wstd
                    v = np.where(m["wsum"] > 0, m["wm2"] / m["wsum"], np.nan)
                    v = np.sqrt(v) if s == "wstd" else v
                if s != "count":
                    v = np.where(n >= max(min_count, 1), v, np.nan)
                out[f"{c}_{s}"] = v
    return out


def finalize_state(
    state: State, stats: Sequence[str] = DEFAULT_STATE_STATS, ddof: int = 1, min_count: int = 1
) -> pa.Table:
    """Map table (see :mod:`healforge.aggregate.maptable`) of a state."""
    cols = state_statistics(state, stats, ddof, min_count)
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
    return make_map_table(state.cell_ids, cols, meta)

"""The ``aggregation`` section of a zagg file: output variables as healforge statistics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from healforge.expressions import parse_cell
from healforge.zagg.cellexpr import cell_expression, row_expression
from healforge.zagg.checks import FUNCTIONS, VARIABLE, Problems, function_name
from healforge.zagg.outputs import Output


def read_aggregation(
    e: Problems, top: dict, agg: dict, exact: bool | None, known_cols: set[str], conventions: dict
) -> tuple[dict[str, Any], list[Output], dict | None, bool]:
    """Statistics (healforge pipeline form), outputs, the morton coordinate and the exact flag."""
    handoff = agg.get("handoff", "arrow")
    if handoff not in ("arrow", "pandas"):
        e.add("aggregation.handoff", f"must be arrow or pandas; got {handoff!r}")
    conventions["handoff"] = f"{handoff} -> pyarrow tables (nulls allowed)"
    if agg.get("chunk_precompute"):
        e.add("aggregation.chunk_precompute", "per-chunk precomputed values are not supported")
    morton = None
    for cname, cspec in (agg.get("coordinates") or {}).items():
        key = f"aggregation.coordinates.{cname}"
        cspec = e.keys(cspec or {}, key, ("dtype", "fill_value"))
        if cname == "morton":
            dt = cspec.get("dtype", "uint64")
            if dt != "uint64":
                e.add(f"{key}.dtype", f"mortie morton indices are uint64; got {dt!r}")
            try:
                import mortie  # noqa: F401
            except ImportError:
                e.add(key, "needs the mortie package (pip install mortie) to compute morton indices")
            morton = {"dtype": "uint64", "fill_value": int(cspec.get("fill_value", 0))}
        elif cname == "cell_ids":
            conventions["cell_ids"] = "int64 nested (the xdggs coordinate) instead of uint64"
        else:
            e.add(key, "healforge computes the coordinates morton and cell_ids only")
    exact_flag = exact
    if exact_flag is None:
        exact_flag = bool(top.get("exact", agg.get("exact", False)))
    stats: dict[str, Any] = {}
    outputs: list[Output] = []
    raw_vars = agg.get("variables") or {}
    if not isinstance(raw_vars, Mapping) or not raw_vars:
        e.add("aggregation.variables", "must be a non-empty mapping of output variables")
        raw_vars = {}
    for name, meta in raw_vars.items():
        _variable(e, str(name), meta, known_cols, exact_flag, stats, outputs)
    return stats, outputs, morton, exact_flag


def _variable(
    e: Problems,
    name: str,
    meta: Any,
    known_cols: set[str],
    exact_flag: bool,
    stats: dict[str, Any],
    outputs: list[Output],
) -> None:
    """One output variable: its :class:`Output` and the statistics that compute it."""
    key = f"aggregation.variables.{name}"
    meta = e.keys(meta, key, VARIABLE)
    if not str(name).isidentifier() or name in ("cell_ids", "morton"):
        e.add(key, "variable names must be identifiers other than cell_ids and morton")
        return
    if meta.get("kind", "scalar") != "scalar":
        e.add(f"{key}.kind", f"only scalar variables are supported; got {meta['kind']!r}")
    dtype = meta.get("dtype", "float32")
    try:
        np.dtype(dtype)
    except TypeError:
        e.add(f"{key}.dtype", f"not a numpy dtype: {dtype!r}")
        dtype = "float32"
    fill = meta.get("fill_value", "NaN")
    if isinstance(fill, str):
        if fill.lower() != "nan":
            e.add(f"{key}.fill_value", f"must be a number or NaN; got {fill!r}")
        fill = float("nan")
    if np.dtype(dtype).kind in "iu" and isinstance(fill, float) and np.isnan(fill):
        fill = 0
    attrs = meta.get("attrs") or {}
    if not isinstance(attrs, Mapping):
        e.add(f"{key}.attrs", "must be a mapping")
        attrs = {}
    o = Output(str(name), str(dtype), fill, dict(attrs))
    outputs.append(o)
    if "function" in meta and "expression" in meta:
        e.add(key, "give either function or expression, not both")
        return
    if "expression" in meta:
        try:
            text = cell_expression(meta["expression"])
            rows = {n for a in parse_cell(text).aggregates for n in a.row.names}
            missing = sorted(rows - known_cols)
            if missing:
                e.add(f"{key}.expression", f"uses {missing}, not in data_source.variables")
            stats[name] = {"expression": text}
        except ValueError as exc:
            e.add(f"{key}.expression", str(exc))
        return
    func = function_name(meta.get("function"))
    if func is None:
        e.add(key, "needs a function or an expression")
        return
    src = meta.get("source")
    if src is not None and src not in known_cols:
        e.add(f"{key}.source", f"{src!r} is not in data_source.variables ({', '.join(sorted(known_cols))})")
    params = dict(meta.get("params") or {})
    if func in FUNCTIONS:
        hf, base_params, nan = FUNCTIONS[func]
        p: dict[str, Any] = dict(base_params)
        spec: dict[str, Any] = {"function": hf, "dtype": "int64" if hf == "count" else "float64"}
        if hf != "count":
            if src is None:
                e.add(f"{key}.source", f"is required for function {func}")
            spec["column"] = src
        for pk, pv in params.items():
            pkey = f"{key}.params.{pk}"
            if pk == "weights" and func == "average":
                try:
                    p["weight"] = row_expression(pv) if isinstance(pv, str) else None
                    if p["weight"] is None:
                        raise ValueError(f"must be a column name or a row expression; got {pv!r}")
                    spec["function"] = "weighted_mean"
                except ValueError as exc:
                    e.add(pkey, str(exc))
            elif pk == "q" and hf == "quantile":
                scale = 100.0 if "percentile" in func else 1.0
                if isinstance(pv, bool) or not isinstance(pv, int | float) or not 0 <= pv / scale <= 1:
                    e.add(pkey, f"must be one number in [0, {scale:g}] (one variable per level); got {pv!r}")
                else:
                    p["q"] = float(pv) / scale
            elif pk == "ddof" and hf in ("var", "std"):
                if isinstance(pv, bool) or not isinstance(pv, int) or pv < 0:
                    e.add(pkey, f"must be a non-negative integer; got {pv!r}")
                else:
                    p["ddof"] = pv
            elif pk == "method" and hf == "quantile":
                if pv != "linear":
                    e.add(pkey, f"only numpy's default 'linear' method is supported; got {pv!r}")
            else:
                e.add(pkey, f"healforge cannot honour parameter {pk!r} of {func}")
        if hf == "quantile" and "q" not in p:
            e.add(f"{key}.params.q", f"is required for {func}")
        if p:
            spec["parameters"] = p
        stats[name] = spec
        if nan and src is not None:
            guard = (f"_zagg_{name}_n", f"_zagg_{name}_rows")
            stats[guard[0]] = {"function": "count", "column": src}
            stats[guard[1]] = {"function": "count"}
            o.nan_guard = guard
    else:  # another numpy function of healforge.registry: exact mode calls it per cell
        from healforge.run.schema import resolve_callable

        try:
            resolve_callable(func)
        except ValueError as exc:
            e.add(f"{key}.function", str(exc))
        if params:
            e.add(f"{key}.params", f"parameters of user function {func!r} are not supported")
        if src is None:
            e.add(f"{key}.source", f"is required for function {func}")
        stats[name] = {"function": func, "column": src}
        if src is not None and "." not in func and not func.startswith("nan"):
            guard = (f"_zagg_{name}_n", f"_zagg_{name}_rows")  # numpy's NaN propagation
            stats[guard[0]] = {"function": "count", "column": src}
            stats[guard[1]] = {"function": "count"}
            o.nan_guard = guard
        if not exact_flag:
            e.add(
                f"{key}.function",
                f"user function {func!r} needs every value of a cell: run with --exact (or exact: true)",
            )

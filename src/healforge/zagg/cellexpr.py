"""Per-cell expressions such as ``1.0 / np.sqrt(np.sum(1.0 / s_li**2))`` as mergeable state columns.

A cell expression combines *aggregates of row expressions* with arithmetic and element-wise
numpy functions. Each aggregate (``sum(1 / s_li**2)``) becomes a hidden helper statistic of the
pipeline (a state column, so it exists at every pyramid level and in exact mode alike); after
finalizing, :func:`combine` evaluates the outer expression over the helper arrays.

This module is the stop-gap until the aggregation core evaluates ``{"expression": ...}``
statistics itself: :func:`expand` rewrites those statistics of a pipeline dict into helpers and
returns the :class:`CellExpression` combiners. Nothing else in healforge depends on it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.zagg import rowexpr

# aggregate name -> (pipeline function, parameters, numpy propagates NaN)
AGGREGATES: dict[str, tuple[str, dict, bool]] = {
    "sum": ("sum", {}, True),
    "nansum": ("sum", {}, False),
    "mean": ("mean", {}, True),
    "average": ("mean", {}, True),
    "nanmean": ("mean", {}, False),
    "min": ("min", {}, True),
    "amin": ("min", {}, True),
    "nanmin": ("min", {}, False),
    "max": ("max", {}, True),
    "amax": ("max", {}, True),
    "nanmax": ("max", {}, False),
    "var": ("var", {"ddof": 0}, True),
    "nanvar": ("var", {"ddof": 0}, False),
    "std": ("std", {"ddof": 0}, True),
    "nanstd": ("std", {"ddof": 0}, False),
    "median": ("median", {}, True),
    "nanmedian": ("median", {}, False),
    "len": ("count", {}, False),
    "size": ("count", {}, False),
}
_NUMPY = ("np", "numpy")
ROWS = "_rows"  # helper name suffix of the row count


def _func_name(node: ast.expr) -> str | None:
    """``sum`` for ``sum``, ``np.sum`` or ``numpy.sum``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in _NUMPY:
        return node.attr
    return None


class _StripNumpy(ast.NodeTransformer):
    """``np.sqrt(x)`` -> ``sqrt(x)`` (healforge expressions name numpy functions bare)."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = _func_name(node.func)
        if name is not None and not isinstance(node.func, ast.Name):
            node.func = ast.Name(id=name, ctx=ast.Load())
        return node


def row_expression(text: str) -> str:
    """A zagg row expression (Python with ``np.``) as a healforge expression text.

    Raises
    ------
    ValueError
        When it uses something healforge expressions do not allow.
    """
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression ({exc.msg}): {text!r}") from None
    out = ast.unparse(_StripNumpy().visit(tree))
    rowexpr.check(out)  # raises ValueError naming what is not allowed
    return out


@dataclass
class Aggregate:
    """One helper statistic: ``function`` of a row expression (or a bare column)."""

    name: str
    function: str
    row: str | None  # healforge row expression text; None for a row count
    parameters: dict = field(default_factory=dict)
    propagates_nan: bool = False

    def statistic(self) -> dict:
        d: dict[str, Any] = {"function": self.function, "dtype": "float64"}
        if self.function == "count":
            d["dtype"] = "int64"
        if self.row is not None:
            key = "column" if self.row.isidentifier() else "expression"
            d[key] = self.row
        if self.parameters:
            d["parameters"] = dict(self.parameters)
        return d


@dataclass
class CellExpression:
    """A per-cell expression: outer text over helper names, and the helpers it reads."""

    name: str
    text: str  # the cell expression as written (np. removed)
    outer: str  # healforge expression over the helper names
    aggregates: list[Aggregate]
    rows_helper: str | None = None  # row count, for numpy's NaN propagation

    def helpers(self) -> dict[str, dict]:
        out = {a.name: a.statistic() for a in self.aggregates}
        for a in self.aggregates:
            if a.propagates_nan and a.row is not None:
                out[f"{a.name}_n"] = {
                    "function": "count",
                    ("column" if a.row.isidentifier() else "expression"): a.row,
                }
        if self.rows_helper:
            out[self.rows_helper] = {"function": "count"}
        return out

    def evaluate(self, columns: Mapping[str, np.ndarray]) -> np.ndarray:
        """The expression per cell from the finalized helper columns."""
        env = {}
        for a in self.aggregates:
            v = np.asarray(columns[a.name], dtype=np.float64)
            if a.propagates_nan and a.row is not None:  # numpy: one NaN makes the aggregate NaN
                v = np.where(
                    np.asarray(columns[f"{a.name}_n"]) < np.asarray(columns[self.rows_helper]), np.nan, v
                )
            env[a.name] = v
        with np.errstate(all="ignore"):
            out = rowexpr.evaluate(self.outer, env)
        n = len(next(iter(env.values()))) if env else 0
        return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).copy()


def parse_cell(name: str, text: str) -> CellExpression:
    """Split a zagg per-cell expression into helper aggregates and an outer expression.

    Raises
    ------
    ValueError
        When a column is used outside an aggregate, an aggregate is nested in another, or the
        expression uses something that is not allowed.
    """
    try:
        tree = ast.parse(str(text).strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression ({exc.msg}): {text!r}") from None
    aggregates: list[Aggregate] = []
    prefix = f"_zagg_{name}_a"

    class Split(ast.NodeTransformer):
        def visit_Call(self, node: ast.Call) -> ast.AST:
            fname = _func_name(node.func)
            if fname in AGGREGATES:
                if node.keywords or len(node.args) != 1:
                    raise ValueError(f"{fname}() takes one argument (a row expression) in {text!r}")
                arg = node.args[0]
                inner = ast.unparse(_StripNumpy().visit(arg))
                for sub in ast.walk(arg):
                    if isinstance(sub, ast.Call) and _func_name(sub.func) in AGGREGATES:
                        raise ValueError(f"aggregates cannot be nested: {ast.unparse(node)!r} in {text!r}")
                row = row_expression(inner)
                func, params, nan = AGGREGATES[fname]
                agg = Aggregate(
                    f"{prefix}{len(aggregates)}", func, None if func == "count" else row, params, nan
                )
                aggregates.append(agg)
                return ast.Name(id=agg.name, ctx=ast.Load())
            self.generic_visit(node)
            if fname is not None and not rowexpr.is_elementwise(fname):
                raise ValueError(
                    f"function {fname!r} is not allowed in the cell expression {text!r}; aggregates: "
                    f"{', '.join(sorted(AGGREGATES))}; element-wise: {', '.join(rowexpr.elementwise_names())}"
                )
            if fname is not None:
                node.func = ast.Name(id=fname, ctx=ast.Load())
            return node

    outer_tree = Split().visit(tree)
    if not aggregates:
        raise ValueError(f"the cell expression {text!r} aggregates nothing (use e.g. np.sum(...))")
    outer = ast.unparse(outer_tree)
    stray = sorted(n for n in rowexpr.check(outer) if not n.startswith(prefix))
    if stray:
        raise ValueError(
            f"column(s) {stray} are used outside an aggregate in {text!r}; a cell expression combines "
            "aggregates such as np.sum(...) of row expressions"
        )
    shown = ast.unparse(_StripNumpy().visit(ast.parse(str(text).strip(), mode="eval")))
    rows = f"_zagg_{name}{ROWS}" if any(a.propagates_nan and a.row for a in aggregates) else None
    return CellExpression(name, shown, outer, aggregates, rows)


def expand(pipeline: Mapping[str, Any]) -> tuple[dict, list[CellExpression]]:
    """Replace ``{"expression": ...}`` statistics (no ``function``) by helper statistics.

    Returns the runnable pipeline dict and the combiners (in statistic order).
    """
    out = dict(pipeline)
    stats: dict[str, Any] = {}
    cells: list[CellExpression] = []
    for name, spec in pipeline["statistics"].items():
        if isinstance(spec, Mapping) and "expression" in spec and "function" not in spec:
            ce = parse_cell(name, spec["expression"])
            cells.append(ce)
            stats.update(ce.helpers())
        else:
            stats[name] = spec
    out["statistics"] = stats
    return out, cells

"""Cell expressions (per-cell values from aggregates), filters and ``name=expression`` column specs."""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.expressions.check import _AGG_PREFIX, _Checker, _parse_tree, parse_row
from healforge.expressions.errors import ExpressionError
from healforge.expressions.evaluate import _as_array, _evaluate
from healforge.expressions.row import Aggregate, RowExpression
from healforge.expressions.vocabulary import _BOOLISH_CALLS, AGGREGATE_HINT, CELL_AREA


@dataclass(frozen=True)
class CellExpression:
    """A checked per-cell expression over aggregates of row expressions, constants and ``area``."""

    source: str
    aggregates: tuple[Aggregate, ...]
    uses_area: bool
    _tree: ast.expr = field(repr=False, compare=False)

    def evaluate(self, values: Mapping[str, Any], area: np.ndarray | float | None = None) -> np.ndarray:
        """Combine per-cell aggregate arrays (``values[aggregate.key]``) into the per-cell result."""
        missing = [a.key for a in self.aggregates if a.key not in values]
        if missing:
            raise ExpressionError(
                f"no values given for aggregate(s) {', '.join(missing)}",
                self.source,
                hint=f"given: {', '.join(map(str, values)) or '(none)'}",
            )
        env: dict[str, Any] = {_AGG_PREFIX + a.key: _as_array(values[a.key]) for a in self.aggregates}
        if self.uses_area:
            if area is None:
                raise ExpressionError("uses the cell area, but no area was given", self.source)
            env[CELL_AREA] = _as_array(area)
        n = {len(v) for v in env.values() if np.ndim(v) == 1}
        if len(n) > 1:
            raise ExpressionError(f"aggregate arrays have different lengths {sorted(n)}", self.source)
        with np.errstate(all="ignore"):
            out = np.asarray(_evaluate(self._tree, env, self.source))
        if out.ndim == 0 and n:
            out = np.full(n.pop(), out[()], dtype=out.dtype)
        return out


def parse_filter(src: str) -> RowExpression:
    """Parse a row expression that must give true/false (checked at evaluation too)."""
    text, body = _parse_tree(src)
    checker = _Checker(text, "row")
    tree = checker.check(body)
    bad = None
    if isinstance(tree, ast.Constant) and not isinstance(tree.value, bool):
        bad = "a number"
    elif isinstance(tree, ast.BinOp) and not isinstance(tree.op, ast.BitAnd | ast.BitOr | ast.BitXor):
        bad = "arithmetic"
    elif isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub | ast.UAdd):
        bad = "arithmetic"
    elif isinstance(tree, ast.Call) and tree.func.id not in _BOOLISH_CALLS and tree.func.id != "where":
        bad = f"{tree.func.id}() values"
    if bad:
        raise ExpressionError(
            f"a filter must give true/false, this gives {bad}",
            text,
            body,
            hint="use comparisons such as 'x > 0', 'isfinite(x)', combined with and/or/not",
        )
    return RowExpression(text, frozenset(checker.names), tree, _filter=True)


def parse_cell(src: str) -> CellExpression:
    """Parse and check a per-cell expression over aggregates (``1 / sqrt(sum(1 / s**2))``)."""
    text, body = _parse_tree(src)
    checker = _Checker(text, "cell")
    tree = checker.check(body)
    if not checker.aggregates:
        raise ExpressionError(
            "a cell expression needs at least one aggregate of the rows, e.g. mean(h) or count(h) / area",
            text,
            body,
            hint=AGGREGATE_HINT,
        )
    return CellExpression(text, tuple(checker.aggregates.values()), checker.uses_area, tree)


_SPEC = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)(.*)$", re.DOTALL)


def parse_column_spec(spec: str) -> tuple[str, RowExpression | None]:
    """``"name"`` -> ``("name", None)``; ``"name=expr"`` -> ``("name", parse_row(expr))``."""
    m = _SPEC.match(spec)
    if m:
        return m.group(1), parse_row(m.group(2))
    name = spec.strip()
    if not name or ("=" in name and not any(op in name for op in ("==", "<=", ">=", "!="))):
        raise ExpressionError("is neither a column name nor NAME=EXPRESSION", spec)
    return name, None

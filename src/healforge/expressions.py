"""Row, filter and cell expressions parsed into an AST and evaluated over a whitelist.

TEMPORARY minimal version (branch ``core``): the integrator replaces this file with the ``expr``
branch's module, which has the same API: :func:`parse_row`, :func:`parse_filter`, :func:`parse_cell`.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

AGGREGATES = ("sum", "count", "mean", "min", "max", "var", "std")
FUNCTIONS = {
    name: getattr(np, name)
    for name in (
        "abs sqrt exp log log10 log2 sin cos tan arcsin arccos arctan arctan2 radians degrees "
        "minimum maximum clip where isfinite isnan floor ceil round hypot"
    ).split()
}
CONSTANTS = {"pi": np.pi}
_BIN = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_CMP = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}


class ExpressionError(ValueError):
    """An expression that cannot be parsed or uses something outside the whitelist."""


def _tree(src: str) -> ast.AST:
    if not isinstance(src, str) or not src.strip():
        raise ExpressionError("must be a non-empty expression string")
    try:
        return ast.parse(src.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"not a valid expression ({exc.msg}): {src!r}") from None


def _check(node: ast.AST, src: str, names: set[str], aggregates: list | None) -> None:
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise ExpressionError(f"call {ast.unparse(node)!r} is not allowed in {src!r}")
        fname = node.func.id
        if aggregates is not None and fname in AGGREGATES:
            if len(node.args) != 1:
                raise ExpressionError(f"{fname}() takes one row expression in {src!r}")
            row = parse_row(ast.unparse(node.args[0]))
            aggregates.append(Aggregate(fname, row, f"{fname}({row.source})"))
            return
        if fname not in FUNCTIONS:
            raise ExpressionError(
                f"function {fname!r} is not allowed in {src!r}; allowed: {', '.join(sorted(FUNCTIONS))}"
            )
        for a in node.args:
            _check(a, src, names, aggregates)
        return
    if isinstance(node, ast.Name):
        if node.id not in CONSTANTS:
            names.add(node.id)
        return
    if isinstance(node, ast.Constant):
        if isinstance(node.value, bool) or not isinstance(node.value, int | float):
            raise ExpressionError(f"only numeric constants are allowed in {src!r}, got {node.value!r}")
        return
    if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
        children = [node.left, node.right]
    elif isinstance(node, ast.UnaryOp):
        children = [node.operand]
    elif isinstance(node, ast.BoolOp):
        children = node.values
    elif isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
        children = [node.left, *node.comparators]
    elif isinstance(node, ast.IfExp):
        children = [node.test, node.body, node.orelse]
    else:
        raise ExpressionError(f"{ast.unparse(node)!r} is not allowed in expressions: {src!r}")
    for c in children:
        _check(c, src, names, aggregates)


def _eval(node: ast.AST, env: Mapping[str, np.ndarray], cell_values: Mapping[str, np.ndarray] | None):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return CONSTANTS[node.id] if node.id in CONSTANTS else env[node.id]
    if isinstance(node, ast.BinOp):
        return _BIN[type(node.op)](_eval(node.left, env, cell_values), _eval(node.right, env, cell_values))
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env, cell_values)
        if isinstance(node.op, ast.Not):
            return np.logical_not(v)
        if isinstance(node.op, ast.Invert):
            return np.invert(v)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BoolOp):
        vals = [_eval(v, env, cell_values) for v in node.values]
        f = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        out = vals[0]
        for v in vals[1:]:
            out = f(out, v)
        return out
    if isinstance(node, ast.Compare):
        left, out = _eval(node.left, env, cell_values), None
        for op, comp in zip(node.ops, node.comparators, strict=True):
            right = _eval(comp, env, cell_values)
            r = _CMP[type(op)](left, right)
            out = r if out is None else np.logical_and(out, r)
            left = right
        return out
    if isinstance(node, ast.IfExp):
        t = _eval(node.test, env, cell_values)
        return np.where(t, _eval(node.body, env, cell_values), _eval(node.orelse, env, cell_values))
    if isinstance(node, ast.Call):
        fname = node.func.id
        if cell_values is not None and fname in AGGREGATES:
            row = parse_row(ast.unparse(node.args[0]))
            return cell_values[f"{fname}({row.source})"]
        return FUNCTIONS[fname](*[_eval(a, env, cell_values) for a in node.args])
    raise ExpressionError(f"cannot evaluate {ast.unparse(node)!r}")


@dataclass(frozen=True)
class RowExpression:
    """An expression over the columns of a row batch."""

    source: str
    names: frozenset[str]

    def evaluate(self, columns: Mapping[str, np.ndarray], n_rows: int | None = None) -> np.ndarray:
        env = {}
        for name in self.names:
            if name not in columns:
                raise KeyError(
                    f"expression {self.source!r} uses column {name!r}; available: {sorted(columns)}"
                )
            v = columns[name]
            if hasattr(v, "to_numpy"):
                v = v.to_numpy(zero_copy_only=False) if not hasattr(v, "values") else v.to_numpy()
            v = np.asarray(v)
            env[name] = v.astype(np.float64) if v.dtype.kind == "f" else v
            if n_rows is None:
                n_rows = v.shape[0]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            out = np.asarray(_eval(_tree(self.source), env, None))
        if out.ndim == 0 and n_rows is not None:
            out = np.full(n_rows, out[()])
        return out


@dataclass(frozen=True)
class Aggregate:
    """One per-cell aggregate inside a cell expression, e.g. ``sum(1 / s**2)``."""

    func: str
    row: RowExpression
    key: str


@dataclass(frozen=True)
class CellExpression:
    """An expression over per-cell aggregates of row expressions (and ``area``)."""

    source: str
    aggregates: tuple[Aggregate, ...]
    uses_area: bool

    def evaluate(self, values: Mapping[str, np.ndarray], area=None) -> np.ndarray:
        env = {}
        if self.uses_area:
            if area is None:
                raise ExpressionError(f"{self.source!r} uses 'area': give the cell area")
            env["area"] = area
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            return np.asarray(_eval(_tree(self.source), env, values), dtype=np.float64)


def parse_row(src: str) -> RowExpression:
    """Parse a row expression (columns, arithmetic, comparisons, whitelisted numpy functions)."""
    tree = _tree(src)
    names: set[str] = set()
    _check(tree, src, names, None)
    return RowExpression(ast.unparse(tree), frozenset(names))


def parse_filter(src: str) -> RowExpression:
    """Parse a filter (a row expression giving booleans)."""
    return parse_row(src)


def parse_cell(src: str) -> CellExpression:
    """Parse a cell expression: aggregates (sum count mean min max var std) of row expressions."""
    tree = _tree(src)
    names: set[str] = set()
    aggs: list[Aggregate] = []
    _check(tree, src, names, aggs)
    extra = names - {"area"}
    if extra:
        raise ExpressionError(
            f"{sorted(extra)} in cell expression {src!r} must be inside an aggregate "
            f"({', '.join(AGGREGATES)}) or be 'area'"
        )
    if not aggs:
        raise ExpressionError(f"cell expression {src!r} uses no aggregate ({', '.join(AGGREGATES)})")
    uniq = tuple({a.key: a for a in aggs}.values())
    return CellExpression(ast.unparse(tree), uniq, "area" in names)

"""zagg expressions (Python with ``np.``) as healforge expressions.

A zagg per-cell expression such as ``1.0 / np.sqrt(np.sum(1.0 / s_li**2))`` becomes a cell
expression of :mod:`healforge.expressions`; the core (:mod:`healforge.aggregate`) keeps each
aggregate's row expression as a state column, so it exists at every pyramid level, streaming and
exact alike. numpy's meanings are kept: ``np.sum`` of a cell holding a NaN is NaN (``np.nansum``
skips it), ``len``/``np.size`` count the rows.
"""

from __future__ import annotations

import ast

from healforge.expressions import FUNCTIONS, parse_cell, parse_row

# zagg aggregate name -> (healforge aggregate, numpy propagates NaN); None: the row count
AGGREGATES: dict[str, tuple[str | None, bool]] = {
    "sum": ("sum", True),
    "nansum": ("sum", False),
    "mean": ("mean", True),
    "average": ("mean", True),
    "nanmean": ("mean", False),
    "min": ("min", True),
    "amin": ("min", True),
    "nanmin": ("min", False),
    "max": ("max", True),
    "amax": ("max", True),
    "nanmax": ("max", False),
    "var": ("var", True),
    "nanvar": ("var", False),
    "std": ("std", True),
    "nanstd": ("std", False),
    "len": (None, False),
    "size": (None, False),
}
_NUMPY = ("np", "numpy")
ROWS = "count(1)"  # the rows of a cell


def _func_name(node: ast.expr) -> str | None:
    """``sum`` for ``sum``, ``np.sum`` or ``numpy.sum``; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in _NUMPY:
        return node.attr
    return None


def _parse(text: str) -> ast.expr:
    try:
        return ast.parse(str(text).strip(), mode="eval").body
    except SyntaxError as exc:
        raise ValueError(f"not a valid expression ({exc.msg}): {text!r}") from None


class _Bare(ast.NodeTransformer):
    """``np.sqrt(x)`` -> ``sqrt(x)`` (healforge names numpy functions bare)."""

    def visit_Call(self, node: ast.Call) -> ast.AST:
        self.generic_visit(node)
        name = _func_name(node.func)
        if name is not None and not isinstance(node.func, ast.Name):
            node.func = ast.Name(id=name, ctx=ast.Load())
        return node


def row_expression(text: str) -> str:
    """A zagg row expression as a healforge row expression text (``ValueError`` if not allowed)."""
    out = ast.unparse(_Bare().visit(_parse(text)))
    parse_row(out)  # ExpressionError (a ValueError) naming what is not allowed
    return out


class _Cell(ast.NodeTransformer):
    def __init__(self, text: str):
        self.text = text

    def visit_Call(self, node: ast.Call) -> ast.AST:
        fname = _func_name(node.func)
        if fname not in AGGREGATES:
            self.generic_visit(node)
            if fname is not None and fname not in FUNCTIONS:
                raise ValueError(
                    f"function {fname!r} is not allowed in the cell expression {self.text!r}; aggregates: "
                    f"{', '.join(sorted(AGGREGATES))}; element-wise: {', '.join(sorted(FUNCTIONS))}"
                )
            node.func = ast.Name(id=fname, ctx=ast.Load()) if fname else node.func
            return node
        if node.keywords or len(node.args) != 1:
            raise ValueError(f"{fname}() takes one argument (a row expression) in {self.text!r}")
        if any(isinstance(n, ast.Call) and _func_name(n.func) in AGGREGATES for n in ast.walk(node.args[0])):
            raise ValueError(f"aggregates cannot be nested: {ast.unparse(node)!r} in {self.text!r}")
        row = row_expression(ast.unparse(node.args[0]))
        func, propagates_nan = AGGREGATES[fname]
        if func is None:
            return _parse(ROWS)
        agg = f"{func}({row})"
        if propagates_nan:  # numpy: one NaN in the cell makes the aggregate NaN
            agg = f"where(count({row}) < {ROWS}, nan, {agg})"
        return _parse(agg)


def cell_expression(text: str) -> str:
    """A zagg per-cell expression as a healforge cell expression text.

    Raises
    ------
    ValueError
        When a column is used outside an aggregate, aggregates are nested, or the expression uses
        something that is not allowed (``np.median`` of a cell: use a ``median`` variable).
    """
    out = ast.unparse(_Cell(text).visit(_parse(text)))
    parse_cell(out)  # ExpressionError (a ValueError): stray columns, nesting, unknown names
    return out

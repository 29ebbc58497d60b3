"""The vocabulary of the expression language: allowed numpy functions, aggregates, operators, constants."""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Function:
    func: Callable
    min_args: int
    max_args: int
    keywords: frozenset[str] = frozenset()


def _fn(name: str, lo: int, hi: int | None = None, keywords: str = "") -> tuple[str, _Function]:
    return name, _Function(getattr(np, name), lo, lo if hi is None else hi, frozenset(keywords.split()))


_UNARY = (
    "sqrt cbrt square exp exp2 expm1 log log10 log2 log1p abs absolute fabs sign negative reciprocal "
    "sin cos tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh "
    "radians degrees deg2rad rad2deg floor ceil rint trunc fix isnan isfinite isinf signbit logical_not"
)
_BINARY = (
    "arctan2 hypot minimum maximum fmin fmax power float_power mod fmod remainder copysign "
    "add subtract multiply divide true_divide floor_divide logical_and logical_or logical_xor"
)
#: Elementwise numpy functions callable by bare name or as ``np.NAME`` / ``numpy.NAME``.
FUNCTIONS: dict[str, _Function] = dict(
    [_fn(n, 1) for n in _UNARY.split()]
    + [_fn(n, 2) for n in _BINARY.split()]
    + [
        _fn("round", 1, 2, "decimals"),
        _fn("around", 1, 2, "decimals"),
        _fn("clip", 3),
        _fn("where", 3),
        _fn("nan_to_num", 1, 1, "nan posinf neginf"),
    ]
)
#: Named constants (reserved: not usable as column names).
CONSTANTS: dict[str, float] = {"pi": np.pi, "e": np.e, "nan": np.nan, "inf": np.inf}
#: Aggregate spellings of cell expressions -> canonical aggregate.
AGGREGATES: dict[str, str] = {
    "sum": "sum",
    "nansum": "sum",
    "count": "count",
    "len": "count",
    "mean": "mean",
    "nanmean": "mean",
    "min": "min",
    "nanmin": "min",
    "amin": "min",
    "max": "max",
    "nanmax": "max",
    "amax": "max",
    "var": "var",
    "nanvar": "var",
    "std": "std",
    "nanstd": "std",
}
_BARE_ONLY_AGGREGATES = {"count", "len"}  # not numpy names
_MODULES = ("np", "numpy")
CELL_AREA = "area"

_BINOPS: dict[type, tuple[str, Callable]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", None),  # see _power
    ast.BitAnd: ("&", operator.and_),
    ast.BitOr: ("|", operator.or_),
    ast.BitXor: ("^", operator.xor),
}
_CMPOPS: dict[type, Callable] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}
_BOOLISH_CALLS = {
    "isnan",
    "isfinite",
    "isinf",
    "signbit",
    "logical_not",
    "logical_and",
    "logical_or",
    "logical_xor",
}

SYNTAX_HINT = (
    "allowed: numbers, column names, + - * / // % **, comparisons (== != < <= > >=, chains too), "
    "and/or/not, & | ^ ~, 'a if cond else b', and calls of the allowed numpy functions "
    "(bare or as np.NAME); constants pi, e, nan, inf"
)
FUNCTION_HINT = "allowed functions: " + ", ".join(sorted(FUNCTIONS))
AGGREGATE_HINT = (
    "aggregates: sum, count (len), mean, min, max, var, std (ddof=0 default), also as np.sum, np.nansum, ..."
)

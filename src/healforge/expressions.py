"""The one expression language of healforge: row expressions, filters and cell expressions.

Expressions are parsed with :mod:`ast` and evaluated by walking the tree over a whitelist of node
types and numpy functions; user text never reaches ``eval``/``exec``, and there is no attribute
access except the whitelisted ``np.NAME``/``numpy.NAME`` spellings. See ``docs/expressions.md``.

- :func:`parse_row` -- per-row values from columns: ``1 / sigma**2``, ``where(q == 0, h, nan)``.
- :func:`parse_filter` -- a row expression that must give true/false: ``q == 0 and 0 < s <= 5``.
- :func:`parse_cell` -- per-cell values from aggregates of row expressions:
  ``1 / sqrt(sum(1 / s**2))``, ``sum(w * x) / sum(w)``, ``count(h) / area``.
- :func:`parse_column_spec` -- ``"name"`` or ``"name=row expression"`` (``--columns``).
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.errors import HealforgeError

MAX_LENGTH = 10_000  # characters of one expression
MAX_DEPTH = 100  # nesting depth of the syntax tree
MAX_NODES = 5_000


class ExpressionError(HealforgeError, ValueError):
    """An expression that is not in the language, or cannot be evaluated.

    The message names the expression, the position (line, column and a caret line) and what is
    allowed there. ``source``, ``line`` and ``column`` (1-based; ``None`` when unknown) are kept.
    """

    def __init__(
        self,
        message: str,
        source: str,
        node: ast.AST | None = None,
        *,
        hint: str | None = None,
        position: tuple[int, int, int, int] | None = None,
    ):
        self.source, self.reason, self.hint = source, message, hint
        if position is None and node is not None and getattr(node, "lineno", None) is not None:
            position = (
                node.lineno,
                node.col_offset,
                node.end_lineno or node.lineno,
                node.end_col_offset or 0,
            )
        self.line = self.column = None
        shown = source if len(source) <= 200 else source[:120] + " ... " + source[-40:]
        text = f"expression {shown!r}: {message}"
        if position is not None:
            line, col, end_line, end_col = position
            lines = source.splitlines() or [""]
            line = min(max(line, 1), len(lines))
            src_line = lines[line - 1]
            # ast offsets count UTF-8 bytes; turn them into characters
            col = len(src_line.encode()[:col].decode(errors="ignore"))
            end = (
                len(src_line.encode()[:end_col].decode(errors="ignore"))
                if end_line == line
                else len(src_line)
            )
            self.line, self.column = line, col + 1
            where = f"line {line}, column {col + 1}" if len(lines) > 1 else f"column {col + 1}"
            text += f" (at {where})"
            if len(src_line) <= 300:
                text += f"\n    {src_line}\n    {' ' * col}{'^' * max(1, end - col)}"
        if hint:
            text += f"\n  {hint}"
        super().__init__(text)

    def __reduce__(self):  # picklable across worker processes
        return _restore_error, (type(self), str(self), dict(self.__dict__))


def _restore_error(cls: type, text: str, state: dict) -> ExpressionError:
    err = cls.__new__(cls)
    Exception.__init__(err, text)
    err.__dict__.update(state)
    return err


# ---------------------------------------------------------------------------------------------
# The vocabulary


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


# ---------------------------------------------------------------------------------------------
# Parsing and checking


def _parse_tree(src: Any) -> tuple[str, ast.expr]:
    if not isinstance(src, str):
        raise ExpressionError(f"must be a string, got {type(src).__name__}", repr(src))
    text = src.strip()
    if not text:
        raise ExpressionError("is empty", src)
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"is longer than {MAX_LENGTH} characters", text)
    if "#" in text:
        i = text.index("#")
        line = text.count("\n", 0, i) + 1
        col = len(text[:i].rsplit("\n", 1)[-1].encode())
        raise ExpressionError("comments (#) are not allowed", text, position=(line, col, line, col + 1))
    # an expression may span lines (YAML block scalars): newlines are blanks, positions are kept
    flat = text.replace("\r", " ").replace("\n", " ")
    try:
        tree = ast.parse(flat, mode="eval")
    except SyntaxError as exc:
        index = (exc.offset or 0) - 1
        index = index if 0 <= index < len(text) else len(text)  # 0: at the end of the text
        width = max(1, (exc.end_offset or 0) - 1 - index) if exc.end_offset and exc.end_offset > 0 else 1
        line, col = _line_col(text, index)
        raise ExpressionError(
            f"not a valid expression ({exc.msg})",
            text,
            position=(line, col, line, col + width),
            hint=SYNTAX_HINT,
        ) from None
    except (RecursionError, MemoryError, ValueError) as exc:
        what = "is nested too deeply to be parsed" if isinstance(exc, RecursionError) else "cannot be parsed"
        raise ExpressionError(f"{what} ({type(exc).__name__})", text) from None
    body = tree.body
    for node in ast.walk(body):  # map positions back onto the original lines
        if getattr(node, "lineno", None) is not None:
            node.lineno, node.col_offset = _line_col(text, _chars(flat, node.col_offset))
            node.end_lineno, node.end_col_offset = _line_col(text, _chars(flat, node.end_col_offset))
    return text, body


def _chars(flat: str, byte_offset: int) -> int:
    return len(flat.encode()[:byte_offset].decode(errors="ignore"))


def _line_col(text: str, index: int) -> tuple[int, int]:
    """(1-based line, UTF-8 byte column) of character ``index`` of ``text``."""
    line = text.count("\n", 0, index) + 1
    start = text.rfind("\n", 0, index) + 1
    return line, len(text[start:index].encode())


class _Checker:
    """Validates a tree and returns a normalized copy (``np.sqrt`` -> ``sqrt``, ``np.pi`` -> ``pi``).

    ``mode`` is ``"row"`` (names are columns) or ``"cell"`` (aggregates of row expressions,
    ``area`` and constants outside them).
    """

    def __init__(self, source: str, mode: str):
        self.source, self.mode = source, mode
        self.names: set[str] = set()
        self.aggregates: dict[str, Aggregate] = {}
        self.uses_area = False
        self.nodes = 0

    def fail(self, message: str, node: ast.AST, hint: str | None = None) -> ExpressionError:
        return ExpressionError(message, self.source, node, hint=hint)

    def check(self, node: ast.AST, depth: int = 0, in_agg: bool = False) -> ast.expr:
        self.nodes += 1
        if depth > MAX_DEPTH or self.nodes > MAX_NODES:
            raise self.fail(f"is nested too deeply (more than {MAX_DEPTH} levels or {MAX_NODES} parts)", node)
        d = depth + 1
        if isinstance(node, ast.Constant):
            return self.constant(node)
        if isinstance(node, ast.Name):
            return self.name(node, in_agg)
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                raise self.fail(f"operator {type(node.op).__name__} is not allowed", node, SYNTAX_HINT)
            new = _copy(
                node, ast.BinOp(self.check(node.left, d, in_agg), node.op, self.check(node.right, d, in_agg))
            )
            if isinstance(node.op, ast.Pow) and _is_constant(new):
                self.fold_guard(new)
            return new
        if isinstance(node, ast.UnaryOp):
            return _copy(node, ast.UnaryOp(node.op, self.check(node.operand, d, in_agg)))
        if isinstance(node, ast.BoolOp):
            return _copy(node, ast.BoolOp(node.op, [self.check(v, d, in_agg) for v in node.values]))
        if isinstance(node, ast.Compare):
            for op in node.ops:
                if type(op) not in _CMPOPS:
                    raise self.fail(
                        f"comparison {type(op).__name__} is not allowed (use == != < <= > >=)",
                        node,
                        SYNTAX_HINT,
                    )
            return _copy(
                node,
                ast.Compare(
                    self.check(node.left, d, in_agg),
                    node.ops,
                    [self.check(c, d, in_agg) for c in node.comparators],
                ),
            )
        if isinstance(node, ast.IfExp):
            return _copy(
                node,
                ast.IfExp(
                    self.check(node.test, d, in_agg),
                    self.check(node.body, d, in_agg),
                    self.check(node.orelse, d, in_agg),
                ),
            )
        if isinstance(node, ast.Call):
            return self.call(node, d, in_agg)
        if isinstance(node, ast.Attribute):
            dotted = _dotted(node)
            if dotted and dotted[0] in _MODULES and len(dotted) == 2 and dotted[1] in CONSTANTS:
                return _copy(node, ast.Name(dotted[1], ast.Load()))
            raise self.fail(
                f"attribute access {ast.unparse(node)!r} is not allowed (only np.NAME of the allowed "
                "functions and constants)",
                node,
                FUNCTION_HINT,
            )
        raise self.fail(f"{_describe(node)} is not allowed", node, SYNTAX_HINT)

    def constant(self, node: ast.Constant) -> ast.expr:
        v = node.value
        if isinstance(v, bool):
            return node
        if isinstance(v, int):
            if abs(v) < 2**63:
                return node
            try:
                return _copy(node, ast.Constant(float(v)))
            except OverflowError:
                raise self.fail("number is too large", node) from None
        if isinstance(v, float):
            return node
        what = "string literals are" if isinstance(v, str | bytes) else f"constant {v!r} is"
        raise self.fail(f"{what} not allowed (only numbers, True, False)", node, SYNTAX_HINT)

    def name(self, node: ast.Name, in_agg: bool) -> ast.expr:
        n = node.id
        if n.startswith("__"):
            raise self.fail(f"name {n!r} is not allowed (no dunder names)", node)
        if n in CONSTANTS:
            return node
        if n in _MODULES:
            raise self.fail(
                f"{n!r} can only be used as {n}.NAME of an allowed function or constant", node, FUNCTION_HINT
            )
        if self.mode == "cell" and not in_agg:
            if n == CELL_AREA:
                self.uses_area = True
                return node
            raise self.fail(
                f"column {n!r} is used outside an aggregate; wrap it, e.g. mean({n}) or sum({n})",
                node,
                AGGREGATE_HINT,
            )
        self.names.add(n)
        return node

    def call(self, node: ast.Call, d: int, in_agg: bool) -> ast.expr:
        dotted = _dotted(node.func)
        if dotted is None or len(dotted) > 2 or (len(dotted) == 2 and dotted[0] not in _MODULES):
            raise self.fail(
                f"calling {ast.unparse(node.func)!r} is not allowed (only allowed functions by name or np.NAME)",
                node.func,
                FUNCTION_HINT,
            )
        name, bare = dotted[-1], len(dotted) == 1
        if name.startswith("__"):
            raise self.fail(f"name {name!r} is not allowed (no dunder names)", node.func)
        for a in node.args:
            if isinstance(a, ast.Starred):
                raise self.fail("starred arguments (*args) are not allowed", a)
        for k in node.keywords:
            if k.arg is None:
                raise self.fail("keyword unpacking (**kwargs) is not allowed", k.value)
        is_agg = name in AGGREGATES and (bare or name not in _BARE_ONLY_AGGREGATES)
        if is_agg and (bare or name not in FUNCTIONS):
            return self.aggregate(node, name, AGGREGATES[name], in_agg)
        if name not in FUNCTIONS:
            close = difflib.get_close_matches(name, list(FUNCTIONS), n=1, cutoff=0.75)
            did = f"; did you mean {close[0]!r}?" if close else ""
            raise self.fail(
                f"function {ast.unparse(node.func)!r} is not allowed{did}", node.func, FUNCTION_HINT
            )
        fn = FUNCTIONS[name]
        if not fn.min_args <= len(node.args) <= fn.max_args:
            want = str(fn.min_args) if fn.min_args == fn.max_args else f"{fn.min_args} to {fn.max_args}"
            raise self.fail(f"{name}() takes {want} positional argument(s), got {len(node.args)}", node)
        keywords = []
        for k in node.keywords:
            if k.arg not in fn.keywords:
                allowed = ", ".join(sorted(fn.keywords)) or "none"
                raise self.fail(
                    f"keyword {k.arg!r} is not allowed for {name}() (allowed: {allowed})", k.value
                )
            keywords.append(
                ast.keyword(k.arg, self.keyword_constant(k.value, name, int_only=k.arg == "decimals"))
            )
        args = [self.check(a, d, in_agg) for a in node.args]
        return _copy(node, ast.Call(ast.Name(name, ast.Load()), args, keywords))

    def keyword_constant(self, node: ast.AST, fname: str, int_only: bool) -> ast.Constant:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - set(CONSTANTS) - set(_MODULES)
        checked = None if names else self.check(node, MAX_DEPTH - 5)
        if checked is None or not _is_constant(checked):
            raise self.fail(f"keyword arguments of {fname}() must be numbers", node)
        value = _evaluate(checked, {}, self.source)
        if int_only:
            if not float(value).is_integer():
                raise self.fail(f"keyword argument of {fname}() must be an integer", node)
            value = int(value)
        return _copy(node, ast.Constant(value.item() if isinstance(value, np.generic) else value))

    def aggregate(self, node: ast.Call, spelled: str, func: str, in_agg: bool) -> ast.expr:
        if self.mode == "row":
            hint = FUNCTION_HINT
            if func in ("min", "max"):
                hint = f"for the elementwise {func}imum of two values use {func}imum(a, b); " + hint
            raise self.fail(
                f"aggregate {spelled}() is only allowed in cell expressions (statistics per cell), not in "
                "row expressions",
                node.func,
                hint,
            )
        if in_agg:
            raise self.fail("aggregates cannot be nested", node)
        if len(node.args) != 1:
            raise self.fail(
                f"aggregate {spelled}() takes one row expression, got {len(node.args)} arguments", node
            )
        ddof = 0
        for k in node.keywords:
            if k.arg != "ddof" or func not in ("var", "std"):
                raise self.fail(
                    f"keyword {k.arg!r} is not allowed for {spelled}() (var/std take ddof)", k.value
                )
            value = self.keyword_constant(k.value, spelled, int_only=True).value
            if value < 0:
                raise self.fail("ddof must be >= 0", k.value)
            ddof = int(value)
        inner = _Checker(self.source, "cell")
        row_node = inner.check(node.args[0], 1, in_agg=True)
        row_src = ast.unparse(row_node)
        row = parse_row(row_src)
        key = f"{func}({row_src}{f', ddof={ddof}' if ddof else ''})"
        if key not in self.aggregates:
            self.aggregates[key] = Aggregate(func, row, key, ddof)
        return _copy(node, ast.Name(_AGG_PREFIX + key, ast.Load()))

    def fold_guard(self, node: ast.BinOp) -> None:
        """A constant power must stay finite (``10**10**10`` is refused, and never computed exactly)."""
        with np.errstate(all="ignore"):
            base, exp = _evaluate(node.left, {}, self.source), _evaluate(node.right, {}, self.source)
            value = _power(base, exp)
        if not np.isfinite(value) and np.isfinite(base) and np.isfinite(exp):
            raise self.fail("constant power overflows (its value would be infinite)", node)


_AGG_PREFIX = "\0agg:"


def _copy(old: ast.AST, new: ast.AST) -> ast.AST:
    return ast.copy_location(new, old)


def _dotted(node: ast.AST) -> list[str] | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return parts[::-1]


def _is_constant(node: ast.AST) -> bool:
    for n in ast.walk(node):
        if isinstance(n, ast.Name) and n.id not in CONSTANTS:
            return False
    return True


def _describe(node: ast.AST) -> str:
    names = {
        ast.Lambda: "lambda",
        ast.ListComp: "a list comprehension",
        ast.SetComp: "a set comprehension",
        ast.DictComp: "a dict comprehension",
        ast.GeneratorExp: "a generator expression",
        ast.NamedExpr: "assignment (:=)",
        ast.JoinedStr: "an f-string",
        ast.Subscript: "subscripting ([...])",
        ast.List: "a list",
        ast.Tuple: "a tuple",
        ast.Dict: "a dict",
        ast.Set: "a set",
        ast.Starred: "starred (*)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.YieldFrom: "yield",
        ast.Slice: "a slice",
    }
    return names.get(type(node), type(node).__name__)


# ---------------------------------------------------------------------------------------------
# Evaluation (a tree walk over the normalized tree; every node type here was checked)


def _scalar(value: Any) -> Any:
    """Python numbers become numpy scalars, so that 1/0 gives inf and powers cannot hang."""
    if isinstance(value, bool | int | float):
        return np.asarray(value)[()]
    return value


def _power(base: Any, exp: Any) -> Any:
    base, exp = _scalar(base), _scalar(exp)
    if np.asarray(base).dtype.kind in "biu":
        base = np.asarray(base, dtype=np.float64)  # integer powers in float64: no wrap-around
        base = base[()] if base.ndim == 0 else base
    return np.power(base, exp)


def _evaluate(node: ast.AST, env: Mapping[str, Any], source: str) -> Any:
    try:
        return _eval(node, env)
    except ExpressionError:
        raise
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        raise ExpressionError(f"cannot be evaluated: {exc}", source, getattr(exc, "_node", None)) from None


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    try:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in CONSTANTS:
                return CONSTANTS[node.id]
            return env[node.id]
        if isinstance(node, ast.BinOp):
            left, right = _eval(node.left, env), _eval(node.right, env)
            if isinstance(node.op, ast.Pow):
                return _power(left, right)
            return _BINOPS[type(node.op)][1](_scalar(left), right)
        if isinstance(node, ast.UnaryOp):
            value = _eval(node.operand, env)
            if isinstance(node.op, ast.Not):
                return np.logical_not(value)
            if isinstance(node.op, ast.Invert):
                return np.invert(_scalar(value))
            return np.negative(value) if isinstance(node.op, ast.USub) else np.positive(value)
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            out = _eval(node.values[0], env)
            for v in node.values[1:]:
                out = combine(out, _eval(v, env))
            return out
        if isinstance(node, ast.Compare):
            left, out = _eval(node.left, env), None
            for op, comp in zip(node.ops, node.comparators, strict=True):
                right = _eval(comp, env)
                res = _CMPOPS[type(op)](_scalar(left), right)
                out = res if out is None else np.logical_and(out, res)
                left = right
            return out
        if isinstance(node, ast.IfExp):
            return np.where(_eval(node.test, env), _eval(node.body, env), _eval(node.orelse, env))
        if isinstance(node, ast.Call):
            fn = FUNCTIONS[node.func.id]
            args = [_eval(a, env) for a in node.args]
            return fn.func(*args, **{k.arg: k.value.value for k in node.keywords})
    except (TypeError, ValueError, ArithmeticError, IndexError) as exc:
        if not hasattr(exc, "_node"):
            exc._node = node
        raise
    raise AssertionError(f"unchecked node {type(node).__name__}")  # the checker admits no other node


def _as_array(value: Any) -> np.ndarray:
    if hasattr(value, "to_numpy") and not isinstance(value, np.ndarray):
        try:
            value = value.to_numpy(zero_copy_only=False)
        except TypeError:
            value = value.to_numpy()
    arr = np.asarray(value)
    if arr.dtype.kind == "f" and arr.dtype != np.float64:
        arr = arr.astype(np.float64)  # compute in float64
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"has dtype {arr.dtype}, not a number or boolean")
    return arr


# ---------------------------------------------------------------------------------------------
# Public objects


@dataclass(frozen=True)
class RowExpression:
    """A checked expression over the columns of a table, evaluated row by row.

    Expressions with the same source (and kind) are equal and hash alike.
    """

    source: str
    names: frozenset[str]
    _tree: ast.expr = field(repr=False, compare=False)
    _filter: bool = field(default=False, repr=False)

    def evaluate(self, columns: Mapping[str, Any], n_rows: int | None = None) -> np.ndarray:
        """Values for every row of ``columns`` (name -> numpy/pyarrow/pandas column).

        A constant result is broadcast to ``n_rows`` rows (default: the length of the columns).
        """
        env = {}
        for name in sorted(self.names):
            if name not in columns:
                close = difflib.get_close_matches(name, [str(c) for c in columns], n=1)
                did = f"; did you mean {close[0]!r}?" if close else ""
                node = next(n for n in ast.walk(self._tree) if isinstance(n, ast.Name) and n.id == name)
                raise ExpressionError(
                    f"unknown column {name!r}{did}",
                    self.source,
                    node,
                    hint=f"available columns: {', '.join(map(str, columns)) or '(none)'}",
                )
            try:
                env[name] = _as_array(columns[name])
            except TypeError as exc:
                raise ExpressionError(f"column {name!r} {exc}", self.source) from None
        if n_rows is None:
            lengths = {len(v) for v in env.values() if np.ndim(v) == 1}
            if not lengths and columns:
                lengths = {len(_as_len(next(iter(columns.values()))))}
            n_rows = lengths.pop() if len(lengths) == 1 else None
        with np.errstate(all="ignore"):
            out = np.asarray(_evaluate(self._tree, env, self.source))
        if self._filter and out.dtype != np.bool_:
            raise ExpressionError(
                f"a filter must give true/false for every row, this gives {out.dtype} values",
                self.source,
                hint="use comparisons such as 'x > 0', 'isfinite(x)', combined with and/or/not",
            )
        if n_rows is not None:
            if out.ndim == 0:
                return np.full(n_rows, out[()], dtype=out.dtype)
            if out.shape != (n_rows,):
                raise ExpressionError(
                    f"gives {out.shape[0] if out.ndim else 0} values for {n_rows} rows", self.source
                )
        return out


def _as_len(value: Any) -> Any:
    return value if hasattr(value, "__len__") else np.atleast_1d(value)


@dataclass(frozen=True)
class Aggregate:
    """One per-cell aggregate of a row expression; ``key`` is canonical (equal aggregates share it)."""

    func: str  # sum, count, mean, min, max, var, std (over the valid, non-NaN row values)
    row: RowExpression
    key: str
    ddof: int = 0  # var/std only


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


def parse_row(src: str) -> RowExpression:
    """Parse and check a row expression (``1 / sigma**2``); :class:`ExpressionError` if not allowed."""
    text, body = _parse_tree(src)
    checker = _Checker(text, "row")
    tree = checker.check(body)
    return RowExpression(text, frozenset(checker.names), tree)


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

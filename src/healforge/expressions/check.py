"""Parsing and checking: a syntax tree is walked once against the vocabulary and normalized."""

from __future__ import annotations

import ast
import difflib
from typing import Any

import numpy as np

from healforge.expressions.errors import MAX_DEPTH, MAX_LENGTH, MAX_NODES, ExpressionError
from healforge.expressions.evaluate import _evaluate, _power
from healforge.expressions.row import Aggregate, RowExpression
from healforge.expressions.vocabulary import (
    _BARE_ONLY_AGGREGATES,
    _BINOPS,
    _CMPOPS,
    _MODULES,
    AGGREGATE_HINT,
    AGGREGATES,
    CELL_AREA,
    CONSTANTS,
    FUNCTION_HINT,
    FUNCTIONS,
    SYNTAX_HINT,
)


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


def parse_row(src: str) -> RowExpression:
    """Parse and check a row expression (``1 / sigma**2``); :class:`ExpressionError` if not allowed."""
    text, body = _parse_tree(src)
    checker = _Checker(text, "row")
    tree = checker.check(body)
    return RowExpression(text, frozenset(checker.names), tree)

"""Evaluation: a tree walk over a checked, normalized tree (every node type here was checked)."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any

import numpy as np

from healforge.expressions.errors import ExpressionError
from healforge.expressions.vocabulary import _BINOPS, _CMPOPS, CONSTANTS, FUNCTIONS


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

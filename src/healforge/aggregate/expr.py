"""Column expressions (``ratio=a / b``, weights such as ``1 / sigma**2``) evaluated with numpy."""

from __future__ import annotations

import ast

import numpy as np

_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.Attribute,
    ast.Add,
    ast.Sub,
    ast.Mult,
    ast.Div,
    ast.Pow,
    ast.Mod,
    ast.FloorDiv,
    ast.USub,
    ast.UAdd,
    ast.Compare,
    ast.Lt,
    ast.LtE,
    ast.Gt,
    ast.GtE,
    ast.Eq,
    ast.NotEq,
    ast.IfExp,
)


def parse_column_spec(spec: str) -> tuple[str, str | None]:
    """``"name"`` -> ``("name", None)``; ``"name=expr"`` -> ``("name", "expr")``."""
    if "=" in spec and not any(op in spec for op in ("==", "<=", ">=", "!=")):
        name, expr = spec.split("=", 1)
        return name.strip(), expr.strip()
    return spec.strip(), None


def expression_names(expr: str) -> list[str]:
    """Column names an expression uses (numpy functions excluded)."""
    tree = _parse(expr)
    funcs = {n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id not in funcs and n.id != "np"]
    return list(dict.fromkeys(names))


def _parse(expr: str) -> ast.Expression:
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"cannot parse expression {expr!r}: {exc.msg}") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            raise ValueError(f"expression {expr!r} uses unsupported syntax ({type(node).__name__})")
    return tree


def evaluate(expr: str, columns: dict[str, np.ndarray]) -> np.ndarray:
    """Evaluate an arithmetic expression over float columns (numpy functions by bare name)."""
    tree = _parse(expr)
    env = {k: getattr(np, k) for k in dir(np) if not k.startswith("_") and callable(getattr(np, k))}
    env.update({"np": np, "pi": np.pi, "e": np.e})
    env.update(columns)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = eval(compile(tree, "<expression>", "eval"), {"__builtins__": {}}, env)  # noqa: S307
    n = len(next(iter(columns.values()))) if columns else 1
    return np.broadcast_to(np.asarray(out, dtype=np.float64), (n,)).copy()

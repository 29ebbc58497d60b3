"""Row expressions (per-row values and filters) and the aggregates cell expressions are built from."""

from __future__ import annotations

import ast
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.expressions.errors import ExpressionError
from healforge.expressions.evaluate import _as_array, _evaluate


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

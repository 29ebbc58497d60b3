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

from healforge.expressions.cell import CellExpression, parse_cell, parse_column_spec, parse_filter
from healforge.expressions.check import parse_row
from healforge.expressions.errors import ExpressionError
from healforge.expressions.row import Aggregate, RowExpression
from healforge.expressions.vocabulary import FUNCTIONS

__all__ = [
    "Aggregate",
    "CellExpression",
    "ExpressionError",
    "FUNCTIONS",
    "RowExpression",
    "parse_cell",
    "parse_column_spec",
    "parse_filter",
    "parse_row",
]

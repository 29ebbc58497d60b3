"""The few things the zagg front end needs from healforge's row-expression language.

Kept in one place so that the zagg modules follow the expression language wherever it lives:
``healforge.expressions`` (the one expression language, on main) when present, otherwise the
expressions of ``healforge.config`` (this branch's base). Drop the second half after the merge.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

try:
    from healforge.expressions import FUNCTIONS as _FUNCTIONS
    from healforge.expressions import parse_row as _parse
except ImportError:  # the branch base: expressions live in healforge.config
    from healforge.config import EXPRESSION_FUNCTIONS as _FUNCTIONS
    from healforge.config import Expression

    _parse = Expression.parse


def check(text: str) -> frozenset[str]:
    """Column names of a row expression; ``ValueError`` naming what is not allowed."""
    return _parse(text).names


def evaluate(text: str, columns: Mapping[str, Any]) -> np.ndarray:
    """Values of a row expression over ``columns``."""
    return _parse(text).evaluate(columns)


def source(expr: Any) -> str | None:
    """The text of a parsed expression of a configuration (None for none)."""
    if expr is None:
        return None
    return getattr(expr, "source", None) or expr.text


def is_elementwise(name: str) -> bool:
    """Whether ``name`` is an element-wise function of the expression language."""
    return name in _FUNCTIONS


def elementwise_names() -> list[str]:
    return sorted(_FUNCTIONS)

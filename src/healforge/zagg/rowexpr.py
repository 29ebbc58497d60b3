"""The few things the zagg front end needs from healforge's row-expression language.

Kept in one place so that the zagg modules follow the expression language wherever it lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from healforge.config import EXPRESSION_FUNCTIONS, Expression


def check(text: str) -> frozenset[str]:
    """Column names of a row expression; ``ValueError`` naming what is not allowed."""
    return Expression.parse(text).names


def evaluate(text: str, columns: Mapping[str, Any]) -> np.ndarray:
    """Values of a row expression over ``columns``."""
    return Expression.parse(text).evaluate(columns)


def source(expr: Any) -> str | None:
    """The text of a parsed expression of a configuration (None for none)."""
    return None if expr is None else expr.text


def is_elementwise(name: str) -> bool:
    """Whether ``name`` is an element-wise function of the expression language."""
    return name in EXPRESSION_FUNCTIONS


def elementwise_names() -> list[str]:
    return sorted(EXPRESSION_FUNCTIONS)

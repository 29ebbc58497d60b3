"""The checker that validation records problems on: typed getters for YAML values, each problem
named by its key path, all reported at once."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from healforge.expressions import ExpressionError, RowExpression, parse_row


class Checker:
    def __init__(self):
        self.errors: list[tuple[str, str]] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append((key, message))

    def mapping(
        self, value: Any, key: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> dict | None:
        if not isinstance(value, Mapping):
            self.error(key, f"must be a mapping with keys {', '.join(allowed)}; got {kind(value)}")
            return None
        for k in value:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(join_key(key, k), f"unknown key{hint} (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value or value[k] is None:
                self.error(join_key(key, k), "is required")
        return dict(value)

    def string(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(key, f"must be a non-empty string; got {kind(value)}")
            return None
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(key, f"must be one of {', '.join(choices)}; got {value!r}{hint}")
            return None
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int, what: str = "") -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be an integer in [{lo}, {hi}]{what}; got {kind(value)}")
            return None
        if not lo <= value <= hi:
            self.error(key, f"must be an integer in [{lo}, {hi}]{what}; got {value}")
            return None
        return value

    def number(self, value: Any, key: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"must be a number; got {kind(value)}")
            return None
        return float(value)

    def number_pair(self, value: Any, key: str, shape: str) -> tuple[float | None, float | None] | None:
        """A ``[a, b]`` list of two numbers as a tuple (``None`` for an item that is no number);
        ``None`` when the value is absent, or not such a list (an error naming ``shape``, e.g.
        ``"[lon, lat]"``)."""
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2:
            self.error(key, f"must be {shape}; got {kind(value)}")
            return None
        return self.number(value[0], f"{key}[0]"), self.number(value[1], f"{key}[1]")

    def string_list(self, value: Any, key: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not value:
            self.error(key, f"must be a string or a non-empty list of strings; got {kind(value)}")
            return []
        out = []
        for i, v in enumerate(value):
            s = self.string(v, f"{key}[{i}]")
            if s is not None:
                out.append(s)
        return out

    def expression(
        self, value: Any, key: str, known: set[str] | None, parse: Callable = parse_row
    ) -> RowExpression | None:
        try:
            expr = parse(value)
        except ExpressionError as exc:
            self.error(key, str(exc))
            return None
        self.columns_known(expr.names, key, known)
        return expr

    def columns_known(self, names, key: str, known: set[str] | None) -> None:
        if known is None:
            return
        for name in sorted(names):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(
                    key,
                    f"column {name!r} is not an input column{hint} (inputs give: {', '.join(sorted(known))})",
                )


def kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return (
        f"{type(value).__name__} {value!r}" if not isinstance(value, Mapping | list) else type(value).__name__
    )


def join_key(key: str, sub: Any) -> str:
    return f"{key}.{sub}" if key else str(sub)


def resolve_path(path: str, base: str | None) -> str:
    if "://" in path or base is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))

"""Checks shared by the zagg translation: the keys zagg files may hold and an error collector."""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from typing import Any

from healforge.pixel import MAX_ORDER

READER = "healforge.zagg.read:iter_granule"
TOP = ("data_source", "aggregation", "output", "catalog", "store", "exact", "bounds")
DATA_SOURCE = (
    "reader",
    "driver",
    "groups",
    "coordinates",
    "variables",
    "quality_filter",
    "filters",
    "levels",
    "base_level",
    "read_plan",
)
AGGREGATION = ("handoff", "coordinates", "variables", "exact", "chunk_precompute")
VARIABLE = ("function", "expression", "source", "params", "dtype", "fill_value", "attrs", "kind")
OUTPUT = ("grid", "store", "pyramid", "store_layout", "endpoint_url", "region")
GRID = ("type", "indexing_scheme", "parent_order", "child_order", "layout", "chunk_inner")
FILTER_OPS = ("eq", "ne", "ge", "le", "lt", "gt", "in", "not_in")
# zagg function (numpy name) -> (healforge statistic, parameters, numpy propagates NaN)
FUNCTIONS: dict[str, tuple[str, dict, bool]] = {
    "len": ("count", {}, False),
    "count": ("count", {}, False),
    "size": ("count", {}, False),
    "sum": ("sum", {}, True),
    "nansum": ("sum", {}, False),
    "mean": ("mean", {}, True),
    "nanmean": ("mean", {}, False),
    "average": ("mean", {}, True),
    "min": ("min", {}, True),
    "amin": ("min", {}, True),
    "nanmin": ("min", {}, False),
    "max": ("max", {}, True),
    "amax": ("max", {}, True),
    "nanmax": ("max", {}, False),
    "var": ("var", {"ddof": 0}, True),
    "nanvar": ("var", {"ddof": 0}, False),
    "std": ("std", {"ddof": 0}, True),
    "nanstd": ("std", {"ddof": 0}, False),
    "median": ("median", {}, True),
    "nanmedian": ("median", {}, False),
    "quantile": ("quantile", {}, True),
    "nanquantile": ("quantile", {}, False),
    "percentile": ("quantile", {}, True),
    "nanpercentile": ("quantile", {}, False),
}


class Problems:
    """Every problem found in a zagg file, each as (key path, message)."""

    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append((key, msg))

    def keys(self, d: Any, where: str, allowed: Sequence[str]) -> dict:
        if not isinstance(d, Mapping):
            self.add(where, f"must be a mapping; got {type(d).__name__}")
            return {}
        for k in d:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    f"{where}.{k}" if where else str(k),
                    f"healforge cannot honour this zagg key{hint} (known: {', '.join(allowed)})",
                )
        return dict(d)

    def order(self, v: Any, key: str) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ORDER:
            self.add(key, f"must be an integer order in [0, {MAX_ORDER}]; got {v!r}")
            return None
        return v


def resolve_path(path: str, base: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def cwd_path(path: str | os.PathLike) -> str:
    """A path given on the command line: relative to the working directory (URLs as they are)."""
    path = os.fspath(path)
    return path if "://" in path else os.path.abspath(path)


def function_name(name: Any) -> str | None:
    """zagg's function name normalized (``np.x`` / ``numpy.x`` -> ``x``)."""
    if not isinstance(name, str):
        return None
    for prefix in ("np.", "numpy."):
        if name.startswith(prefix) and "." not in name[len(prefix) :]:
            return name[len(prefix) :]
    return name


def pyramid(e: Problems, raw: Any, parent: int, child: int) -> list[int]:
    """Orders of the product: zagg's leaf overviews plus its fixed ladder above the shard."""
    if raw is False:
        return [child]
    if raw is None or raw is True:
        return list(range(child, parent - 1, -1))  # every order inside the shard
    d = e.keys(raw, "output.pyramid", ("overviews",))
    ov = d.get("overviews")
    if isinstance(ov, int) and not isinstance(ov, bool):
        ov = [ov]
    if (
        not isinstance(ov, list)
        or not ov
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in ov)
    ):
        e.add("output.pyramid.overviews", f"must be an int or a non-empty list of ints; got {ov!r}")
        return [child]
    if any(b >= a for a, b in zip(ov, ov[1:], strict=False)) or not all(parent < r < child for r in ov):
        e.add(
            "output.pyramid.overviews",
            f"must strictly descend, each strictly between parent_order {parent} and child_order {child}; got {ov}",
        )
        return [child]
    d_off = ov[-1] - parent
    ladder = [k + d_off for k in range(parent - 1, -1, -1)]
    return sorted({child, *ov, *ladder}, reverse=True)

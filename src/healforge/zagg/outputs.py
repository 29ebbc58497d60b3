"""What a translated zagg file yields: the healforge pipeline plus the products' own settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Output:
    """One zagg output variable: numpy dtype, fill value and attributes."""

    name: str
    dtype: str
    fill_value: Any
    attrs: dict = field(default_factory=dict)
    nan_guard: tuple[str, str] | None = None  # (valid-count helper, row-count helper)


@dataclass
class ZaggPlan:
    """A translated zagg file."""

    source: str
    pipeline: dict  # healforge pipeline configuration (cell expressions as {"expression": ...})
    outputs: list[Output]
    child_order: int
    parent_order: int
    orders: list[int]
    store: str
    storage_options: dict
    exact: bool
    morton: dict | None  # {"dtype", "fill_value"} of the morton coordinate
    conventions: dict  # recorded in the product metadata

    @property
    def shard_order(self) -> int:
        """Order of the shards of exact mode: every pyramid level is whole inside one shard."""
        return min(self.parent_order, min(self.orders))

"""Where a map product came from, carried from one product to the products made of it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from healforge.maps.parquet import read_map
from healforge.maps.table import map_metadata, with_metadata

#: Product metadata a writer computes from the maps themselves; the rest is provenance.
DERIVED_KEYS = frozenset(
    {"product", "orders", "groups", "variables", "created", "healforge_version", "order", "n_cells"}
)


def source_provenance(path: str | os.PathLike) -> dict[str, Any]:
    """What a map product says about where it came from (inputs, pipeline, zagg configuration,
    ...): a Zarr store's root ``healforge`` attribute, a Parquet map's metadata, without what a
    writer recomputes."""
    path = os.fspath(path)
    meta: dict[str, Any] = {}
    if path.rstrip("/").endswith(".zarr"):
        import zarr

        meta = dict(zarr.open_group(path, mode="r").attrs.get("healforge", {}))
    else:
        meta = map_metadata(read_map(path))
    return {k: v for k, v in meta.items() if k not in DERIVED_KEYS}


def with_provenance(table: pa.Table, provenance: Mapping[str, Any]) -> pa.Table:
    """``table`` with ``provenance`` added to its metadata (its own entries kept)."""
    meta = map_metadata(table)
    return with_metadata(table, {**provenance, **{k: v for k, v in meta.items() if v not in (None, [], {})}})

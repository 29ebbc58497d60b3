"""Nested columns (``list<struct>``, the nested-pandas / lsdb layout): building and merging lists.

Shared by :mod:`nest`, :mod:`increment`, :mod:`compact` and :mod:`delete`. The sort column and
key of each nested column are recorded in ``CATALOG/.healforge/nested.json`` so that later
changes (consolidation) keep the lists in the same order.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.transaction import STATE_DIR
from healforge.io.storage import AnyPath, as_path

STATE_FILE = "nested.json"


def nested_columns(schema: pa.Schema) -> list[str]:
    """Names of the ``list<struct>`` columns of a schema."""
    return [
        f.name
        for f in schema
        if (pa.types.is_list(f.type) or pa.types.is_large_list(f.type))
        and pa.types.is_struct(f.type.value_type)
    ]


def read_state(root: str | AnyPath) -> dict:
    """``{name: {"on": key, "sort_by": column}}`` recorded for a catalog's nested columns."""
    path = as_path(root) / STATE_DIR / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def struct_schema(list_type: pa.DataType) -> pa.Schema:
    """The schema of the items of a ``list<struct>`` type."""
    return pa.schema(list(list_type.value_type))


def explode(lists: pa.ChunkedArray | pa.Array) -> tuple[pa.Table, np.ndarray]:
    """Items of a list column as a table, and the row each item came from."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    items = pc.list_flatten(arr)
    table = pa.Table.from_arrays(items.flatten(), schema=struct_schema(arr.type))
    return table, parents


def build_lists(
    n: int, owner: np.ndarray, items: pa.Table, sort_by: str | None, list_type: pa.DataType
) -> pa.Array:
    """One list per row ``0..n-1`` of the ``items`` whose ``owner`` is that row, sorted by ``sort_by``
    (ties keep the items' order); rows owning nothing get an empty list."""
    owner = np.asarray(owner, dtype=np.int64)
    if sort_by:
        col = items.column(sort_by).combine_chunks()
        sort_keys = pa.table({"o": owner, "k": col, "s": np.arange(len(owner))})
        order = pc.sort_indices(
            sort_keys,
            [("o", "ascending", "at_end"), ("k", "ascending", "at_end"), ("s", "ascending", "at_end")],
        ).to_numpy()
    else:
        order = np.argsort(owner, kind="stable")
    items = items.take(pa.array(order)).combine_chunks() if len(order) else items
    counts = np.bincount(owner, minlength=n) if len(owner) else np.zeros(n, np.int64)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    fields = list(list_type.value_type)
    children = [items.column(f.name).combine_chunks().cast(f.type) for f in fields]
    struct = (
        pa.StructArray.from_arrays(children, fields=fields) if fields else pa.array([], list_type.value_type)
    )
    offset_type = pa.int64() if pa.types.is_large_list(list_type) else pa.int32()
    cls = pa.LargeListArray if pa.types.is_large_list(list_type) else pa.ListArray
    return cls.from_arrays(pa.array(offsets, offset_type), struct, type=list_type)


def empty_lists(n: int, list_type: pa.DataType) -> pa.Array:
    """``n`` empty lists of ``list_type``."""
    return build_lists(n, np.empty(0, np.int64), struct_schema(list_type).empty_table(), None, list_type)


def latest_per_key(keys: list[pa.Array | np.ndarray], rank: np.ndarray) -> np.ndarray:
    """Mask keeping, for each distinct combination of ``keys``, the item with the greatest ``rank``."""
    n = len(rank)
    if n == 0:
        return np.zeros(0, dtype=bool)
    columns = {f"k{i}": k for i, k in enumerate(keys)}
    columns["rank"] = np.asarray(rank)
    table = pa.table(columns)
    order = pc.sort_indices(table, [(c, "ascending") for c in columns]).to_numpy()
    same = np.ones(n - 1, dtype=bool)
    for i in range(len(keys)):
        col = table.column(f"k{i}").take(pa.array(order)).combine_chunks()
        same &= pc.equal(col.slice(1), col.slice(0, n - 1)).fill_null(False).to_numpy(zero_copy_only=False)
    last = np.r_[~same, True]
    keep = np.zeros(n, dtype=bool)
    keep[order[last]] = True
    return keep

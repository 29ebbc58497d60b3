"""Nested columns in nested-pandas' packed layout (``struct`` of ``list`` columns, as lsdb writes them).

A nested column holds, per object row, one list per source field, all of the same length:
``struct<mjd: list<double>, flux: list<float>>``. lsdb 0.11 loads such columns partially
(``columns=["lc.mjd"]``, cone searches). Catalogs written by older healforge versions hold
``list<struct<...>>`` columns: they are read (:func:`explode` takes both) and written back packed
(:func:`pack_table`) by the next change.

Shared by :mod:`nest`, :mod:`increment`, :mod:`compact` and :mod:`delete`. The key and sort
column of each nested column are recorded in ``CATALOG/.healforge/nested.json`` so that later
changes (consolidation) keep the lists in the same order.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change.transaction import STATE_DIR
from healforge.errors import OptionError
from healforge.io.storage import AnyPath, as_path

STATE_FILE = "nested.json"


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def is_packed(t: pa.DataType) -> bool:
    """Whether ``t`` is a nested column type in the packed layout (``struct`` of lists)."""
    return pa.types.is_struct(t) and t.num_fields > 0 and all(_is_list(f.type) for f in t)


def is_legacy(t: pa.DataType) -> bool:
    """Whether ``t`` is a nested column type in the old ``list<struct>`` layout."""
    return _is_list(t) and pa.types.is_struct(t.value_type)


def nested_columns(schema: pa.Schema) -> list[str]:
    """Names of the nested columns of a schema (packed or ``list<struct>``)."""
    return [f.name for f in schema if is_packed(f.type) or is_legacy(f.type)]


def legacy_columns(schema: pa.Schema) -> list[str]:
    """Names of the nested columns still in the ``list<struct>`` layout."""
    return [f.name for f in schema if is_legacy(f.type)]


def split_on(on: str) -> tuple[str, str]:
    """``"OBJ_KEY=SRC_KEY"`` (or one name for both) as ``(object key, source key)``."""
    obj, sep, src = on.partition("=")
    obj, src = obj.strip(), src.strip()
    if not obj or (sep and not src):
        raise OptionError(f"--on expects KEY or OBJ_KEY=SRC_KEY, got {on!r}")
    return obj, src or obj


def read_state(root: str | AnyPath) -> dict:
    """``{name: {"on": key, "sort_by": column, ...}}`` recorded for a catalog's nested columns."""
    path = as_path(root) / STATE_DIR / STATE_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def struct_schema(nested_type: pa.DataType) -> pa.Schema:
    """The schema of the items (sources) of a nested column type, packed or ``list<struct>``."""
    if is_legacy(nested_type):
        return pa.schema(list(nested_type.value_type))
    return pa.schema([pa.field(f.name, f.type.value_type, f.type.value_field.nullable) for f in nested_type])


def packed_type(items: pa.Schema | pa.DataType) -> pa.StructType:
    """The packed nested type of sources with schema ``items`` (or of a nested column type)."""
    if isinstance(items, pa.DataType):
        if is_packed(items):
            return items
        items = struct_schema(items)
    return pa.struct([pa.field(f.name, pa.list_(pa.field("element", f.type, True))) for f in items])


def explode(lists: pa.ChunkedArray | pa.Array) -> tuple[pa.Table, np.ndarray]:
    """Items of a nested column (either layout) as a table, and the row each item came from."""
    arr = lists.combine_chunks() if isinstance(lists, pa.ChunkedArray) else lists
    schema = struct_schema(arr.type)
    if is_legacy(arr.type):
        parents = pc.list_parent_indices(arr).to_numpy(zero_copy_only=False).astype(np.int64)
        return pa.Table.from_arrays(pc.list_flatten(arr).flatten(), schema=schema), parents
    children = arr.flatten()  # accounts for the struct's offset and nulls
    lengths = [pc.fill_null(pc.list_value_length(c), 0) for c in children]
    for f, n in zip(arr.type, lengths[1:], strict=False):
        if not n.equals(lengths[0]):
            raise ValueError(
                f"nested column fields {arr.type.field(0).name!r} and {f.name!r} differ in length"
            )
    parents = pc.list_parent_indices(children[0]).to_numpy(zero_copy_only=False).astype(np.int64)
    return pa.Table.from_arrays([pc.list_flatten(c) for c in children], schema=schema), parents


def build_lists(
    n: int, owner: np.ndarray, items: pa.Table, sort_by: str | None, nested_type: pa.DataType
) -> pa.StructArray:
    """Packed nested column for rows ``0..n-1``: row ``i`` gets the ``items`` whose ``owner`` is ``i``,
    sorted by ``sort_by`` (ties keep the items' order); rows owning nothing get empty lists.

    ``nested_type`` is the column's type, packed or ``list<struct>`` (the result is packed)."""
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
    target = packed_type(nested_type)
    children = []
    for f in target:
        cls, off_type = (
            (pa.LargeListArray, pa.int64()) if pa.types.is_large_list(f.type) else (pa.ListArray, pa.int32())
        )
        values = items.column(f.name).combine_chunks().cast(f.type.value_type)
        children.append(cls.from_arrays(pa.array(offsets, off_type), values, type=f.type))
    return pa.StructArray.from_arrays(children, fields=list(target))


def empty_lists(n: int, nested_type: pa.DataType) -> pa.StructArray:
    """``n`` rows of empty lists of a nested column type (packed)."""
    return build_lists(n, np.empty(0, np.int64), struct_schema(nested_type).empty_table(), None, nested_type)


def pack_table(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """``table`` with its ``list<struct>`` columns rewritten packed, and the names converted."""
    converted = legacy_columns(table.schema)
    for name in converted:
        items, parents = explode(table.column(name))
        lists = build_lists(table.num_rows, parents, items, None, table.schema.field(name).type)
        table = table.set_column(table.schema.get_field_index(name), name, lists)
    return table, converted


def with_conversion_note(text: str, names: list[str]) -> str:
    """``text`` and, when nested columns were converted, the line saying so."""
    return f"{text}\n{conversion_note(names)}" if names else text


def conversion_note(names: list[str]) -> str:
    """The line telling a user that nested columns were converted to the packed layout."""
    return (
        f"note: nested column(s) {', '.join(names)} converted from list<struct> to struct of lists "
        "(the layout lsdb reads and writes)"
    )


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

"""Safe type changes when a batch's schema differs from its catalog's.

A batch column of another type is accepted (``cast="safe"``) when its type can stand for the
catalog's without changing any value: float32 for float64, int32 for int64, large_string for
string, and also a narrowing cast whose values all survive the round trip. Any other difference,
or a value that would change, is an error naming the columns.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from healforge.errors import BadInputError

CAST_MODES = ("safe", "none")


def _family(t: pa.DataType) -> str | None:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return "number"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "binary"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return "list"
    return None


def castable_types(src: pa.DataType, dst: pa.DataType) -> bool:
    """Whether a ``src`` column may be cast to ``dst`` (values still checked one by one)."""
    if src.equals(dst):
        return True
    fam = _family(src)
    if fam is None or fam != _family(dst):
        return False
    if fam == "list":
        return castable_types(src.value_type, dst.value_type)
    if fam == "timestamp":
        return src.tz == dst.tz
    return True


def check_schema(batch: pa.Schema, catalog: pa.Schema, mode: str, path: str) -> None:
    """Refuse a batch schema that cannot be cast to the catalog's (the message lists the columns)."""
    from healforge.catalog.pipeline import schema_diff

    if mode not in CAST_MODES:
        raise ValueError(f"cast must be one of {CAST_MODES}, not {mode!r}")
    if batch.equals(catalog):
        return
    same_columns = batch.names == catalog.names
    if mode == "none" or not same_columns:
        hint = "" if not same_columns else " (pass --cast safe to cast types that keep every value)"
        raise BadInputError(
            f"input does not match the catalog's schema (input vs catalog): {schema_diff(batch, catalog)}{hint}",
            path=path,
        )
    bad = [
        f"{f.name}: {f.type} vs {catalog.field(f.name).type}"
        for f in batch
        if not castable_types(f.type, catalog.field(f.name).type)
    ]
    if bad:
        raise BadInputError(
            f"input columns cannot be cast to the catalog's types (input vs catalog): {'; '.join(bad)}",
            path=path,
        )


def cast_table(table: pa.Table, schema: pa.Schema, path: str = "", first_row: int = 0) -> pa.Table:
    """``table`` cast to ``schema``; an error names the columns whose values would change."""
    if table.schema.equals(schema, check_metadata=False):
        return table
    columns, lossy = [], []
    for name, field in zip(schema.names, schema, strict=True):
        col = table.column(name)
        if col.type.equals(field.type):
            columns.append(col)
            continue
        try:
            out = pc.cast(col, field.type, safe=True)
            back = pc.cast(out, col.type, safe=False)
            same = _same_values(col, back)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            same = False
        if not same:
            lossy.append(f"{name} ({col.type} -> {field.type})")
            continue
        columns.append(out)
    if lossy:
        raise BadInputError(
            f"casting to the catalog's types would change values in column(s) {', '.join(lossy)} "
            f"(rows from {first_row}); fix the input types",
            path=path or None,
        )
    return pa.Table.from_arrays(columns, schema=schema)


def _same_values(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    if a.null_count != b.null_count:
        return False
    if pa.types.is_list(a.type) or pa.types.is_large_list(a.type):
        return a.combine_chunks().equals(b.combine_chunks())
    eq = pc.equal(a, b)
    if pa.types.is_floating(a.type):
        eq = pc.or_kleene(eq, pc.and_(pc.is_nan(a), pc.is_nan(b)))
    eq = pc.fill_null(eq, True)
    return bool(pc.all(eq).as_py() in (True, None))

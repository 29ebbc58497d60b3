"""Safe type changes when a batch's schema differs from its catalog's.

A batch column of another type is accepted (``cast="safe"``) when its type can stand for the
catalog's without changing any value: float32 for float64, int32 for int64, large_string for
string, and also a narrowing cast whose values all survive it (checked value by value by
:func:`healforge.catalog.build.column_types.cast_checked`). Any other difference, or a value that would
change, is an error naming the column.
"""

from __future__ import annotations

import pyarrow as pa

from healforge.errors import BadInputError, OptionError

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
    from healforge.catalog.derived import nested_columns as nst

    if nst.is_packed(dst) and (nst.is_packed(src) or nst.is_legacy(src)):
        # a nested column (either layout) for a nested column: same fields, castable types
        a, b = nst.struct_schema(src), nst.struct_schema(dst)
        return a.names == b.names and all(castable_types(x.type, y.type) for x, y in zip(a, b, strict=True))
    fam = _family(src)
    if fam is None or fam != _family(dst):
        return False
    if fam == "list":
        # values inside lists are cast unchecked for rounding: only widen floats there
        narrowing = (
            pa.types.is_floating(src.value_type)
            and pa.types.is_floating(dst.value_type)
            and src.value_type.bit_width > dst.value_type.bit_width
        )
        return not narrowing and castable_types(src.value_type, dst.value_type)
    if fam == "timestamp":
        return src.tz == dst.tz
    return True


def check_schema(batch: pa.Schema, catalog: pa.Schema, mode: str, path: str) -> None:
    """Refuse a batch schema that cannot be cast to the catalog's (the message lists the columns)."""
    from healforge.catalog.build.stages import schema_diff

    if mode not in CAST_MODES:
        raise OptionError(f"cast must be one of {CAST_MODES}, not {mode!r}")
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

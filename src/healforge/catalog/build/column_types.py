"""Import options about sizes and types: ``--max-bytes``, ``--dtype``/``--schema``, row sizes.

Sizes: ``500MB``, ``1GiB`` or plain bytes. Types: pyarrow aliases (``int32``, ``float64``,
``string``, ``timestamp[ms]``...) or the types of a parquet file's schema. Casts to those types
are checked: a value that would change (overflow, fraction lost, float rounding) is an error
naming the file, column and row.
"""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from healforge.errors import BadInputError, OptionError
from healforge.pixel import SPATIAL_INDEX_COLUMN

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "K": 2**10,
    "M": 2**20,
    "G": 2**30,
    "T": 2**40,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """Bytes of ``500MB`` (10**6), ``1GiB`` (2**30), ``2G`` (2**30) or a plain number."""
    if isinstance(size, int | np.integer):
        value = int(size)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise OptionError(f"cannot read the size {size!r}: use bytes or a unit, e.g. 500MB or 1GiB")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value < 1:
        raise OptionError(f"a size must be at least 1 byte, got {size!r}")
    return value


def parse_type(name: str, column: str | None = None) -> pa.DataType:
    """A pyarrow type from its alias (``int32``, ``float64``, ``string``, ``timestamp[ms]``...)."""
    try:
        return pa.type_for_alias(name.strip())
    except (ValueError, KeyError):
        where = f" for column {column!r}" if column else ""
        raise OptionError(
            f"unknown type {name!r}{where}; use a pyarrow type name such as int32, int64, float32, "
            "float64, bool, string, timestamp[ms]"
        ) from None


def parse_dtypes(items: list[str] | dict | None) -> dict[str, pa.DataType]:
    """``["col=int64", ...]`` or ``{"col": "int64"}`` as ``{column: pyarrow type}``."""
    if not items:
        return {}
    if isinstance(items, dict):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            col, sep, typ = str(item).partition("=")
            if not sep or not col.strip() or not typ.strip():
                raise OptionError(f"--dtype takes COLUMN=TYPE, got {item!r}")
            pairs.append((col.strip(), typ))
    return {c: t if isinstance(t, pa.DataType) else parse_type(str(t), c) for c, t in pairs}


def schema_types(schema: str | pa.Schema) -> dict[str, pa.DataType]:
    """Column types of a parquet file's schema (or of a schema), without ``_healpix_29``."""
    if not isinstance(schema, pa.Schema):
        try:
            schema = pq.read_schema(str(schema))
        except FileNotFoundError:
            raise BadInputError("schema file not found", path=str(schema)) from None
        except (OSError, pa.ArrowException) as exc:
            raise BadInputError(f"cannot read the schema file as parquet: {exc}", path=str(schema)) from exc
    return {f.name: f.type for f in schema if f.name != SPATIAL_INDEX_COLUMN}


def cast_checked(table: pa.Table, schema: pa.Schema, path: str, first_row: int = 0) -> pa.Table:
    """``table`` cast to ``schema`` (same column names); an error names the first changed value."""
    if table.schema.equals(schema):
        return table
    from healforge.catalog.derived import nested_columns as nst

    columns = []
    for field in schema:
        col = table.column(field.name)
        if col.type.equals(field.type):
            columns.append(col)
            continue
        if nst.is_packed(field.type) and (nst.is_packed(col.type) or nst.is_legacy(col.type)):
            # a nested column (list<struct> or packed): its items cast checked, then packed
            items, parents = nst.explode(col)
            items = cast_checked(items, nst.struct_schema(field.type), path)
            columns.append(nst.build_lists(table.num_rows, parents, items, None, field.type))
            continue
        try:
            out = pc.cast(col, field.type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            row, value = _first_failing(col, field.type)
            raise BadInputError(
                f"cannot cast {col.type} to {field.type} without changing values ({exc})",
                path=path,
                column=field.name,
                row=None if row is None else first_row + row,
                value=value,
            ) from None
        if pa.types.is_floating(field.type) and pa.types.is_floating(col.type):
            back = pc.cast(out, col.type)
            same = pc.or_(pc.equal(back, col), pc.and_(pc.is_nan(back), pc.is_nan(col)))
            changed = pc.invert(pc.fill_null(same, True))
            if pc.any(changed).as_py():
                i = int(np.argmax(changed.to_numpy(zero_copy_only=False)))
                raise BadInputError(
                    f"casting {col.type} to {field.type} would round values",
                    path=path,
                    column=field.name,
                    row=first_row + i,
                    value=col[i].as_py(),
                )
        columns.append(out)
    return pa.Table.from_arrays(columns, schema=schema)


def _first_failing(col: pa.ChunkedArray, target: pa.DataType) -> tuple[int | None, object]:
    """Row and value of the first entry of ``col`` that does not cast safely to ``target``."""
    col = col.combine_chunks()
    lo, hi = 0, len(col)
    if hi == 0:
        return None, None
    # bisect on prefixes: the shortest prefix that fails ends at the first failing value
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            pc.cast(col.slice(0, mid), target, safe=True)
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    try:
        pc.cast(col.slice(0, 1), target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return 0, col[0].as_py()
    return lo, col[lo].as_py()


def row_bytes(table: pa.Table) -> np.ndarray:
    """Estimated in-memory bytes of each row, with hats' estimator (hats-import's measure for
    ``byte_pixel_threshold``): fixed-width values their width, strings their length plus an
    offset, lists their elements, validity bitmaps where present."""
    from hats.io.size_estimates import get_mem_size_per_row

    return np.asarray(get_mem_size_per_row(table), dtype=np.float64)

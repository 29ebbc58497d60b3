"""Duplicate values of the declared id column of an import (``--id``, ``--on-duplicate-ids``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from healforge.errors import BadInputError, OptionError
from healforge.io import workfiles

MODES = ("error", "report")
EXAMPLES = 5


@dataclass
class DuplicateIds:
    """Values of ``column`` held by more than one imported row."""

    column: str
    values: int  # distinct values held by several rows
    extra_rows: int  # rows beyond the first of each such value
    examples: list  # up to EXAMPLES (value, rows) pairs, most repeated first

    def __str__(self) -> str:
        shown = ", ".join(f"{v!r} ({n} rows)" for v, n in self.examples)
        return (
            f"id column {self.column!r} is not unique: {self.values} value(s) held by more than one row "
            f"({self.extra_rows} extra row(s)), e.g. {shown}"
        )


def check_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else an :class:`OptionError`."""
    if mode not in MODES:
        raise OptionError(f"on_duplicate_ids must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def find_duplicates(ids: pa.ChunkedArray | pa.Array, column: str) -> DuplicateIds | None:
    """Repeated non-null values of ``ids``, or ``None`` when every value is unique."""
    counts = pc.value_counts(ids.drop_null() if isinstance(ids, pa.ChunkedArray) else pc.drop_null(ids))
    n = counts.field("counts")
    repeated = counts.filter(pc.greater(n, 1))
    if len(repeated) == 0:
        return None
    table = pa.table({"values": repeated.field("values"), "counts": repeated.field("counts")})
    top = table.sort_by([("counts", "descending"), ("values", "ascending")]).slice(0, EXAMPLES)
    examples = list(zip(top["values"].to_pylist(), top["counts"].to_pylist(), strict=True))
    extra = int(pc.sum(table["counts"]).as_py()) - len(table)
    return DuplicateIds(column, len(table), extra, examples)


def shard_ids(shards: list[str | Path], column: str) -> pa.ChunkedArray:
    """The ``column`` of every row of the import's split shards (Arrow IPC files, memory-mapped:
    only that column's buffers are read)."""
    chunks, kind = [], None
    for shard in shards:
        reader = workfiles.open_ipc(shard)
        index = reader.schema.get_field_index(column)
        kind = reader.schema.field(index).type
        chunks += [reader.get_batch(b).column(index) for b in range(reader.num_record_batches)]
    return pa.chunked_array(chunks, type=kind or pa.null())


def check_shards(shards: list[str | Path], column: str, mode: str) -> DuplicateIds | None:
    """Duplicates of ``column`` among the rows about to be written; with ``mode="error"`` they
    stop the import (exit 2) before any data file is written."""
    dup = find_duplicates(shard_ids(shards, column), column)
    if dup is not None and mode == "error":
        raise BadInputError(f"{dup}; pass --on-duplicate-ids report to import them anyway", column=column)
    return dup


__all__ = ["DuplicateIds", "MODES", "check_mode", "check_shards", "find_duplicates", "shard_ids"]

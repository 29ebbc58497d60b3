"""Duplicate values of the declared id column of an import (``--id``, ``--on-duplicate-ids``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change.dedupe import bucket_count, hash_buckets
from healforge.engine import Engine
from healforge.errors import BadInputError, OptionError
from healforge.io import workfiles
from healforge.io.storage import AnyPath

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


def check_shards(
    eng: Engine, shards: list[AnyPath], column: str, mode: str, work: AnyPath, rows: int
) -> DuplicateIds | None:
    """Duplicates of ``column`` among the rows about to be written (the import's split shards),
    found on the workers: the ids shuffled by hash to buckets through ``work``, each bucket's
    repeated values counted alone; the client gets counts and examples only. With
    ``mode="error"`` they stop the import (exit 2) before any data file is written."""
    n = bucket_count(rows, eng.parallelism)
    scattered = eng.map(
        _scatter_ids,
        [(k, s) for k, s in enumerate(shards)],
        "Checking ids",
        small=True,
        column=column,
        work=work,
        buckets=n,
    )
    pieces: dict[int, list[AnyPath]] = {}
    for done in scattered:
        for b, path in done:
            pieces.setdefault(b, []).append(path)
    found = eng.map(_repeated, list(pieces.values()), "Counting ids", small=True)
    values, extra = sum(f["values"] for f in found), sum(f["extra"] for f in found)
    if not values:
        return None
    examples = sorted((e for f in found for e in f["examples"]), key=lambda e: (-e[1], e[0]))[:EXAMPLES]
    dup = DuplicateIds(column, values, extra, examples)
    if mode == "error":
        raise BadInputError(f"{dup}; pass --on-duplicate-ids report to import them anyway", column=column)
    return dup


def _scatter_ids(item: tuple[int, AnyPath], column: str, work: AnyPath, buckets: int) -> list:
    """One shard's ids (nulls left out) written to one piece per hash bucket."""
    k, shard = item
    reader = workfiles.open_ipc(shard)
    index = reader.schema.get_field_index(column)
    chunks = [reader.get_batch(b).column(index) for b in range(reader.num_record_batches)]
    ids = pc.drop_null(pa.chunked_array(chunks, type=reader.schema.field(index).type).combine_chunks())
    bucket = hash_buckets(ids, buckets)
    written = []
    for b in np.unique(bucket).tolist():
        piece = pa.table({"id": ids.filter(pa.array(bucket == b))})
        path = work / "ids" / str(b) / f"{k}.arrow"
        with workfiles.ipc_writer(path, piece.schema) as writer:
            writer.write_table(piece)
        written.append((b, path))
    return written


def _repeated(paths: list[AnyPath]) -> dict:
    """The repeated values of one bucket: how many, the extra rows, the top examples."""
    ids = pa.concat_tables([workfiles.open_ipc(p).read_all() for p in paths])["id"]
    dup = find_duplicates(ids, "id")
    if dup is None:
        return {"values": 0, "extra": 0, "examples": []}
    return {"values": dup.values, "extra": dup.extra_rows, "examples": dup.examples}


__all__ = ["DuplicateIds", "MODES", "check_mode", "check_shards", "find_duplicates"]

"""``import --plan``: what an import will make and cost, before it runs.

Reads the inputs' footers and runs the map pass only (coordinates of every row, the cheapest
pass of an import) to find the exact partitions; nothing is written beside a scratch folder
that is removed. The sizes come from the inputs' own row widths and compression; the time from
the per-row cost of the import stages measured on the project's machine (docs/scaling.md),
scaled by the row width and divided among the workers.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from healforge.catalog.build.arguments import ImportArguments
from healforge.catalog.build.stages import alignment_of, common_schema, map_stage
from healforge.io import storage, workfiles

#: Seconds per row and core of the split pass + reduce for rows of REFERENCE_ROW_BYTES (measured:
#: 5 M rows of 76 bytes on 2 thread workers of a 2-core machine, 2026-12-06, one-pass import).
SECONDS_PER_ROW = 0.8e-6
REFERENCE_ROW_BYTES = 76
#: Imports, starting the workers, binning and finishing.
FIXED_SECONDS = 0.8
#: Memory of a worker beyond its batches: the interpreter, pyarrow, numpy, healforge.
BASE_MEMORY = 300 * 2**20
#: Compressed size / uncompressed size of the output when the inputs do not say (zstd level 3).
DEFAULT_COMPRESSION = 0.7


@dataclass
class ImportEstimate:
    """What :func:`estimate_import` found."""

    rows: int
    bad_rows: int
    partitions: int
    partitions_by_order: dict[int, int]
    largest_partition_rows: int
    row_bytes: float
    output_bytes: int
    scratch_bytes: int
    memory_per_worker_bytes: int
    workers: int
    wall_seconds: float
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as the CLI prints it."""
        gb = 2**30
        orders = ", ".join(f"{n} at order {o}" for o, n in sorted(self.partitions_by_order.items()))
        return [
            f"rows: {self.rows:,} ({self.bad_rows:,} with bad coordinates)",
            f"partitions: {self.partitions:,} ({orders}); largest {self.largest_partition_rows:,} rows",
            f"row width: {self.row_bytes:.0f} bytes in memory",
            f"output: about {self.output_bytes / gb:.3g} GiB",
            f"scratch: about {self.scratch_bytes / gb:.3g} GiB (the split shards, removed at the end)",
            f"peak memory per worker: about {self.memory_per_worker_bytes / gb:.3g} GiB",
            f"wall time on {self.workers} worker(s): about {self.wall_seconds:.3g} s",
            *self.notes,
        ]


def _footers(files: list[str], storage_options) -> tuple[int, int, int] | None:
    """Rows, uncompressed and compressed bytes of Parquet inputs (``None`` for other formats)."""
    rows = raw = packed = 0
    for f in files:
        if not str(f).lower().endswith((".parquet", ".pq")):
            return None
        meta = storage.read_parquet_metadata(storage.as_path(f, storage_options))
        rows += meta.num_rows
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            raw += rg.total_byte_size
            packed += sum(rg.column(c).total_compressed_size for c in range(rg.num_columns))
    return rows, raw, packed


def _row_bytes(schema) -> float:
    """In-memory bytes of a row of ``schema`` (strings counted as 16 bytes)."""
    total = 0.0
    for f in schema:
        try:
            total += f.type.bit_width / 8
        except ValueError:
            total += 16
    return total


def estimate_import(args: ImportArguments, resolve) -> ImportEstimate:
    """The partitions, sizes, memory and time of the import ``args`` describe.

    ``resolve(args, output)`` settles the inputs as the import does (its ``_Plan``)."""
    output = args.run.path(args.output)
    plan = resolve(args, output)
    files = plan.files
    work = storage.as_path(workfiles.scratch_base(output, args.run.tmp_dir, False, args.run.storage_options)
                           or storage.local_scratch()) / f"healforge-plan-{uuid.uuid4().hex[:8]}"  # fmt: skip
    try:
        with args.run.engine_scope() as eng:
            mapped = map_stage(eng, files, plan.spec, args.highest_order, work)
            workers = eng.parallelism
    finally:
        workfiles.remove_dir(work)
    schema = common_schema(files, mapped["schemas"])
    destinations = alignment_of(mapped, args).destinations()
    by_order: dict[int, int] = {}
    for o, _, _ in destinations:
        by_order[o] = by_order.get(o, 0) + 1
    rows = int(mapped["rows"]) - int(mapped["bad"])
    notes = []
    footers = _footers(files, args.run.storage_options)
    if footers and footers[0]:
        row_bytes = footers[1] / footers[0]
        ratio = footers[2] / max(footers[1], 1)
        notes.append("sizes from the Parquet footers of the inputs (their compression ratio)")
    else:
        row_bytes, ratio = _row_bytes(schema), DEFAULT_COMPRESSION
        notes.append(f"sizes from the column types; output compression taken as {DEFAULT_COMPRESSION}")
    width = row_bytes + 8  # and _healpix_29
    largest = max((r for _, _, r in destinations), default=0)
    memory = BASE_MEMORY + 3 * width * max(args.batch_rows, largest)
    seconds = FIXED_SECONDS + rows * SECONDS_PER_ROW * width / REFERENCE_ROW_BYTES / max(workers, 1)
    return ImportEstimate(
        rows=rows,
        bad_rows=int(mapped["bad"]),
        partitions=len(destinations),
        partitions_by_order=by_order,
        largest_partition_rows=int(largest),
        row_bytes=row_bytes,
        output_bytes=int(rows * width * ratio),
        scratch_bytes=int(rows * width),
        memory_per_worker_bytes=int(memory),
        workers=int(workers),
        wall_seconds=seconds,
        notes=notes,
    )


__all__ = ["ImportEstimate", "estimate_import"]

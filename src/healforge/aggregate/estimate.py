"""``aggregate --plan`` and ``run --plan``: the cells, sizes, memory and time of an aggregation
of points, before it runs.

One pass reads the coordinates only and counts the cells at the order (the map pass of the
aggregation, its cheapest part); the rows and their width come from the inputs' footers. Exact
statistics gathered in one process hold every assigned row's cell and values; shuffled ones one
shard's rows per worker; a streaming state holds per cell and column its moments and up to
``2 * delta`` sketch centroids. The time is the measured per-row cost of exact statistics (three
columns, docs/benchmarks.md) spread over the workers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from healforge.aggregate.sources import to_sources
from healforge.pixel import bad_coordinate_mask, lonlat_to_pixel, wrap_lon
from healforge.pixel.alignment import HistogramSum, sparse_histogram

#: Seconds per row, value column and core: read, assign and exact statistics; and the same for
#: a streaming run (sketches, pyramid, Zarr), with the fixed costs of each (2 M rows, 2 workers,
#: 2026-12-06).
SECONDS_PER_ROW = 0.12e-6
FIXED_SECONDS = 1.0
STREAMING_SECONDS_PER_ROW = 0.7e-6
RUN_FIXED_SECONDS = 1.5
BASE_MEMORY = 300 * 2**20
#: A run's process also holds numba's compiled kernels, zarr and xarray.
RUN_BASE_MEMORY = 600 * 2**20
#: Compressed size of a map over 8 bytes a value (zstd on sorted cells and statistics).
OUTPUT_COMPRESSION = 0.5
#: Bytes of one cell and column of a streaming state (moments; centroids counted apart).
STATE_MOMENT_BYTES = 8 * 8


@dataclass
class AggregateEstimate:
    rows: int
    cells: int
    order: int
    variables: int
    output_bytes: int
    memory_bytes: int
    memory_what: str
    workers: int
    wall_seconds: float

    def lines(self) -> list[str]:
        gb = 2**30
        return [
            f"rows: {self.rows:,}; cells at order {self.order}: {self.cells:,}",
            f"output: about {self.output_bytes / gb:.3g} GiB ({self.variables} variable(s))",
            f"peak memory: about {self.memory_bytes / gb:.3g} GiB ({self.memory_what})",
            f"wall time on {self.workers} worker(s): about {self.wall_seconds:.3g} s",
        ]


def estimate_points(
    inputs,
    lon: str,
    lat: str,
    order: int,
    n_values: int,
    n_variables: int,
    *,
    workers: int | None = None,
    mode: str = "gathered",
    delta: float = 200.0,
    storage_options: dict | None = None,
    orders: Sequence[int] | None = None,
) -> AggregateEstimate:
    """The estimate for points at ``order`` with ``n_values`` value columns and ``n_variables``
    output variables at each of ``orders`` (default: ``order``); ``mode``: ``gathered`` (exact,
    one process), ``shuffled`` (exact, by shard) or ``streaming`` (a state)."""
    cells, rows = HistogramSum(order), 0
    for source in to_sources(inputs, storage_options):
        for _, table in source.batches([lon, lat]):
            x = table.column(lon).to_numpy(zero_copy_only=False).astype(np.float64)
            y = table.column(lat).to_numpy(zero_copy_only=False).astype(np.float64)
            ok = ~bad_coordinate_mask(x, y)
            rows += int(table.num_rows)
            cells.add(*sparse_histogram(lonlat_to_pixel(wrap_lon(x[ok]), y[ok], order)))
    ids, counts = cells.result()
    n_cells = int(ids.size)
    workers = workers or min(os.cpu_count() or 1, 4)
    row_bytes = 8 * (1 + n_values)
    cells_out = sum(np.unique(ids >> (2 * (order - k))).size for k in (orders or [order]))
    seconds_per_row, fixed = SECONDS_PER_ROW, FIXED_SECONDS
    if mode == "streaming":
        per_cell = np.minimum(counts, 2 * delta).sum() * 16 + n_cells * STATE_MOMENT_BYTES
        memory, what = RUN_BASE_MEMORY + n_values * per_cell * 3, "the merged state and its merges"
        seconds_per_row, fixed = STREAMING_SECONDS_PER_ROW, RUN_FIXED_SECONDS
    elif mode == "shuffled":
        memory, what = BASE_MEMORY + 3 * row_bytes * rows / max(workers * 8, 1), "one shard per worker"
    else:
        memory, what = BASE_MEMORY + 3 * row_bytes * rows, "every assigned row in this process"
    return AggregateEstimate(
        rows=rows,
        cells=n_cells,
        order=order,
        variables=n_variables,
        output_bytes=int(cells_out * 8 * (1 + n_variables) * OUTPUT_COMPRESSION),
        memory_bytes=int(memory),
        memory_what=what,
        workers=workers,
        wall_seconds=fixed + rows * seconds_per_row * max(n_values, 1) / workers,
    )


def aggregate_plan(args, columns: Sequence[str], stats: Sequence[str], order: int) -> AggregateEstimate:
    """:func:`estimate_points` for the options of ``healforge aggregate``."""
    if args.geometry or args.sidecar:
        from healforge.errors import OptionError

        raise OptionError("--plan estimates point aggregations (give --lon/--lat, no sidecar)")
    mode = "shuffled" if args.shuffle else "gathered"
    return estimate_points(
        args.inputs, args.lon or "lon", args.lat or "lat", order, len(columns), len(columns) * len(stats),
        workers=args.workers, mode=mode,
    )  # fmt: skip

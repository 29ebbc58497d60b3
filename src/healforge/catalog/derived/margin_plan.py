"""``margin --plan``: the size and cost of a margin cache, from the catalog's metadata alone.

The rows of a margin are the rows of each partition that lie within the radius of its boundary
(each goes to the margin of the neighbour across it). The row-count map (``point_map.fits``)
gives the rows of the cells along every partition's boundary at the map's order; the share of
such a cell within the radius of the boundary is the radius over the cell's width. Sizes come
from the catalog's bytes per row (``_metadata``); the time from the measured per-row cost of the
margin tasks (docs/scaling.md), which read every row of the catalog once.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from healforge.catalog.opener import open_path
from healforge.errors import OptionError
from healforge.hats import layout
from healforge.io import storage
from healforge.pixel import border_cells

#: Seconds per catalog row and core of the margin map tasks (1.9 M rows/s/core, docs/scaling.md).
SECONDS_PER_ROW = 1 / 1.9e6
FIXED_SECONDS = 1.0
BASE_MEMORY = 300 * 2**20


@dataclass
class MarginEstimate:
    rows: int
    catalog_rows: int
    output_bytes: int
    memory_per_worker_bytes: int
    workers: int
    wall_seconds: float

    def lines(self) -> list[str]:
        gb = 2**30
        return [
            f"margin rows: about {self.rows:,} (of {self.catalog_rows:,} in the catalog)",
            f"output: about {self.output_bytes / gb:.3g} GiB",
            f"peak memory per worker: about {self.memory_per_worker_bytes / gb:.3g} GiB",
            f"wall time on {self.workers} worker(s): about {self.wall_seconds:.3g} s",
        ]


def estimate_margin(
    catalog: str | os.PathLike, radius_arcsec: float, workers: int | None = None, storage_options=None
) -> MarginEstimate:
    """The rows, size, memory and time of the margin at ``radius_arcsec`` of ``catalog``."""
    opened = open_path(catalog, storage_options)
    if not opened.is_hats:
        raise OptionError(f"{catalog} is not a HATS catalog or collection")
    root = opened.table
    counts = layout.read_histogram(root)
    k = int(round(math.log(len(counts) // 12, 4)))
    width_arcsec = math.degrees(math.sqrt(4 * math.pi / len(counts))) * 3600
    share = min(1.0, radius_arcsec / width_arcsec)
    pixels = layout.read_partition_info(root)
    band = 0.0
    for o, p in pixels:
        if o <= k:  # the partition's boundary cells on the map, each its share within the radius
            band += counts[border_cells(o, p, k)].sum() * share
        else:  # a partition finer than the map: its rows, spread evenly, 4 sides of the band
            width_o = width_arcsec / 2 ** (o - k)
            band += counts[p >> (2 * (o - k))] / 4 ** (o - k) * min(1.0, 4 * radius_arcsec / width_o)
    meta = storage.read_parquet_metadata(layout.metadata_file(root))
    packed = sum(
        meta.row_group(i).column(c).total_compressed_size
        for i in range(meta.num_row_groups)
        for c in range(meta.row_group(i).num_columns)
    )
    raw = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    rows = max(meta.num_rows, 1)
    per_file: dict[str, int] = {}
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        per_file[rg.column(0).file_path] = per_file.get(rg.column(0).file_path, 0) + rg.num_rows
    largest = max(per_file.values(), default=0)
    workers = workers or min(os.cpu_count() or 1, 4)
    return MarginEstimate(
        rows=int(band),
        catalog_rows=int(meta.num_rows),
        output_bytes=int(band * packed / rows),
        memory_per_worker_bytes=int(BASE_MEMORY + 3 * largest * raw / rows),
        workers=workers,
        wall_seconds=FIXED_SECONDS + meta.num_rows * SECONDS_PER_ROW / workers,
    )

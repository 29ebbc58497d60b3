"""Map tables built by the aggregation: the contract lives in :mod:`healforge.maps.table`.

Counts are stored as int64 and every other statistic as float64; the aggregation's metadata
(order, conventions, statistics, columns, ddof, min_count, source, row counts) rides along.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from healforge.maps.parquet import read_map, write_parquet
from healforge.maps.table import make_map_table as _make_map_table
from healforge.maps.table import map_metadata

__all__ = ["make_map_table", "map_metadata", "read_map", "write_map"]


def make_map_table(cell_ids: np.ndarray, columns: dict[str, np.ndarray], meta: dict) -> pa.Table:
    """Build a map table; ``meta`` must carry order, statistics and columns (plus conventions)."""
    for key in ("order", "statistics", "columns"):
        if key not in meta:
            raise ValueError(f"map metadata needs {key!r}")
    typed = {
        name: np.asarray(arr).astype(np.int64 if name.endswith("_count") else np.float64)
        for name, arr in columns.items()
    }
    extra = {k: v for k, v in meta.items() if k not in ("order", "statistics", "columns")}
    return _make_map_table(
        np.asarray(cell_ids, dtype=np.int64),
        typed,
        meta["order"],
        statistics=list(meta["statistics"]),
        source_columns=list(meta["columns"]),
        **extra,
    )


def write_map(table: pa.Table, path: str | os.PathLike, **storage) -> str:
    """Write a map table to Parquet and return the path."""
    write_parquet(table, path, **storage)
    return os.fspath(path)

"""Map tables: ``cell_ids`` plus one column per statistic, with healforge metadata.

Contract: a pyarrow Table whose first column ``cell_ids`` (int64) holds nested cell indices at the
map's order, sorted ascending, non-empty cells only; then one column per output variable named
``{column}_{stat}`` (float64; ``*_count`` int64). Schema metadata key ``b"healforge"`` holds JSON
with at least ``order``, ``indexing_scheme`` ("nested"), ``lon_convention``, ``latitude``,
``statistics``, ``columns`` and ``healforge_version``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge.errors import BadInputError

MAP_KEY = b"healforge"


def make_map_table(cell_ids: np.ndarray, columns: dict[str, np.ndarray], meta: dict) -> pa.Table:
    """Build a map table; ``meta`` must carry order, conventions, statistics and columns."""
    from healforge import __version__

    cell_ids = np.asarray(cell_ids, dtype=np.int64)
    if cell_ids.size > 1 and np.any(np.diff(cell_ids) <= 0):
        raise ValueError("cell_ids must be sorted ascending and unique")
    arrays = {"cell_ids": pa.array(cell_ids, type=pa.int64())}
    for name, arr in columns.items():
        arr = np.asarray(arr)
        if name.endswith("_count"):
            arrays[name] = pa.array(arr.astype(np.int64), type=pa.int64())
        else:
            arrays[name] = pa.array(arr.astype(np.float64), type=pa.float64())
    info = {
        "indexing_scheme": "nested",
        "lon_convention": "0_360",
        "latitude": "spherical",
        **meta,
        "healforge_version": __version__,
    }
    for key in ("order", "statistics", "columns"):
        if key not in info:
            raise ValueError(f"map metadata needs {key!r}")
    return pa.table(arrays).replace_schema_metadata({MAP_KEY: json.dumps(info).encode()})


def map_metadata(table: pa.Table) -> dict:
    """The decoded ``healforge`` metadata of a map table."""
    raw = (table.schema.metadata or {}).get(MAP_KEY)
    if raw is None:
        raise BadInputError("not a healforge map table (no 'healforge' schema metadata)")
    return json.loads(raw)


def write_map(table: pa.Table, path: str | os.PathLike) -> str:
    """Write a map table to Parquet (atomically) and return the path."""
    map_metadata(table)
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def read_map(path: str | os.PathLike) -> pa.Table:
    """Read a map table written by :func:`write_map`."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise BadInputError("map file not found", path=path)
    table = pq.read_table(path)
    try:
        map_metadata(table)
    except BadInputError:
        raise BadInputError("not a healforge map table (no 'healforge' schema metadata)", path=path) from None
    return table

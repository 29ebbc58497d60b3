"""Parquet map files (cells x statistics) and reading a map from any product.

A single order is one Parquet file holding the map table as it is (schema metadata included).
A pyramid written to ``MAP.parquet`` is a directory with one file per order,
``MAP.parquet/order_KK.parquet``.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge.io.storage import remove_dead_siblings
from healforge.maps.table import (
    CELL_IDS,
    MapError,
    as_pyramid,
    group_name,
    map_metadata,
    validate_map_table,
    with_metadata,
)


def _fs(path: str, storage_options: dict[str, Any] | None):
    return fsspec.core.url_to_fs(str(path), **(storage_options or {}))


def _write_table(table: pa.Table, fs, fs_path: str) -> None:
    tmp = f"{fs_path}.tmp-{os.getpid()}"
    _clean_local(fs, fs_path)
    with fs.open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd", row_group_size=1 << 20)
    fs.mv(tmp, fs_path)


def _clean_local(fs, fs_path: str) -> None:
    """Locally, remove the temporaries of ``fs_path`` that a killed writer left."""
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        remove_dead_siblings(Path(fs_path))


def _write_chunks(chunks: Iterable[pa.Table], fs, fs_path: str) -> None:
    tmp = f"{fs_path}.tmp-{os.getpid()}"
    _clean_local(fs, fs_path)
    writer = None
    last = -1
    try:
        with fs.open(tmp, "wb") as f:
            try:
                for chunk in chunks:
                    if writer is None:
                        validate_map_table(chunk)
                        writer = pq.ParquetWriter(f, chunk.schema, compression="zstd")
                    elif chunk.schema.names != writer.schema.names:
                        raise MapError(
                            f"map chunk columns {chunk.schema.names} differ from {writer.schema.names}"
                        )
                    cells = chunk.column(CELL_IDS).to_numpy()
                    if cells.size and (cells[0] <= last or np.any(np.diff(cells) <= 0)):
                        raise MapError(
                            f"cell_ids must increase strictly across chunks (cell {int(cells[0])} follows {last})"
                        )
                    if cells.size:
                        last = int(cells[-1])
                    writer.write_table(chunk.replace_schema_metadata(writer.schema.metadata))
                if writer is None:
                    raise MapError("no map chunks given")
            finally:
                if writer is not None:
                    writer.close()
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise
    fs.mv(tmp, fs_path)


def write_parquet(
    maps: pa.Table | Mapping[int, pa.Table] | Iterable[pa.Table],
    path: str | os.PathLike,
    *,
    storage_options: dict[str, Any] | None = None,
) -> list[str]:
    """Write a map table to a Parquet file, or a pyramid to a directory of ``order_KK.parquet``.

    ``maps`` may also be an iterable of map-table chunks of one order (cells increasing across
    chunks), written one row group after the other without holding the map in memory.
    Returns the paths written.
    """
    fs, fs_path = _fs(str(path), storage_options)
    if not isinstance(maps, pa.Table | Mapping):
        parent = posixpath.dirname(fs_path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        _write_chunks(maps, fs, fs_path)
        return [str(path)]
    if isinstance(maps, pa.Table):
        validate_map_table(maps)
        parent = posixpath.dirname(fs_path)
        if parent:
            fs.makedirs(parent, exist_ok=True)
        _write_table(maps, fs, fs_path)
        return [str(path)]
    pyramid = as_pyramid(maps)
    fs.makedirs(fs_path, exist_ok=True)
    out = []
    for order, table in pyramid.items():
        meta = validate_map_table(table)
        if int(meta["order"]) != order:
            raise MapError(f"map given for order {order} has order {meta['order']} in its metadata")
        target = posixpath.join(fs_path, f"{group_name(order)}.parquet")
        _write_table(table, fs, target)
        out.append(target)
    return out


def parquet_orders(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[int]:
    """Orders in a Parquet map (a file: its order; a directory: one per ``order_KK.parquet``)."""
    fs, fs_path = _fs(str(path), storage_options)
    if fs.isdir(fs_path):
        names = sorted(posixpath.basename(p) for p in fs.ls(fs_path, detail=False))
        orders = [int(n[6:8]) for n in names if n.startswith("order_") and n.endswith(".parquet")]
        if not orders:
            raise MapError(f"no order_KK.parquet files in {path}")
        return orders
    with fs.open(fs_path, "rb") as f:
        return [int(map_metadata(_read_schema(f, path))["order"])]


def _read_schema(f, path) -> pa.Schema:
    try:
        return pq.read_schema(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise MapError(f"cannot read the map {path} as parquet: {exc}") from None


def read_parquet_map(
    path: str | os.PathLike,
    order: int | None = None,
    *,
    variables: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """Read one order of a Parquet map (the finest when ``order`` is omitted) as a map table."""
    fs, fs_path = _fs(str(path), storage_options)
    if not fs.exists(fs_path):
        raise MapError(f"map not found: {path}")
    orders = parquet_orders(path, storage_options)
    if order is None:
        order = orders[-1]
    if int(order) not in orders:
        raise MapError(f"order {order} is not in {path}; it holds orders {orders}")
    target = posixpath.join(fs_path, f"{group_name(order)}.parquet") if fs.isdir(fs_path) else fs_path
    with fs.open(target, "rb") as f:
        schema = _read_schema(f, target)
        columns = None
        if variables is not None:
            missing = [v for v in variables if v not in schema.names]
            if missing:
                raise MapError(f"variable(s) {missing} not in {path}; it has {schema.names[1:]}")
            columns = [CELL_IDS, *variables]
        f.seek(0)
        table = pq.read_table(f, columns=columns)
    table = table.select([n for n in table.schema.names if n != "geometry"])
    return with_metadata(table.replace_schema_metadata(None), map_metadata(schema))


def map_format(path: str | os.PathLike) -> str:
    """``zarr`` or ``parquet``, from the path's suffix (``.geoparquet`` counts as parquet)."""
    name = str(path).rstrip("/").lower()
    if name.endswith(".zarr"):
        return "zarr"
    if name.endswith((".parquet", ".pq", ".geoparquet")):
        return "parquet"
    raise MapError(f"cannot tell the map format of {path}: use a .zarr or .parquet path")


def read_map(
    source: str | os.PathLike | pa.Table | Mapping[int, pa.Table],
    order: int | None = None,
    *,
    variables: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """One order of a map as a map table, from a table, a pyramid dict, or a Zarr/Parquet path."""
    if isinstance(source, pa.Table | Mapping):
        pyramid = as_pyramid(source)
        if order is None:
            order = max(pyramid)
        if int(order) not in pyramid:
            raise MapError(f"order {order} not in the map; it holds orders {sorted(pyramid)}")
        table = pyramid[int(order)]
        if variables is not None:
            table = table.select([CELL_IDS, *variables])
        return table
    if map_format(source) == "zarr":
        from healforge.maps.zarr_store import read_map_table

        return read_map_table(source, order, variables=variables, storage_options=storage_options)
    return read_parquet_map(source, order, variables=variables, storage_options=storage_options)


def read_pyramid(
    source: str | os.PathLike, *, storage_options: dict[str, Any] | None = None
) -> dict[int, pa.Table]:
    """Every order of a Zarr or Parquet map, as ``{order: map table}``."""
    if map_format(source) == "zarr":
        from healforge.maps.zarr_store import map_orders

        orders = map_orders(source, storage_options)
    else:
        orders = parquet_orders(source, storage_options)
    return {k: read_map(source, k, storage_options=storage_options) for k in orders}

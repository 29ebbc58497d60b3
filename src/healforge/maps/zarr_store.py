"""Zarr v3 DGGS map stores: one group per order, readable by xarray and decodable by xdggs.

Layout of a store written by :func:`write_zarr`::

    MAP.zarr/                    root attrs: {"healforge": product metadata (orders, inputs, ...)}
      order_08/                  group attrs: zarr_conventions [dggs], dggs {...}, healforge {...}
        cell_ids   (cells,) int64   attrs: grid_name, level, indexing_scheme [, ellipsoid]
        h_li_mean  (cells,) float64 attrs: coordinates, long_name [, units]
        ...
      order_10/ ...

Groups are named ``order_KK`` (two digits). Arrays are 1-D along the dimension ``cells``, sparse
(only non-empty cells), sorted by ``cell_ids`` and zstd-compressed. Writes stream chunk by chunk, so
a map larger than memory can be written from an iterator of map-table chunks.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from healforge import __version__
from healforge.io.storage import remove_dead_siblings
from healforge.maps.table import (
    CELL_IDS,
    MapError,
    as_pyramid,
    group_name,
    map_metadata,
    validate_map_table,
    variables,
    with_metadata,
)
from healforge.pixel.latitude import WGS84, WGS84_DGGS

DGGS_CONVENTION = {
    "uuid": "7b255807-140c-42ca-97f6-7a1cfecdbc38",
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/dggs/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/dggs/blob/v1/README.md",
    "name": "dggs",
    "description": "Discrete Global Grid Systems convention for zarr",
}
DIMENSION = "cells"
DEFAULT_CHUNK_CELLS = 1 << 18
ZSTD_LEVEL = 3


def coordinate_attrs(order: int, latitude: str = "spherical") -> dict[str, Any]:
    """Attributes of the ``cell_ids`` coordinate (xdggs convention): nothing else is allowed."""
    attrs: dict[str, Any] = {"grid_name": "healpix", "level": int(order), "indexing_scheme": "nested"}
    if latitude == "authalic":
        attrs["ellipsoid"] = dict(WGS84)
    return attrs


def group_attrs(order: int, meta: Mapping[str, Any]) -> dict[str, Any]:
    """Group attributes: the zarr DGGS convention declaration, its ``dggs`` block, our metadata."""
    dggs: dict[str, Any] = {
        "name": "healpix",
        "refinement_level": int(order),
        "indexing_scheme": "nested",
        "spatial_dimension": DIMENSION,
        "coordinate": CELL_IDS,
        "compression": "none",
    }
    if meta.get("latitude") == "authalic":
        dggs["ellipsoid"] = dict(WGS84_DGGS)
    return {"zarr_conventions": [dict(DGGS_CONVENTION)], "dggs": dggs, "healforge": dict(meta)}


def _variable_attrs(name: str, meta: Mapping[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"coordinates": CELL_IDS}
    stats = set(meta.get("statistics") or [])
    column, _, stat = name.rpartition("_")
    if column and stat in stats:
        attrs["long_name"] = f"{stat} of {column}"
        attrs["statistic"] = stat
        attrs["source_column"] = column
    units = (meta.get("units") or {}).get(name)
    if units is None and column:
        units = (meta.get("units") or {}).get(column) if stat not in ("count",) else None
    if units is not None:
        attrs["units"] = units
    return attrs


def _is_local(path: str) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _iter_chunks(source: Any) -> Iterator[pa.Table]:
    if isinstance(source, pa.Table):
        yield source
    elif isinstance(source, pa.RecordBatch):
        yield pa.Table.from_batches([source])
    elif isinstance(source, Iterable):
        for chunk in source:
            yield from _iter_chunks(chunk)
    else:
        raise TypeError(
            f"expected a map table or an iterable of map-table chunks, got {type(source).__name__}"
        )


class _OrderWriter:
    """Appends map-table chunks to one order group, flushing whole Zarr chunks."""

    def __init__(self, root, first: pa.Table, chunk_cells: int, extra_meta: Mapping[str, Any]):
        import zarr

        self.meta = {**validate_map_table(first), **extra_meta}
        self.order = int(self.meta["order"])
        self.schema = first.schema
        self.names = [CELL_IDS, *variables(first)]
        self.meta["variables"] = self.names[1:]
        self.chunk = int(chunk_cells)
        self.group = root.create_group(
            group_name(self.order), attributes=group_attrs(self.order, self.meta), overwrite=True
        )
        self.arrays = {}
        compressors = [zarr.codecs.ZstdCodec(level=ZSTD_LEVEL)]
        for name in self.names:
            dtype = np.dtype(self.schema.field(name).type.to_pandas_dtype())
            if name == CELL_IDS:
                attrs = coordinate_attrs(self.order, self.meta.get("latitude", "spherical"))
            else:
                attrs = {
                    **_variable_attrs(name, self.meta),
                    **(self.meta.get("variable_attrs") or {}).get(name, {}),
                }
            fill = (self.meta.get("fill_values") or {}).get(name, np.nan if dtype.kind == "f" else 0)
            self.arrays[name] = self.group.create_array(
                name,
                shape=(0,),
                chunks=(self.chunk,),
                dtype=dtype,
                compressors=compressors,
                dimension_names=[DIMENSION],
                attributes=attrs,
                fill_value=fill,
            )
        self.buffer: list[dict[str, np.ndarray]] = []
        self.buffered = 0
        self.last_cell = -1
        self.n_cells = 0

    def add(self, table: pa.Table) -> None:
        if table.schema.names != self.schema.names:
            raise MapError(
                f"map chunk columns {table.schema.names} differ from the first chunk's {self.schema.names}"
            )
        # Slice large tables so that only a bounded number of rows is converted at a time.
        for start in range(0, table.num_rows, self.chunk):
            part = table.slice(start, self.chunk)
            cells = part.column(CELL_IDS).to_numpy()
            if cells.size and (cells[0] <= self.last_cell or np.any(np.diff(cells) <= 0)):
                raise MapError(
                    f"cell_ids of order {self.order} must increase strictly across all chunks "
                    f"(cell {int(cells[0])} follows {self.last_cell})"
                )
            if cells.size:
                self.last_cell = int(cells[-1])
            cols = {CELL_IDS: cells}
            for name in self.names[1:]:
                col = part.column(name)
                dtype = np.dtype(col.type.to_pandas_dtype())
                fill = np.nan if dtype.kind == "f" else 0
                if col.null_count and dtype.kind != "f":
                    raise MapError(
                        f"column {name!r} of order {self.order} has nulls (only float columns may be empty)"
                    )
                cols[name] = col.fill_null(fill).to_numpy() if col.null_count else col.to_numpy()
            self.buffer.append(cols)
            self.buffered += cells.size
            if self.buffered >= self.chunk:
                self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.buffered:
            return
        merged = {n: np.concatenate([b[n] for b in self.buffer]) for n in self.names}
        n_out = self.buffered if final else (self.buffered // self.chunk) * self.chunk
        for name in self.names:
            self.arrays[name].append(merged[name][:n_out])
        self.n_cells += n_out
        rest = self.buffered - n_out
        self.buffer = [{n: merged[n][n_out:] for n in self.names}] if rest else []
        self.buffered = rest

    def close(self) -> dict[str, Any]:
        self._flush(final=True)
        meta = {**self.meta, "n_cells": self.n_cells}
        self.group.attrs.update({"healforge": meta})
        return meta


def _write_orders(
    root, pyramid: dict, chunk_cells: int, previous: Mapping[str, Any]
) -> dict[int, dict[str, Any]]:
    written: dict[int, dict[str, Any]] = {}
    for declared, source in pyramid.items():
        chunks = _iter_chunks(source)
        first = next(chunks, None)
        if first is None:
            raise MapError(f"no map table given for order {declared}")
        writer = _OrderWriter(root, first, chunk_cells, {})
        if declared is not None and writer.order != declared:
            raise MapError(f"map given for order {declared} has order {writer.order} in its metadata")
        for key in ("latitude", "lon_convention"):
            if previous.get(key) not in (None, writer.meta.get(key)):
                raise MapError(
                    f"order {writer.order} has {key} {writer.meta.get(key)!r} but the store holds {previous[key]!r}"
                )
        writer.add(first)
        for chunk in chunks:
            if chunk.schema.metadata and int(map_metadata(chunk).get("order", writer.order)) != writer.order:
                raise MapError(f"a chunk of order {writer.order} has order {map_metadata(chunk)['order']}")
            writer.add(chunk)
        written[writer.order] = writer.close()
    return written


def write_zarr(
    maps: pa.Table | Mapping[int, Any] | Iterable[pa.Table],
    path: str | os.PathLike,
    *,
    mode: str = "w",
    chunk_cells: int = DEFAULT_CHUNK_CELLS,
    storage_options: dict[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a map or a pyramid of maps to a Zarr v3 DGGS store.

    Parameters
    ----------
    maps
        One map table, an iterable of map-table chunks of one order (cells increasing across
        chunks; written as they come, so the map need not fit in memory), or a dict
        ``{order: map table | iterable of chunks}``.
    path
        Local path or fsspec URL (``s3://bucket/map.zarr``).
    mode
        ``"w"``: replace the store; ``"a"``: add or replace orders in an existing store.
    chunk_cells
        Cells per Zarr chunk.
    storage_options
        fsspec options for a URL (credentials, ``client_kwargs={"endpoint_url": ...}``).
    metadata
        Extra product metadata (e.g. ``inputs``) stored in the root ``healforge`` attribute.

    Returns
    -------
    dict
        The product metadata written to the root attributes.
    """
    import zarr

    if mode not in ("w", "a"):
        raise ValueError(f"mode must be 'w' or 'a', got {mode!r}")
    if isinstance(maps, pa.Table | Mapping):
        pyramid = as_pyramid(maps)
    else:
        pyramid = {None: maps}
    path = str(path)
    local = _is_local(path)
    if local:
        path = path.removeprefix("file://")
    target = path
    if local and mode == "w":
        target = f"{path.rstrip('/')}.tmp-{os.getpid()}"
        shutil.rmtree(target, ignore_errors=True)
        remove_dead_siblings(Path(path.rstrip("/")))  # stores a killed run left half-written
    open_mode = "w" if (mode == "w" or (local and not os.path.exists(path))) else "a"
    try:
        root = zarr.open_group(
            store=target, mode=open_mode, zarr_format=3, storage_options=None if local else storage_options
        )
        previous = dict(root.attrs.get("healforge", {})) if open_mode == "a" else {}
        written = _write_orders(root, pyramid, chunk_cells, previous)
    except BaseException:
        if target != path:
            shutil.rmtree(target, ignore_errors=True)
        raise
    extra = dict(metadata or {})
    product = previous
    orders = sorted({*map(int, product.get("orders", [])), *written})
    any_meta = next(iter(written.values()))
    product.update(
        {
            "product": "healpix-map",
            "orders": orders,
            "groups": {str(k): group_name(k) for k in orders},
            "indexing_scheme": "nested",
            "lon_convention": any_meta.get("lon_convention"),
            "latitude": any_meta.get("latitude"),
            "statistics": any_meta.get("statistics", []),
            "columns": any_meta.get("columns", []),
            "variables": written[max(written)]["variables"]
            if max(written) == orders[-1]
            else product.get("variables"),
            "inputs": extra.pop("inputs", any_meta.get("inputs", product.get("inputs", []))),
            "healforge_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            **extra,
        }
    )
    root.attrs.update({"healforge": product})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(root.store)
    if target != path:
        if os.path.exists(path):
            shutil.rmtree(path)
        os.replace(target, path)
    return product


def map_to_dataset(table: pa.Table):
    """An in-memory :class:`xarray.Dataset` of a map table, laid out and attributed as in the store."""
    import xarray as xr

    meta = validate_map_table(table)
    order = int(meta["order"])
    names = variables(table)
    meta = {**meta, "variables": names, "n_cells": table.num_rows}
    cells = xr.Variable(
        DIMENSION, table.column(CELL_IDS).to_numpy(), coordinate_attrs(order, meta["latitude"])
    )
    data = {}
    for name in names:
        attrs = {k: v for k, v in _variable_attrs(name, meta).items() if k != "coordinates"}
        data[name] = xr.Variable(DIMENSION, table.column(name).to_numpy(zero_copy_only=False), attrs)
    return xr.Dataset(data, coords={CELL_IDS: cells}, attrs=group_attrs(order, meta))


def _open_root(path: str, storage_options: dict[str, Any] | None):
    import zarr

    path = str(path)
    local = _is_local(path)
    if local and not os.path.isdir(path.removeprefix("file://")):
        raise MapError(f"map store not found: {path}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zarr.open_group(
            store=path, mode="r", zarr_format=3, storage_options=None if local else storage_options
        )


def map_orders(path: str | os.PathLike, storage_options: dict[str, Any] | None = None) -> list[int]:
    """Orders held by a Zarr map store, ascending."""
    root = _open_root(str(path), storage_options)
    orders = root.attrs.get("healforge", {}).get("orders")
    if orders is None:
        orders = [int(k.split("_")[1]) for k in root.group_keys() if k.startswith("order_")]
    if not orders:
        raise MapError(f"no order groups in map store {path}")
    return sorted(int(o) for o in orders)


def _pick_order(path: str, order: int | None, storage_options) -> int:
    orders = map_orders(path, storage_options)
    if order is None:
        return orders[-1]
    if int(order) not in orders:
        raise MapError(f"order {order} is not in map store {path}; it holds orders {orders}")
    return int(order)


def open_map(
    path: str | os.PathLike,
    order: int | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    decode: bool = False,
):
    """Open one order of a Zarr map store as a lazy :class:`xarray.Dataset`.

    Parameters
    ----------
    path
        Store path or URL.
    order
        Order to open; the finest one when omitted.
    storage_options
        fsspec options for a URL.
    decode
        Attach an xdggs index (``xdggs.decode``) to ``cell_ids``.
    """
    import xarray as xr

    path = str(path)
    order = _pick_order(path, order, storage_options)
    kwargs = {} if _is_local(path) else {"storage_options": storage_options}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, group=group_name(order), zarr_format=3, consolidated=None, **kwargs)
    if decode:
        import xdggs

        ds = xdggs.decode(ds)
    return ds


def read_map_table(
    path: str | os.PathLike,
    order: int | None = None,
    *,
    variables: list[str] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> pa.Table:
    """Read one order of a Zarr map store back into a map table (optionally some variables only)."""
    path = str(path)
    order = _pick_order(path, order, storage_options)
    group = _open_root(path, storage_options)[group_name(order)]
    meta = dict(group.attrs.get("healforge", {}))
    names = meta.get("variables") or [k for k in group.array_keys() if k != CELL_IDS]
    if variables is not None:
        missing = [v for v in variables if v not in names]
        if missing:
            raise MapError(f"variable(s) {missing} not in order {order} of {path}; it has {names}")
        names = list(variables)
    data = {CELL_IDS: pa.array(group[CELL_IDS][:])}
    for name in names:
        data[name] = pa.array(group[name][:])
    meta.pop("n_cells", None)
    return with_metadata(pa.table(data), meta)


__all__ = [
    "write_zarr",
    "open_map",
    "read_map_table",
    "map_orders",
    "map_to_dataset",
    "coordinate_attrs",
    "group_attrs",
]

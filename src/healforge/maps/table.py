"""The map table: the in-memory hand-over format between aggregation and map products.

A map table is a :class:`pyarrow.Table` with an int64 ``cell_ids`` column (nested HEALPix cells at
the map's order, sorted ascending, only non-empty cells) followed by one column per output
variable. Its schema metadata key ``b"healforge"`` holds JSON with at least ``order``,
``indexing_scheme`` (``nested``), ``lon_convention``, ``latitude``, ``statistics``, ``columns``
and ``healforge_version``. A multi-order map ("pyramid") is a ``dict`` ``{order: map table}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from healforge import __version__
from healforge.errors import HealforgeError
from healforge.pixel import check_order, order_to_npix
from healforge.pixel.latitude import LATITUDES, LON_CONVENTIONS

METADATA_KEY = b"healforge"
CELL_IDS = "cell_ids"


class MapError(HealforgeError, ValueError):
    """A map table or map product that does not follow the map conventions."""


def map_metadata(table: pa.Table | pa.Schema) -> dict[str, Any]:
    """The decoded ``healforge`` metadata of a map table (or its schema)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise MapError("map table has no 'healforge' schema metadata (order, conventions, ...)")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise MapError(f"map table 'healforge' metadata is not valid JSON: {exc}") from None
    return meta


def variables(table: pa.Table | pa.Schema) -> list[str]:
    """Names of the output variables (all columns but ``cell_ids``)."""
    schema = table if isinstance(table, pa.Schema) else table.schema
    return [n for n in schema.names if n != CELL_IDS]


def validate_map_table(table: pa.Table, *, check_sorted: bool = True) -> dict[str, Any]:
    """Check a map table against the contract and return its metadata.

    Raises
    ------
    MapError
        When ``cell_ids`` is missing, not int64, not strictly increasing or out of range, or the
        metadata lacks a required key or holds an unknown convention.
    """
    meta = map_metadata(table)
    for key in ("order", "indexing_scheme", "lon_convention", "latitude"):
        if key not in meta:
            raise MapError(f"map metadata lacks {key!r}; it has {sorted(meta)}")
    try:
        order = check_order(meta["order"])
    except ValueError as exc:
        raise MapError(str(exc)) from None
    if meta["indexing_scheme"] != "nested":
        raise MapError(f"only the nested indexing scheme is supported, got {meta['indexing_scheme']!r}")
    if meta["lon_convention"] not in LON_CONVENTIONS:
        raise MapError(f"lon_convention must be one of {LON_CONVENTIONS}, got {meta['lon_convention']!r}")
    if meta["latitude"] not in LATITUDES:
        raise MapError(f"latitude must be one of {LATITUDES}, got {meta['latitude']!r}")
    if CELL_IDS not in table.schema.names:
        raise MapError(f"map table has no {CELL_IDS!r} column; columns: {table.schema.names}")
    if table.schema.field(CELL_IDS).type != pa.int64():
        raise MapError(f"{CELL_IDS!r} must be int64, got {table.schema.field(CELL_IDS).type}")
    if check_sorted and table.num_rows:
        cells = table.column(CELL_IDS).to_numpy()
        if table.column(CELL_IDS).null_count:
            raise MapError(f"{CELL_IDS!r} has nulls")
        if np.any(np.diff(cells) <= 0):
            raise MapError(f"{CELL_IDS!r} must be strictly increasing (sorted, no duplicates)")
        if cells[0] < 0 or cells[-1] >= order_to_npix(order):
            raise MapError(f"{CELL_IDS!r} holds cells outside order {order}")
    return meta


def make_map_table(
    cell_ids: np.ndarray,
    columns: Mapping[str, np.ndarray],
    order: int,
    *,
    lon_convention: str = "0_360",
    latitude: str = "spherical",
    statistics: list[str] | None = None,
    source_columns: list[str] | None = None,
    **extra: Any,
) -> pa.Table:
    """Build a map table (sorting by cell) with contract metadata.

    Parameters
    ----------
    cell_ids
        Nested cell indices at ``order`` (unique).
    columns
        Output variables, each aligned with ``cell_ids``.
    order, lon_convention, latitude
        Map conventions.
    statistics, source_columns
        Recorded in the metadata; guessed from ``{column}_{stat}`` names when omitted.
    extra
        Further metadata (e.g. ``inputs``, ``units`` mapping variable -> unit).
    """
    cell_ids = np.asarray(cell_ids, dtype=np.int64)
    sort = np.argsort(cell_ids, kind="stable")
    data = {CELL_IDS: pa.array(cell_ids[sort])}
    for name, values in columns.items():
        data[name] = pa.array(np.asarray(values)[sort])
    if statistics is None:
        statistics = sorted({n.rsplit("_", 1)[-1] for n in columns})
    if source_columns is None:
        source_columns = sorted({n.rsplit("_", 1)[0] for n in columns if "_" in n})
    meta = {
        "order": check_order(order),
        "indexing_scheme": "nested",
        "lon_convention": lon_convention,
        "latitude": latitude,
        "statistics": list(statistics),
        "columns": list(source_columns),
        "healforge_version": __version__,
        **extra,
    }
    table = pa.table(data).replace_schema_metadata({METADATA_KEY: json.dumps(meta).encode()})
    validate_map_table(table)
    return table


def with_metadata(table: pa.Table, meta: Mapping[str, Any]) -> pa.Table:
    """``table`` with its ``healforge`` metadata replaced by ``meta``."""
    other = {k: v for k, v in (table.schema.metadata or {}).items() if k != METADATA_KEY}
    return table.replace_schema_metadata({**other, METADATA_KEY: json.dumps(dict(meta)).encode()})


def as_pyramid(maps: pa.Table | Mapping[int, Any]) -> dict[int, Any]:
    """Normalise one map table or a ``{order: map}`` dict to a dict sorted by order."""
    if isinstance(maps, pa.Table):
        return {int(map_metadata(maps)["order"]): maps}
    if isinstance(maps, Mapping):
        return {int(k): maps[k] for k in sorted(maps)}
    raise TypeError(f"expected a map table or a dict {{order: map table}}, got {type(maps).__name__}")


def group_name(order: int) -> str:
    """Name of the Zarr group / Parquet file of one order: ``order_09``."""
    return f"order_{check_order(order):02d}"

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
from healforge.healpix import check_order, order_to_npix

METADATA_KEY = b"healforge"
CELL_IDS = "cell_ids"
LON_CONVENTIONS = ("0_360", "-180_180")
LATITUDES = ("spherical", "authalic")

# WGS84, used with authalic latitude (xdggs ``ellipsoid`` attribute names).
WGS84 = {"semimajor_axis": 6378137.0, "inverse_flattening": 298.257223563}


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


def output_lon(lon: np.ndarray, lon_convention: str) -> np.ndarray:
    """Longitudes in [0, 360) written out in ``lon_convention``."""
    lon = np.asarray(lon, dtype=np.float64)
    if lon_convention == "-180_180":
        return np.where(lon >= 180.0, lon - 360.0, lon)
    return lon


def _authalic_constants(inverse_flattening: float):
    f = 1.0 / inverse_flattening
    e2 = f * (2 - f)
    e = np.sqrt(e2)
    return e2, e


def _q(sinphi: np.ndarray, e2: float, e: float) -> np.ndarray:
    es = e * sinphi
    return (1 - e2) * (sinphi / (1 - e2 * sinphi**2) - np.log((1 - es) / (1 + es)) / (2 * e))


def geodetic_to_authalic(
    lat: np.ndarray, inverse_flattening: float = WGS84["inverse_flattening"]
) -> np.ndarray:
    """Authalic latitude (degrees) of geodetic latitudes (degrees) on an ellipsoid (WGS84)."""
    e2, e = _authalic_constants(inverse_flattening)
    qp = _q(np.float64(1.0), e2, e)
    ratio = _q(np.sin(np.radians(lat)), e2, e) / qp
    return np.degrees(np.arcsin(np.clip(ratio, -1.0, 1.0)))


def authalic_to_geodetic(
    beta: np.ndarray, inverse_flattening: float = WGS84["inverse_flattening"]
) -> np.ndarray:
    """Geodetic latitude (degrees) of authalic latitudes (degrees); series then Newton steps."""
    e2, e = _authalic_constants(inverse_flattening)
    qp = _q(np.float64(1.0), e2, e)
    b = np.radians(np.asarray(beta, dtype=np.float64))
    phi = (
        b
        + (e2 / 3 + 31 * e2**2 / 180 + 517 * e2**3 / 5040) * np.sin(2 * b)
        + (23 * e2**2 / 360 + 251 * e2**3 / 3780) * np.sin(4 * b)
        + (761 * e2**3 / 45360) * np.sin(6 * b)
    )
    target = qp * np.sin(b)
    for _ in range(2):
        s = np.sin(phi)
        c = np.cos(phi)
        ok = np.abs(c) > 1e-12
        dq = 2 * (1 - e2) * c / (1 - e2 * s**2) ** 2  # dq/dphi
        step = np.where(ok, (_q(s, e2, e) - target) / np.where(ok, dq, 1.0), 0.0)
        phi = phi - step
    return np.degrees(phi)

"""Sidecar tables: which cell(s) each input row belongs to, with weights.

A sidecar has columns ``source_id`` (int64), ``healpix_id`` (int64, nested, at the order in the
metadata) and ``weight`` (float64), rows sorted by ``source_id`` then ``healpix_id``. Schema metadata
key ``healforge_sidecar`` holds JSON: ``order``, ``indexing_scheme``, ``mode``, ``source_id``
(``"row"`` or the id column), ``lon_convention``, ``latitude``, ``inputs``, ``rows_in``,
``rows_rejected``, ``healforge_version``.

Source ids are, unless an id column is given, row positions counted across the inputs in the order
they are given (directories and globs expanded and sorted), starting at 0: stable across runs over
the same inputs.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Sequence

import numpy as np
import pyarrow as pa

from healforge.aggregate.assign import Spec
from healforge.aggregate.coords import (
    ON_BAD_ROWS,
    Rejects,
    check_choice,
    quarantine_path,
)
from healforge.aggregate.sources import Source, default_position, to_sources
from healforge.engine import Engine
from healforge.errors import BadInputError, OptionError
from healforge.io.readers import DEFAULT_BATCH_ROWS
from healforge.io.storage import as_path, read_parquet_table, write_parquet_table
from healforge.pixel import check_order
from healforge.pixel.latitude import LATITUDES, LON_CONVENTIONS

SIDECAR_KEY = b"healforge_sidecar"


def _version() -> str:
    from healforge import __version__

    return __version__


def _id_values(table: pa.Table, id_column: str, path: str | None) -> np.ndarray:
    arr = table.column(id_column)
    if not pa.types.is_integer(arr.type):
        raise BadInputError(
            f"id column {id_column!r} must be integer, found {arr.type}", path=path, column=id_column
        )
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise BadInputError("null id", path=path, column=id_column, row=row, value=None)
    return arr.to_numpy().astype(np.int64)


def _sidecar_task(
    source: Source, plan, orders: list[int], id_column: str | None, batch_rows: int
) -> tuple[dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]], int, Rejects]:
    from healforge.aggregate.core import Counts, batches

    counts, rejects = Counts(), Rejects()
    parts: dict[int, list] = {o: [] for o in orders}
    extra = [id_column] if id_column else []
    for b in batches(source, plan, batch_rows, counts, rejects, orders=orders, extra_columns=extra):
        ids = _id_values(b.table, id_column, source.label) if id_column else None
        for o in orders:
            a = b.by_order[o]
            sid = ids[a.row] if ids is not None else a.row.astype(np.int64) + b.first
            parts[o].append((sid, a.cell, a.weight))
    out = {}
    for o in orders:
        if parts[o]:
            out[o] = tuple(np.concatenate(x) for x in zip(*parts[o], strict=True))
        else:
            out[o] = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
    return out, counts.rows_read, rejects


def sidecar(
    inputs,
    order: int | Sequence[int],
    *,
    lon: str | None = None,
    lat: str | None = None,
    geometry: str | None = None,
    mode: str = "strict",
    id_column: str | None = None,
    output: str | os.PathLike | None = None,
    lon_convention: str = "0_360",
    latitude: str = "spherical",
    on_bad_rows: str = "error",
    quarantine: str | os.PathLike | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    engine: Engine | None = None,
    storage_options: dict | None = None,
) -> pa.Table | dict[int, pa.Table]:
    """Assign every input row (point or footprint) to HEALPix cells.

    Parameters
    ----------
    inputs
        File path(s), directories, globs, HATS catalog directories (one task per partition; lon/lat
        default to ``hats_col_ra``/``hats_col_dec``), or a pyarrow Table / pandas or geopandas
        DataFrame.
    order
        One order, or several (one pass over the data computes them all).
    lon, lat
        Point coordinate columns (degrees; longitudes in [-180, 360]).
    geometry
        Footprint column (WKB or WKT polygons; GeoDataFrame geometry) instead of lon/lat.
    mode
        Footprints: ``strict`` / ``center`` (centroid cell, weight 1) or ``fuzzy`` / ``overlap``
        (every overlapped cell, weight = area fraction, summing to 1 per footprint).
    id_column
        Integer column used as ``source_id``; default: row position across the inputs.
    output
        Parquet file to write (several orders: a directory with ``order=K.parquet`` files).
    lon_convention, latitude
        Conventions recorded in the metadata; ``latitude="authalic"`` converts geodetic WGS84
        latitudes to authalic before indexing.
    on_bad_rows
        ``error`` (default) or ``quarantine``: bad rows are written to ``quarantine`` (default
        ``<output>.rejected.parquet``) and counted in the metadata.
    engine
        :class:`~healforge.engine.Engine` to run on (default: synchronous, quiet).
    storage_options
        fsspec options for URL inputs and output (credentials, endpoint).

    Returns
    -------
    pyarrow.Table or dict
        The sidecar table, or ``{order: table}`` when several orders were asked for.
    """
    check_choice("lon_convention", lon_convention, LON_CONVENTIONS)
    check_choice("latitude", latitude, LATITUDES)
    check_choice("on_bad_rows", on_bad_rows, ON_BAD_ROWS)
    orders = [check_order(o) for o in ([order] if np.ndim(order) == 0 else list(order))]
    from healforge.aggregate.core import run_sources
    from healforge.aggregate.plan import Assignment, Plan

    lon, lat = default_position(inputs, lon, lat, geometry, storage_options)
    spec = Spec(lon=lon, lat=lat, geometry=geometry, mode=mode, latitude=latitude, on_bad_rows=on_bad_rows)
    qpath = quarantine_target(on_bad_rows, quarantine, output)
    sources = to_sources(inputs, storage_options)
    assignment = Assignment(max(orders), lon, lat, geometry, mode, lon_convention, latitude, on_bad_rows)
    plan = Plan(tuple(sources), assignment, ())
    engine = engine or Engine(synchronous=True, quiet=True)
    results = run_sources(
        engine,
        _sidecar_task,
        sources,
        "sidecar",
        plan=plan,
        orders=orders,
        id_column=id_column,
        batch_rows=batch_rows,
    )
    rows_in = sum(r[1] for r in results)
    rejects = gather_rejects((r[2] for r in results), qpath, engine.quiet)
    tables = {}
    offset = 0
    offsets = []
    for r in results:
        offsets.append(offset)
        offset += r[1]
    for o in orders:
        sid = np.concatenate(
            [r[0][o][0] + (0 if id_column else off) for r, off in zip(results, offsets, strict=True)]
        )
        cell = np.concatenate([r[0][o][1] for r in results])
        w = np.concatenate([r[0][o][2] for r in results])
        if not _sorted_pairs(sid, cell):
            srt = np.lexsort((cell, sid))
            sid, cell, w = sid[srt], cell[srt], w[srt]
        meta = {
            "order": o,
            "indexing_scheme": "nested",
            "mode": spec.mode if geometry else "point",
            "source_id": id_column or "row",
            "lon_convention": lon_convention,
            "latitude": latitude,
            "inputs": [s.label for s in sources],
            "rows_in": rows_in,
            "rows_rejected": rejects.count,
            "healforge_version": _version(),
        }
        table = pa.table(
            {
                "source_id": pa.array(sid, type=pa.int64()),
                "healpix_id": pa.array(cell, type=pa.int64()),
                "weight": pa.array(w, type=pa.float64()),
            }
        ).replace_schema_metadata({SIDECAR_KEY: json.dumps(meta).encode()})
        tables[o] = table
    if output is not None:
        write_sidecar(tables, output, storage_options)
    return tables[orders[0]] if np.ndim(order) == 0 else tables


def _sorted_pairs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether the pairs ``(a[i], b[i])`` are in strictly increasing order."""
    da, db = np.diff(a), np.diff(b)
    return bool(np.all((da > 0) | ((da == 0) & (db > 0))))


def gather_rejects(parts: Iterable[Rejects], qpath: str | None, quiet: bool) -> Rejects:
    """All tasks' rejected rows in one :class:`~healforge.aggregate.coords.Rejects`, written to the
    quarantine file ``qpath`` when there is one (see :func:`report_quarantine`)."""
    rejects = Rejects()
    for part in parts:
        rejects.extend(part)
    report_quarantine(rejects, qpath, quiet)
    return rejects


def quarantine_target(on_bad_rows, quarantine, output) -> str | None:
    if on_bad_rows != "quarantine":
        return None
    if quarantine is not None:
        return os.fspath(quarantine)
    if output is None:
        raise OptionError("on_bad_rows='quarantine' needs an output path or a quarantine path")
    return quarantine_path(output)


def report_quarantine(rejects: Rejects, qpath: str | None, quiet: bool) -> None:
    if qpath is None:
        return
    rejects.write(qpath)
    if rejects.count and not quiet:
        print(f"healforge: {rejects.count} bad row(s) quarantined to {qpath}", file=sys.stderr)


def write_sidecar(
    tables: pa.Table | dict[int, pa.Table],
    output: str | os.PathLike,
    storage_options: dict | None = None,
) -> None:
    """Write one sidecar table to ``output`` (local path or URL), or several (by order) as
    ``output/order=K.parquet``; each file appears whole or not at all."""
    target = as_path(output, storage_options)
    if isinstance(tables, pa.Table):
        tables = {sidecar_order(tables): tables}
    if len(tables) == 1:
        items = [(target, next(iter(tables.values())))]
    else:
        items = [(target / f"order={o}.parquet", t) for o, t in tables.items()]
    for path, table in items:
        write_parquet_table(table, path, compression="zstd")


def sidecar_order(table: pa.Table) -> int:
    return int(sidecar_metadata(table)["order"])


def sidecar_metadata(table: pa.Table, path: str | None = None) -> dict:
    raw = (table.schema.metadata or {}).get(SIDECAR_KEY)
    if raw is None:
        raise BadInputError("not a healforge sidecar (no 'healforge_sidecar' metadata)", path=path)
    return json.loads(raw)


def as_sidecar(table: pa.Table, order: int | None, path: str | None = None) -> pa.Table:
    """A sidecar table: healforge's own as it is; another tool's (healpyxel's: ``source_id``,
    ``healpix_id`` at ``order``, nested, optional ``weight``; no metadata) checked and given
    healforge's metadata, with source ids taken as row positions of the inputs."""
    if SIDECAR_KEY in (table.schema.metadata or {}):
        return table
    if order is None:
        raise OptionError(
            f"{path or 'the sidecar'} has no healforge metadata: give its order (--order or --nside) "
            "to read it as a plain sidecar (source_id, healpix_id nested at that order, weight)"
        )
    order = check_order(order)
    columns = {"source_id": None, "healpix_id": None}
    for name in columns:
        if name not in table.column_names:
            raise BadInputError(
                f"a sidecar needs columns source_id, healpix_id (and optionally weight); found "
                f"{', '.join(table.column_names)}",
                path=path,
                column=name,
            )
        columns[name] = _id_values(table, name, path)
    cells = columns["healpix_id"]
    bad = (cells < 0) | (cells >= 12 * 4**order)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise BadInputError(
            f"healpix_id out of range for order {order} (0 to {12 * 4**order - 1}): is the order right?",
            path=path,
            column="healpix_id",
            row=i,
            value=int(cells[i]),
        )
    if "weight" in table.column_names:
        weight = table.column("weight").cast(pa.float64()).to_numpy(zero_copy_only=False)
        bad = ~np.isfinite(weight) | (weight < 0)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise BadInputError(
                "sidecar weights must be finite and >= 0",
                path=path,
                column="weight",
                row=i,
                value=float(weight[i]),
            )
    else:
        weight = np.ones(cells.size)
    sid = columns["source_id"]
    meta = {
        "order": order,
        "indexing_scheme": "nested",
        "mode": "fuzzy" if np.unique(sid).size < sid.size else "point",
        "source_id": "row",
        "lon_convention": "0_360",
        "latitude": "spherical",
        "inputs": [],
        "rows_in": None,
        "rows_rejected": 0,
        "foreign": path or "table",
    }
    return pa.table(
        {
            "source_id": pa.array(sid, pa.int64()),
            "healpix_id": pa.array(cells, pa.int64()),
            "weight": pa.array(weight, pa.float64()),
        }
    ).replace_schema_metadata({SIDECAR_KEY: json.dumps(meta).encode()})


def read_sidecar(
    path: str | os.PathLike, order: int | None = None, storage_options: dict | None = None
) -> pa.Table:
    """Read a sidecar file, local or URL (or, from a multi-order directory, the one at ``order``);
    a file of another tool without healforge's metadata is read at ``order`` (:func:`as_sidecar`)."""
    target = as_path(path, storage_options)
    if target.is_dir():
        if order is None:
            raise OptionError(f"{path} holds sidecars at several orders; give the order")
        target = target / f"order={order}.parquet"
    if not target.is_file():
        raise BadInputError("sidecar file not found", path=str(target))
    try:
        table = read_parquet_table(target)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BadInputError(f"cannot read sidecar file: {exc}", path=str(target)) from None
    return as_sidecar(table, order, str(target))

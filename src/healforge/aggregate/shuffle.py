"""Exact statistics at scale: rows shuffled by shard, one shard per task.

Exact statistics (medians, quantiles, user functions) need every value of a cell at once. The
in-memory path (:func:`healforge.aggregate.api.aggregate`) holds every row; this executor holds
one shard (a HEALPix pixel at ``shard_order``) at a time, so that data larger than memory can be
aggregated exactly:

1. **scatter** (one task per source): the source's batches are filtered and assigned to cells by
   the one batch loop of the core (:func:`healforge.aggregate.core.batches`), the values of the
   plan's state columns and their weights evaluated, and the rows written, grouped by shard, to
   Arrow IPC files ``pieces/{source}-{part}.arrow`` of the work directory, one record batch per
   shard (at most about ``batch_rows`` rows are held before a part is written). A marker
   ``scattered/{source}.json`` with the source's counts and where each shard's rows are,
   written last, says the source is done;
2. **statistics** (one task per shard, so memory is bounded by the largest shard): the shard's
   record batches read in source order, so that every cell sees its rows in the order of the in-memory
   path, and the plan's statistics computed with :func:`healforge.aggregate.core.exact_statistics`
   at every requested order (all at or finer than the shard order, so each cell lies in one
   shard): the results equal the in-memory aggregation number for number;
3. **gather**: per-order results concatenated in shard order (cells stay sorted).

The work directory (any storage path, see :mod:`healforge.io.storage`) makes a killed run
resumable: sources whose marker exists are not read again. It is claimed by a stamp of the plan,
the orders and the shard order (``plan.json``); a work directory of another plan is emptied
first. It is removed after a successful run unless ``keep_work`` is set.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge.aggregate.coords import Rejects
from healforge.aggregate.core import Counts, batches, column_values, exact_statistics
from healforge.aggregate.plan import Plan
from healforge.aggregate.sources import Source
from healforge.engine import Engine
from healforge.errors import OptionError
from healforge.io import storage, workfiles
from healforge.io.readers import DEFAULT_BATCH_ROWS
from healforge.io.storage import AnyPath
from healforge.pixel import to_parent

DEFAULT_SHARD_ORDER = 3
CELL = "_cell"
PLAN_FILE = "plan.json"


@dataclass
class ShuffleResult:
    """What a shuffled run computed: ``maps[order] = (cell_ids, {variable: values})``, the rows
    counted over every source and the rows rejected as bad input."""

    maps: dict[int, tuple[np.ndarray, dict[str, np.ndarray]]]
    counts: Counts
    rejects: Rejects = field(default_factory=Rejects)
    shard_order: int = DEFAULT_SHARD_ORDER
    shards: int = 0


def _weight_keys(plan: Plan) -> list[str | None]:
    """The distinct weights of the plan's state columns (``None``: unit or area weights)."""
    keys = [c.weight.source if c.weight is not None else None for c in plan.state_columns]
    return list(dict.fromkeys(keys))


def check_orders(plan: Plan, orders: Sequence[int], shard_order: int | None) -> tuple[list[int], int]:
    """The requested orders (finest first) and the shard order; refuses orders finer than the
    assignment or coarser than the shards (a cell must lie in one shard)."""
    if plan.assignment is None:
        raise OptionError("shuffled exact statistics need an assignment (lon/lat or geometry), not a sidecar")
    finest = plan.assignment.order
    orders = sorted({int(k) for k in orders} or {finest}, reverse=True)
    if orders[0] > finest:
        raise OptionError(f"order {orders[0]} is finer than the assignment order {finest}")
    if shard_order is None:
        shard_order = min(DEFAULT_SHARD_ORDER, orders[-1])
    if not 0 <= shard_order <= orders[-1]:
        raise OptionError(
            f"shard order {shard_order} must be in [0, {orders[-1]}] (no coarser than the coarsest order)"
        )
    return orders, int(shard_order)


def _claim(work: AnyPath, stamp: str) -> None:
    """Keep a work directory made for the same stamp (resume); start afresh otherwise."""
    marker = work / PLAN_FILE
    if marker.exists() and marker.read_text() != stamp:
        storage.rmtree(work)
    if not marker.exists():
        storage.atomic_write_text(marker, stamp)


def _stamp(plan: Plan, orders: list[int], shard_order: int, batch_rows: int) -> str:
    return json.dumps(
        {
            **plan.describe(),
            "sources": [  # how each is read (storage options left out: no credentials on disk)
                [s.label, s.path, s.format, s.columns, list(s.groups), s.options] for s in plan.sources
            ],
            "statistics": [repr(s) for s in plan.statistics],
            "cells": [repr(c) for c in plan.cell_statistics],
            "orders": orders,
            "shard_order": shard_order,
            "batch_rows": batch_rows,
        },
        sort_keys=True,
        default=str,
    )


def _write_table(table: pa.Table, path: AnyPath) -> None:
    with storage.atomic_output(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _write_batches(batches_: list[pa.RecordBatch], path: AnyPath) -> None:
    """Record batches as one Arrow IPC file (compressed), atomically, local or URL."""
    options = pa.ipc.IpcWriteOptions(compression="lz4")
    with workfiles.ipc_writer(path, batches_[0].schema, options) as w:
        for batch in batches_:
            w.write_batch(batch)


def _read_batch(path: AnyPath, index: int) -> pa.RecordBatch:
    """Record batch ``index`` of an Arrow IPC file (memory-mapped locally; ranged reads remotely)."""
    return workfiles.open_ipc(path).get_batch(index)


def scatter_source(
    item: tuple[int, Source], plan: Plan, work: AnyPath, shard_order: int, batch_rows: int
) -> dict:
    """Scatter stage: one source's assigned rows as Arrow files of one record batch per shard (see
    the module doc); returns the marker written last: counts, and per shard its rows and
    ``[file, batch]`` places."""
    index, source = item
    counts, rejects = Counts(), Rejects()
    shift = 2 * (plan.assignment.order - shard_order)
    wkeys = _weight_keys(plan)
    pending: dict[int, list[pa.Table]] = {}
    held, rows, places, files = 0, {}, {}, []

    def flush() -> None:
        if not pending:
            return
        name = f"{index:06d}-{len(files):04d}.arrow"
        files.append(name)
        out = []
        for shard in sorted(pending):
            table = pa.concat_tables(pending[shard]).combine_chunks()
            places.setdefault(shard, []).append([name, len(out)])
            out.append(pa.record_batch([c.chunk(0) for c in table.columns], names=table.column_names))
        _write_batches(out, work / "pieces" / name)
        pending.clear()

    for b in batches(source, plan, batch_rows, counts, rejects):
        by_weight, weights = column_values(b, plan.state_columns)
        cols = {CELL: np.asarray(b.cell, np.int64)}
        for vals in by_weight.values():
            cols.update({f"v{plan.keys.index(k)}": v for k, v in vals.items()})
        for j, wkey in enumerate(wkeys):
            if weights.get(wkey) is not None:
                cols[f"w{j}"] = weights[wkey]
        shards = cols[CELL] >> shift
        order = np.argsort(shards, kind="stable")
        table = pa.table(cols).take(pa.array(order))
        shards = shards[order]
        bounds = np.flatnonzero(np.diff(shards)) + 1
        for start, stop in zip(np.r_[0, bounds], np.r_[bounds, shards.size], strict=True):
            if stop > start:
                shard = int(shards[start])
                pending.setdefault(shard, []).append(table.slice(start, stop - start))
                rows[shard] = rows.get(shard, 0) + int(stop - start)
        held += table.num_rows
        if held >= batch_rows:
            flush()
            held = 0
    flush()
    counts.rows_rejected = rejects.count
    if rejects.tables:
        _write_table(
            pa.concat_tables(rejects.tables, promote_options="permissive"),
            work / "scattered" / f"{index:06d}.rejects.parquet",
        )
    marker = {
        "counts": counts.as_dict(),
        "rows": {str(k): v for k, v in rows.items()},
        "places": {str(k): v for k, v in places.items()},
        "rejects": bool(rejects.tables),
    }
    storage.atomic_write_text(work / "scattered" / f"{index:06d}.json", json.dumps(marker))
    return marker


def exact_columns(
    cells: np.ndarray,
    values: dict[str, np.ndarray],
    weights: dict[str | None, np.ndarray],
    plan: Plan,
    order: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """:func:`~healforge.aggregate.core.exact_statistics` of a plan whose state columns may carry
    different weights: one call per weight, the cell expressions with the first."""
    wkey = {c.key: (c.weight.source if c.weight is not None else None) for c in plan.state_columns}
    groups: dict[str | None, list] = {}
    for s in plan.statistics:
        groups.setdefault(wkey[s.column], []).append(s)
    if not groups:
        groups[next(iter(weights), None)] = []
    out: dict[str, np.ndarray] = {}
    cell_ids = None
    for i, (w, stats) in enumerate(groups.items()):
        sub = replace(plan, statistics=tuple(stats), cell_statistics=plan.cell_statistics if i == 0 else ())
        cell_ids, cols = exact_statistics(cells, values, weights.get(w, np.ones(cells.size)), sub, order)
        out.update(cols)
    return cell_ids, {name: out[name] for name in plan.variables}


def _read_shard(work: AnyPath, places: list, plan: Plan) -> tuple[np.ndarray, dict, dict]:
    """Cells, values by state column and weights by weight key of every row of one shard, from
    its ``[file, batch]`` places in source order."""
    parts = [_read_batch(work / "pieces" / name, i) for name, i in places]
    return _columns(pa.Table.from_batches(parts) if parts else None, plan)


def _columns(table: pa.Table | None, plan: Plan) -> tuple[np.ndarray, dict, dict]:
    def col(name: str) -> np.ndarray:
        return table.column(name).to_numpy() if table is not None else np.empty(0)

    cells = col(CELL).astype(np.int64)
    values = {k: col(f"v{j}") for j, k in enumerate(plan.keys)}
    weights = {}
    for j, wkey in enumerate(_weight_keys(plan)):
        present = table is not None and f"w{j}" in table.column_names
        weights[wkey] = col(f"w{j}") if present else np.ones(cells.size)
    return cells, values, weights


def shard_statistics(places: list, work: AnyPath, plan: Plan, orders: Sequence[int]) -> dict[int, tuple]:
    """Statistics stage: exact statistics of every cell of one shard (its rows at ``places``) at
    every order."""
    cells, values, weights = _read_shard(work, places, plan)
    finest = plan.assignment.order
    return {k: exact_columns(to_parent(cells, finest, k), values, weights, plan, k) for k in orders}


def shuffle_statistics(
    engine: Engine,
    plan: Plan,
    orders: Sequence[int],
    work_dir: str | AnyPath,
    *,
    shard_order: int | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    storage_options: dict | None = None,
    keep_work: bool = False,
) -> ShuffleResult:
    """Exact statistics of a plan at ``orders``, rows shuffled by shard (see the module doc).

    Parameters
    ----------
    engine
        Where the scatter and statistics tasks run.
    plan
        The aggregation (with an assignment); its statistics may be any, user functions included.
    orders
        Orders to compute, each at most the assignment order (empty: the assignment order).
    work_dir
        Scratch directory (local path or URL, with ``storage_options``): reused by a rerun of
        the same plan, removed at the end unless ``keep_work``.
    shard_order
        Order of the shards (default: 3, or the coarsest requested order if coarser).

    Returns
    -------
    ShuffleResult
    """
    orders, shard_order = check_orders(plan, orders, shard_order)
    work = storage.as_path(work_dir, storage_options)
    _claim(work, _stamp(plan, orders, shard_order, batch_rows))
    items = list(enumerate(plan.sources))
    todo = [it for it in items if not (work / "scattered" / f"{it[0]:06d}.json").exists()]
    engine.map(
        scatter_source,
        todo,
        "scatter",
        labels=[s.label for _, s in todo],
        plan=plan,
        work=work,
        shard_order=shard_order,
        batch_rows=batch_rows,
    )
    markers = [json.loads((work / "scattered" / f"{i:06d}.json").read_text()) for i, _ in items]
    counts, rejects = Counts(), Rejects()
    for i, m in enumerate(markers):
        for k, v in m["counts"].items():
            setattr(counts, k, getattr(counts, k) + v)
        if m["rejects"]:
            rejects.tables.append(storage.read_parquet_table(work / "scattered" / f"{i:06d}.rejects.parquet"))
    shards = sorted({int(s) for m in markers for s in m["rows"]})
    places = [[p for m in markers for p in m["places"].get(str(s), [])] for s in shards]
    pieces = engine.map(
        shard_statistics,
        places,
        "statistics",
        labels=[f"shard {s}" for s in shards],
        work=work,
        plan=plan,
        orders=orders,
    )
    maps = {}
    for k in orders:
        if not pieces:
            maps[k] = exact_columns(*_columns(None, plan), plan, k)
            continue
        ids = np.concatenate([p[k][0] for p in pieces])
        maps[k] = (ids, {n: np.concatenate([p[k][1][n] for p in pieces]) for n in plan.variables})
    if not keep_work:
        storage.rmtree(work)
    return ShuffleResult(maps, counts, rejects, shard_order, len(shards))


__all__ = ["DEFAULT_SHARD_ORDER", "ShuffleResult", "exact_columns", "shuffle_statistics"]

"""Public entry points: exact aggregation, streaming accumulation, merging and finalizing states."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from healforge.aggregate.assign import Spec, assign_batch
from healforge.aggregate.coords import (
    LATITUDES,
    LON_CONVENTIONS,
    ON_BAD_ROWS,
    Rejects,
    check_choice,
    value_column,
)
from healforge.aggregate.finalize import DEFAULT_STATE_STATS, finalize_state
from healforge.aggregate.maptable import make_map_table, write_map
from healforge.aggregate.sidecar import (
    _quarantine_target,
    gather_rejects,
    map_sources,
    position_spec,
    read_sidecar,
    sidecar_metadata,
)
from healforge.aggregate.sketch import DEFAULT_DELTA
from healforge.aggregate.sources import Source, to_sources
from healforge.aggregate.state import State
from healforge.aggregate.state import merge_states as _merge_states
from healforge.aggregate.stats import DEFAULT_STATS, cell_statistics, stat_label, validate_stats
from healforge.engine import Engine
from healforge.errors import BadInputError, OptionError
from healforge.expressions import parse_column_spec, parse_row
from healforge.healpix import check_order
from healforge.io.readers import DEFAULT_BATCH_ROWS
from healforge.maps.parquet import write_parquet


class ValueSpec:
    """Output columns (plain or ``name=expression``) and an optional weight expression."""

    def __init__(self, columns: Sequence[str] | str, weight: str | None = None):
        if isinstance(columns, str):
            columns = [columns]
        if not columns:
            raise ValueError("give at least one value column")
        self.items = [parse_column_spec(c) for c in columns]
        self.weight = weight
        self.weight_expr = parse_row(weight) if weight else None
        need: list[str] = []
        for name, expr in self.items:
            need.extend(sorted(expr.names) if expr else [name])
        if self.weight_expr is not None:
            need.extend(sorted(self.weight_expr.names))
        self.inputs = list(dict.fromkeys(need))
        self.names = [n for n, _ in self.items]

    def values(self, table: pa.Table, path: str | None) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        raw = {c: value_column(table, c, path) for c in self.inputs}
        n = table.num_rows

        def value(name, expr):
            return np.asarray(expr.evaluate(raw, n), np.float64) if expr else raw[name]

        vals = {name: value(name, expr) for name, expr in self.items}
        w = None
        if self.weight_expr is not None:
            w = value(None, self.weight_expr)
            bad = ~np.isfinite(w) | (w < 0)
            # a weight is only needed where some value is present
            present = np.zeros(w.size, bool)
            for v in vals.values():
                present |= ~np.isnan(v)
            bad &= present
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise BadInputError(
                    f"weight expression {self.weight!r} gives {w[i]!r} (weights must be finite and >= 0)",
                    path=path,
                    row=i,
                    value=float(w[i]),
                )
        return vals, w


def _conventions(lon_convention: str, latitude: str, on_bad_rows: str) -> None:
    check_choice("lon_convention", lon_convention, LON_CONVENTIONS)
    check_choice("latitude", latitude, LATITUDES)
    check_choice("on_bad_rows", on_bad_rows, ON_BAD_ROWS)


def _read_columns(source: Source, spec: Spec | None, vspec: ValueSpec, extra: list[str]) -> list[str] | None:
    if spec is not None and spec.on_bad_rows == "quarantine":
        return None  # keep whole rows for the quarantine file
    cols = (spec.columns if spec else []) + vspec.inputs + extra
    return list(dict.fromkeys(cols))


def _collect_task(source: Source, spec: Spec, order: int, vspec: ValueSpec, batch_rows: int):
    """Cells, values and weights of every assigned row of one source (for exact statistics)."""
    rejects = Rejects()
    cells, weights, values = [], [], {n: [] for n in vspec.names}
    n = 0
    for first, table in source.batches(_read_columns(source, spec, vspec, []), batch_rows):
        _, assigned = assign_batch(table, spec, [order], path=source.label, first_row=first, rejects=rejects)
        a = assigned[order]
        vals, uw = vspec.values(table, source.label)
        cells.append(a.cell)
        weights.append(a.weight * (uw[a.row] if uw is not None else 1.0))
        for k, v in vals.items():
            values[k].append(v[a.row])
        n += table.num_rows
    return (
        np.concatenate(cells),
        {k: np.concatenate(v) for k, v in values.items()},
        np.concatenate(weights),
        n,
        rejects,
    )


def _source_values_task(source: Source, vspec: ValueSpec, id_column: str | None, batch_rows: int):
    vals_parts, w_parts, id_parts = {n: [] for n in vspec.names}, [], []
    n = 0
    extra = [id_column] if id_column else []
    for _, table in source.batches(_read_columns(source, None, vspec, extra), batch_rows):
        vals, uw = vspec.values(table, source.label)
        for k, v in vals.items():
            vals_parts[k].append(v)
        w_parts.append(uw if uw is not None else np.ones(table.num_rows))
        if id_column:
            id_parts.append(table.column(id_column).to_numpy().astype(np.int64))
        n += table.num_rows
    ids = np.concatenate(id_parts) if id_column else None
    return {k: np.concatenate(v) for k, v in vals_parts.items()}, np.concatenate(w_parts), ids, n


def aggregate(
    inputs,
    columns: Sequence[str] | str,
    stats: Sequence[str] = DEFAULT_STATS,
    *,
    sidecar=None,
    order: int | None = None,
    lon: str | None = None,
    lat: str | None = None,
    geometry: str | None = None,
    mode: str = "strict",
    weight: str | None = None,
    id_column: str | None = None,
    ddof: int = 1,
    min_count: int = 1,
    lon_convention: str = "0_360",
    latitude: str = "spherical",
    on_bad_rows: str = "error",
    quarantine: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    engine: Engine | None = None,
) -> pa.Table:
    """Exact per-cell statistics of value columns, as a map table.

    ``inputs`` are files, directories, globs, tables or HATS catalog directories (read partition by
    partition; ``lon``/``lat`` default to the catalog's ``hats_col_ra``/``hats_col_dec``).

    Either ``sidecar`` (a sidecar table or file, from :func:`healforge.sidecar`) assigns rows to
    cells, or the rows are assigned here from ``lon``/``lat`` (or ``geometry`` and ``mode``) at
    ``order``.

    Parameters
    ----------
    columns
        Value columns; ``"name=expression"`` defines a derived column (e.g. ``"ratio=a / b"``).
    stats
        Statistic names: count, sum, mean, var, std, min, max, median, qNN, mad, robust_std,
        wsum, wmean, wvar, wstd, a numpy ufunc name or a dotted path to a function (see
        :mod:`healforge.aggregate.stats`).
    weight
        Expression for a per-row user weight (e.g. ``"1 / sigma**2"``), multiplied by the sidecar
        (area-fraction) weight in the ``w*`` statistics.
    id_column
        With a sidecar whose ``source_id`` are ids: the input's id column.
    ddof, min_count
        Variance degrees of freedom; statistics of cells with fewer valid values are NaN.
    output
        Parquet file to write the map table to.

    Returns
    -------
    pyarrow.Table
        Map table (``cell_ids`` + ``{column}_{stat}`` columns, ``healforge`` metadata).
    """
    _conventions(lon_convention, latitude, on_bad_rows)
    stats = validate_stats(stats)
    vspec = ValueSpec(columns, weight)
    sources = to_sources(inputs)
    engine = engine or Engine(synchronous=True, quiet=True)
    rows_rejected = 0
    if sidecar is not None:
        if isinstance(sidecar, str | os.PathLike):
            sc = read_sidecar(sidecar, order)
        else:
            sc = sidecar
        meta = sidecar_metadata(sc)
        order = int(meta["order"])
        latitude = meta.get("latitude", latitude)
        results = map_sources(
            engine,
            _source_values_task,
            sources,
            "read",
            vspec=vspec,
            id_column=id_column,
            batch_rows=batch_rows,
        )
        vals = {k: np.concatenate([r[0][k] for r in results]) for k in vspec.names}
        uw = np.concatenate([r[1] for r in results])
        rows_in = sum(r[3] for r in results)
        sid = sc.column("source_id").to_numpy()
        if id_column:
            ids = np.concatenate([r[2] for r in results])
            srt = np.argsort(ids, kind="stable")
            pos = np.searchsorted(ids[srt], sid)
            found = pos < ids.size
            found[found] = ids[srt][pos[found]] == sid[found]
            rowpos = srt[np.minimum(pos, ids.size - 1)]
        else:
            found = (sid >= 0) & (sid < rows_in)
            rowpos = sid
        if not found.all():
            i = int(np.flatnonzero(~found)[0])
            raise BadInputError(
                f"sidecar source_id {int(sid[i])} has no matching input row "
                f"({'id column ' + repr(id_column) if id_column else f'{rows_in} input rows'})",
                column="source_id",
                row=i,
                value=int(sid[i]),
            )
        cells = sc.column("healpix_id").to_numpy()
        w = sc.column("weight").to_numpy() * uw[rowpos]
        values = {k: v[rowpos] for k, v in vals.items()}
        rows_rejected = int(meta.get("rows_rejected", 0))
    else:
        if order is None:
            raise OptionError("give a sidecar, or an order with lon/lat (or geometry) columns")
        order = check_order(order)
        spec = position_spec(inputs, lon, lat, geometry, mode, latitude, on_bad_rows)
        qpath = _quarantine_target(on_bad_rows, quarantine, output)
        results = map_sources(
            engine,
            _collect_task,
            sources,
            "aggregate",
            spec=spec,
            order=order,
            vspec=vspec,
            batch_rows=batch_rows,
        )
        cells = np.concatenate([r[0] for r in results])
        values = {k: np.concatenate([r[1][k] for r in results]) for k in vspec.names}
        w = np.concatenate([r[2] for r in results])
        rows_in = sum(r[3] for r in results)
        rows_rejected = gather_rejects((r[4] for r in results), qpath, engine.quiet).count
    cell_ids, out = cell_statistics(cells, values, stats, weights=w, ddof=ddof, min_count=min_count)
    meta = {
        "order": order,
        "lon_convention": lon_convention,
        "latitude": latitude,
        "statistics": [stat_label(s) for s in stats],
        "columns": vspec.names,
        "ddof": ddof,
        "min_count": min_count,
        "weight": weight,
        "source": "exact",
        "rows_in": rows_in,
        "rows_rejected": rows_rejected,
    }
    table = make_map_table(cell_ids, out, meta)
    if output is not None:
        write_map(table, output)
    return table


def _accumulate_task(source: Source, spec: Spec, order: int, vspec: ValueSpec, batch_rows: int, conv: dict):
    rejects = Rejects()
    pending: list[State] = []
    for first, table in source.batches(_read_columns(source, spec, vspec, []), batch_rows):
        _, assigned = assign_batch(table, spec, [order], path=source.label, first_row=first, rejects=rejects)
        a = assigned[order]
        vals, uw = vspec.values(table, source.label)
        w = a.weight * (uw[a.row] if uw is not None else 1.0)
        if uw is None and spec.geometry is None:
            w = None  # unit weights: lets the batch reduction skip carrying weights through the sort
        batch = State.from_batch(a.cell, {k: v[a.row] for k, v in vals.items()}, order, weights=w, **conv)
        batch.rows_in = table.num_rows
        pending.append(batch)
        if len(pending) == 8:  # bounded memory; merging in groups keeps the work near-linear
            pending = [_merge_tree(pending)]
    state = _merge_tree(pending)
    state.rows_rejected = rejects.count
    return state, rejects


def accumulate(
    inputs,
    columns: Sequence[str] | str,
    *,
    order: int | None = None,
    state: State | str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    lon: str | None = None,
    lat: str | None = None,
    geometry: str | None = None,
    mode: str = "strict",
    weight: str | None = None,
    delta: float = DEFAULT_DELTA,
    lon_convention: str = "0_360",
    latitude: str = "spherical",
    on_bad_rows: str = "error",
    quarantine: str | os.PathLike | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    engine: Engine | None = None,
) -> State:
    """Accumulate inputs into a streaming state (moments + quantile sketches per cell and column).

    Each input file (each partition of a HATS catalog) is a task; within a file, batches are reduced exactly and merged; task states
    are merged, then merged into ``state`` when one is given (a :class:`State` or a state file,
    which is then also the default ``output``). With footprints, ``fuzzy`` rows count in every cell
    they overlap and their area fraction weights the ``w*`` moments.

    Returns
    -------
    State
        The accumulated state (also saved to ``output`` when given).
    """
    _conventions(lon_convention, latitude, on_bad_rows)
    vspec = ValueSpec(columns, weight)
    base = None
    if state is not None:
        if isinstance(state, State):
            base = state
        else:
            if output is None:
                output = state
            if os.path.exists(os.fspath(state)):
                base = State.load(state)
    if order is None:
        if base is None:
            raise OptionError("give an order (or an existing state to add to)")
        order = base.order
    order = check_order(order)
    spec = position_spec(inputs, lon, lat, geometry, mode, latitude, on_bad_rows)
    qpath = _quarantine_target(on_bad_rows, quarantine, output)
    sources = to_sources(inputs)
    engine = engine or Engine(synchronous=True, quiet=True)
    conv = {"lon_convention": lon_convention, "latitude": latitude, "delta": delta}
    results = map_sources(
        engine,
        _accumulate_task,
        sources,
        "accumulate",
        spec=spec,
        order=order,
        vspec=vspec,
        batch_rows=batch_rows,
        conv=conv,
    )
    gather_rejects((r[1] for r in results), qpath, engine.quiet)
    parts = [r[0] for r in results]
    if base is not None:
        parts.insert(0, base)
    out = _merge_tree(parts)
    if output is not None:
        out.save(output)
    return out


# States merged at once in the merge tree: one merge of k states costs about as much as one
# pairwise merge of the same rows, so a wide tree does far less work than a binary one.
MERGE_FAN_IN = 8


def _merge_tree(states: list[State]) -> State:
    """Merge states as a balanced tree of fan-in ``MERGE_FAN_IN`` (same result as one merge)."""
    while len(states) > 1:
        states = [_merge_states(states[i : i + MERGE_FAN_IN]) for i in range(0, len(states), MERGE_FAN_IN)]
    return states[0]


def merge_states(
    states: Sequence[State | str | os.PathLike], output: str | os.PathLike | None = None
) -> State:
    """Merge states (objects or files) of the same order, columns and conventions.

    Raises :class:`~healforge.aggregate.state.StateMismatchError` naming what differs.
    """
    loaded = [s if isinstance(s, State) else State.load(s) for s in states]
    labels = [str(s) if not isinstance(s, State) else f"state {i}" for i, s in enumerate(states)]
    for i, s in enumerate(loaded[1:], 1):
        loaded[0].check_compatible(s, where=f" ({labels[0]} and {labels[i]})")
    out = _merge_states(loaded)
    if output is not None:
        out.save(output)
    return out


def finalize(
    state: State | str | os.PathLike,
    stats: Sequence[str] = DEFAULT_STATE_STATS,
    *,
    ddof: int = 1,
    min_count: int = 1,
    order: int | None = None,
    min_order: int | None = None,
    output: str | os.PathLike | None = None,
    metadata: dict | None = None,
) -> pa.Table | dict[int, pa.Table]:
    """Map table of a state, or a pyramid of map tables down to ``min_order``.

    Parameters
    ----------
    order
        Finalize at this (coarser) order instead of the state's own.
    min_order
        Also build every coarser order down to ``min_order``: each level is the state merged to
        that order (:meth:`State.coarsen`, not an average of finer means), so every statistic,
        quantiles included, exists at every level. Returns ``{order: map table}``.
    output
        Where to write: ``*.zarr`` a Zarr DGGS store (one group per order), anything else Parquet
        (a pyramid: a directory of ``order_KK.parquet``).
    metadata
        Extra product metadata for a Zarr store's root attributes.
    """
    st = state if isinstance(state, State) else State.load(state)
    if order is not None and order != st.order:
        st = st.coarsen(order)
    if min_order is None:
        result: pa.Table | dict[int, pa.Table] = finalize_state(st, stats, ddof, min_count)
    else:
        min_order = check_order(min_order)
        if min_order > st.order:
            raise OptionError(f"min_order {min_order} is finer than the state's order {st.order}")
        result = {}
        level = st
        for k in range(st.order, min_order - 1, -1):
            if k != level.order:
                level = level.coarsen(k)  # merging children's states (associative) = state at k
            result[k] = finalize_state(level, stats, ddof, min_count)
        result = dict(sorted(result.items()))
    if output is not None:
        write_output(result, output, metadata=metadata)
    return result


def write_output(
    maps: pa.Table | dict[int, pa.Table], output: str | os.PathLike, metadata: dict | None = None
):
    """Write a map or pyramid in the format of ``output``'s suffix (``.zarr`` or Parquet)."""
    if os.fspath(output).rstrip("/").endswith(".zarr"):
        from healforge.maps.zarr_store import write_zarr

        write_zarr(maps, output, metadata=metadata)
    elif isinstance(maps, pa.Table):
        write_map(maps, output)
    else:
        write_parquet(maps, output)

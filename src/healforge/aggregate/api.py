"""Public entry points: exact aggregation, streaming accumulation, merging and finalizing states.

Each builds a :class:`~healforge.aggregate.plan.Plan` and runs it on the one core
(:mod:`healforge.aggregate.core`), as ``healforge run`` does.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.aggregate import journal
from healforge.aggregate.coords import ON_BAD_ROWS, check_choice
from healforge.aggregate.core import (
    Batch,
    accumulate_source,
    collect_source,
    column_values,
    exact_statistics,
    joined,
    joined_weights,
    merge_tree,
    numeric_columns,
    pyramid,
    run_sources,
    sum_counts,
    without_fills,
)
from healforge.aggregate.finalize import DEFAULT_STATE_STATS, finalize_state
from healforge.aggregate.maptable import make_map_table, write_map
from healforge.aggregate.plan import Assignment, Plan, PlanBuilder, parse_cell_specs
from healforge.aggregate.shuffle import shuffle_statistics
from healforge.aggregate.sidecar import (
    as_sidecar,
    gather_rejects,
    quarantine_target,
    read_sidecar,
    sidecar_metadata,
)
from healforge.aggregate.sketch import DEFAULT_DELTA
from healforge.aggregate.sources import Source, default_position, to_sources
from healforge.aggregate.state import State
from healforge.aggregate.state import merge_states as merge_state_objects
from healforge.aggregate.statistics import DEFAULT_STATS, resolve_all
from healforge.engine import Engine
from healforge.errors import BadInputError, OptionError
from healforge.expressions import parse_column_spec
from healforge.io.fills import FillRules
from healforge.io.readers import DEFAULT_BATCH_ROWS
from healforge.io.storage import as_path
from healforge.maps.parquet import write_parquet
from healforge.maps.views import FRAMES
from healforge.pixel import check_order
from healforge.pixel.latitude import LATITUDES, LON_CONVENTIONS

CellSpecs = Sequence[str] | Mapping[str, str] | None


def value_builder(
    columns: Sequence[str] | str,
    weight: str | None,
    stats: Sequence[str] = (),
    cell_expressions: CellSpecs = None,
) -> tuple[PlanBuilder, list[str]]:
    """A plan builder with one state column per value column (plain or ``name=expression``), all
    weighted by ``weight``, the statistics ``{column}_{stat}`` of each, and the cell expressions
    (their row expressions become extra state columns). Returns the builder and the column names."""
    if isinstance(columns, str):
        columns = [columns]
    if not columns:
        raise OptionError("give at least one value column")
    b = PlanBuilder()
    names = []
    resolved = resolve_all(stats) if stats else []
    for spec in columns:
        name, expr = parse_column_spec(spec)
        key = b.column(expr if expr is not None else name, weight, key=name)
        names.append(key)
        for s in resolved:
            b.statistic(f"{key}_{s.label}", key, s)
    for name, expr in parse_cell_specs(cell_expressions).items():
        b.cell_expression(name, expr)
    return b, names


def _assignment(
    inputs, order, lon, lat, geometry, mode, lon_convention, latitude, on_bad_rows, storage_options=None
) -> Assignment:
    lon, lat = default_position(inputs, lon, lat, geometry, storage_options)
    if geometry is None and (lon is None or lat is None):
        raise OptionError("give lon and lat columns, or a geometry column")
    if geometry is not None and (lon is not None or lat is not None):
        raise OptionError("give either lon/lat columns or a geometry column, not both")
    return Assignment(check_order(order), lon, lat, geometry, mode, lon_convention, latitude, on_bad_rows)


def _shuffle_dir(work_dir, shuffle: bool | None, engine: Engine, sidecar, output) -> str | os.PathLike | None:
    """The work directory rows are shuffled through, ``None`` for rows gathered here."""
    if shuffle is False:
        if work_dir is not None:
            raise OptionError("a work directory applies to shuffled statistics (shuffle=False given)")
        return None
    if work_dir is not None:
        return work_dir
    if shuffle or (engine.scheduler and sidecar is None and output is not None):
        if output is None:
            raise OptionError("shuffled statistics need an output or a work directory")
        return f"{str(output).rstrip('/')}.work"
    return None


def aggregate(
    inputs,
    columns: Sequence[str] | str,
    stats: Sequence[str | Callable] = DEFAULT_STATS,
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
    cell_expressions: CellSpecs = None,
    filter: str | None = None,
    radius_km: float | None = None,
    storage_options: dict | None = None,
    work_dir: str | os.PathLike | None = None,
    shard_order: int | None = None,
    shuffle: bool | None = None,
    fill_values: Mapping[str, Any] | Sequence[str] | None = None,
    sentinel_above: float | None = None,
    frame: str | None = None,
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
        wsum, wmean, wvar, wstd, a numpy function of :mod:`healforge.registry` (``maximum``,
        ``numpy:ptp``...), or a callable of a cell's values (Python API only; see
        :mod:`healforge.aggregate.kernels`).
    weight
        Expression for a per-row user weight (e.g. ``"1 / sigma**2"``), multiplied by the sidecar
        (area-fraction) weight in the ``w*`` statistics.
    id_column
        With a sidecar whose ``source_id`` are ids: the input's id column.
    ddof, min_count
        Variance degrees of freedom; statistics of cells with fewer valid values are NaN.
    output
        Parquet file to write the map table to.
    cell_expressions
        ``{name: expression}`` (or ``["name=expression"]``) of per-cell expressions over
        aggregates of row expressions, e.g. ``"1 / sqrt(sum(1 / s**2))"`` or ``"count(h) / area"``
        (``area``: the cell's area in steradians, or km2 with ``radius_km``).
    filter
        Row expression; only rows where it is true are aggregated.
    fill_values, sentinel_above
        Values that mean "no value": ``{column: value or [values]}`` (or ``["COLUMN=VALUE"]``),
        and a magnitude above which any value is one (healpyxel's ``sentinel_threshold``). The
        fills a file declares (HDF5/netCDF ``_FillValue``/``missing_value``, FITS ``TNULL``) are
        always honoured. Fills become missing values before any statistic and filter; the map
        metadata counts them (``fills_skipped``).
    storage_options
        fsspec options for URL inputs, sidecar and output (credentials, endpoint).
    frame
        ``"sky"`` (celestial data: plots draw right ascension increasing to the left) or
        ``"body"`` (a planet or the Earth, east to the right), recorded in the map metadata.
    work_dir, shard_order, shuffle
        Rows shuffled by shard (pixels at ``shard_order``) through ``work_dir`` (default
        ``OUTPUT.work``), each shard aggregated alone on a worker: the same numbers, with no row
        in this process (:mod:`healforge.aggregate.shuffle`). Default: with a ``work_dir``, or on
        a scheduler with an ``output``; ``shuffle=False``: rows gathered here.

    Returns
    -------
    pyarrow.Table
        Map table (``cell_ids`` + ``{column}_{stat}`` columns, ``healforge`` metadata).
    """
    for name, value, choices in (
        ("lon_convention", lon_convention, LON_CONVENTIONS),
        ("latitude", latitude, LATITUDES),
        ("on_bad_rows", on_bad_rows, ON_BAD_ROWS),
    ):
        check_choice(name, value, choices)
    builder, names = value_builder(columns, weight, stats, cell_expressions)
    fills = FillRules.parse(fill_values, sentinel_above)
    plan_options = {"filter": _filter(filter), "radius_km": radius_km, "ddof": ddof, "min_count": min_count}
    plan_options["fills"] = fills
    sources = to_sources(inputs, storage_options)
    engine = engine or Engine(synchronous=True, quiet=True)
    work_dir = _shuffle_dir(work_dir, shuffle, engine, sidecar, output)
    n_fills = None
    if sidecar is not None:
        if work_dir is not None:
            raise OptionError("a sidecar cannot be combined with a work directory (shuffled statistics)")
        if filter:
            raise OptionError(
                "a filter cannot be combined with a sidecar: filter the rows before making the sidecar"
            )
        sc = (
            read_sidecar(sidecar, order, storage_options)
            if isinstance(sidecar, str | os.PathLike)
            else as_sidecar(sidecar, order)
        )
        meta = sidecar_metadata(sc)
        order = int(meta["order"])
        latitude = meta.get("latitude", latitude)
        plan = builder.build(sources, None, **plan_options)
        cells, values, w, rows_in = _sidecar_rows(plan, sc, sources, engine, id_column, batch_rows)
        rows_rejected = int(meta.get("rows_rejected", 0))
        cell_ids, out = exact_statistics(cells, values, w, plan, order)
    else:
        if order is None:
            raise OptionError("give a sidecar, or an order with lon/lat (or geometry) columns")
        assignment = _assignment(
            inputs, order, lon, lat, geometry, mode, lon_convention, latitude, on_bad_rows, storage_options
        )
        plan = builder.build(sources, assignment, **plan_options)
        qpath = quarantine_target(on_bad_rows, quarantine, output)
        if work_dir is not None:  # rows shuffled by shard: the same numbers, one shard in memory
            where = {"shard_order": shard_order, "batch_rows": batch_rows, "storage_options": storage_options}
            res = shuffle_statistics(engine, plan, [order], work_dir, **where)
            (cell_ids, out), counts, rejects = res.maps[order], res.counts, [res.rejects]
        else:
            cell_ids, out, counts, rejects = _gathered_statistics(engine, plan, sources, order, batch_rows)
        rows_in, n_fills = counts.rows_read, counts.fills_skipped
        rows_rejected = gather_rejects(rejects, qpath, engine.quiet).count
    meta = {"order": order, "lon_convention": lon_convention, "latitude": latitude}
    meta |= {"statistics": [s.label for s in resolve_all(stats)], "columns": names, "ddof": ddof}
    meta |= {"min_count": min_count, "weight": weight, "source": "exact", "rows_in": rows_in}
    meta |= {"rows_rejected": rows_rejected, **fills.describe()}
    meta |= {"frame": check_choice("frame", frame, FRAMES)} if frame is not None else {}
    if n_fills is not None:
        meta["fills_skipped"] = n_fills
    if plan.cell_statistics:
        meta["cell_expressions"] = {c.name: c.expression.source for c in plan.cell_statistics}
    table = make_map_table(cell_ids, out, meta)
    if output is not None:
        write_map(table, output, storage_options=storage_options)
    return table


def _gathered_statistics(engine: Engine, plan, sources, order: int, batch_rows: int):
    """Exact statistics of the rows gathered in this process: cells, columns, rows, rejects."""
    results = run_sources(engine, collect_source, sources, "aggregate", plan=plan, batch_rows=batch_rows)
    cells = joined([r.cells for r in results], np.int64)
    values = {k: joined([r.values[k] for r in results]) for k in plan.keys}
    wkey = plan.state_columns[0].weight.source if plan.state_columns[0].weight is not None else None
    w = joined_weights([r.weights.get(wkey) for r in results], [r.cells.size for r in results])
    cell_ids, out = exact_statistics(cells, values, w, plan, order)
    return cell_ids, out, sum_counts(results), [r.rejects for r in results]


def _filter(src: str | None):
    from healforge.expressions import parse_filter

    return parse_filter(src) if src else None


def _values_task(source: Source, plan: Plan, id_column: str | None, batch_rows: int):
    """Values of every row of one source (no assignment; a sidecar gives the cells)."""
    parts, w_parts, id_parts = {k: [] for k in plan.keys}, [], []
    n = 0
    read = list(dict.fromkeys(plan.value_names + ([id_column] if id_column else [])))
    for first, table in source.batches(read, batch_rows):
        rows = np.arange(table.num_rows)
        b = Batch(
            without_fills(table, numeric_columns(table, plan.value_names, source.label), plan.fills)[0],
            rows,
            rows,
            None,
            first,
            None,
            table.num_rows,
            source.label,
        )
        by_weight, ws = column_values(b, plan.state_columns)
        for vals in by_weight.values():
            for k, v in vals.items():
                parts[k].append(v)
        w = next(iter(ws.values()))
        w_parts.append(w if w is not None else np.ones(table.num_rows))
        if id_column:
            id_parts.append(table.column(id_column).to_numpy().astype(np.int64))
        n += table.num_rows
    ids = np.concatenate(id_parts) if id_column else None
    return {k: np.concatenate(v) for k, v in parts.items()}, np.concatenate(w_parts), ids, n


def _sidecar_rows(plan: Plan, sc: pa.Table, sources, engine: Engine, id_column: str | None, batch_rows: int):
    """Cells, values and weights of the sidecar's rows: values read from the inputs, matched by
    row position or id column."""
    results = run_sources(
        engine, _values_task, sources, "read", plan=plan, id_column=id_column, batch_rows=batch_rows
    )
    vals = {k: np.concatenate([r[0][k] for r in results]) for k in plan.keys}
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
    return cells, {k: v[rowpos] for k, v in vals.items()}, w, rows_in


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
    cell_expressions: CellSpecs = None,
    filter: str | None = None,
    storage_options: dict | None = None,
    fill_values: Mapping[str, Any] | Sequence[str] | None = None,
    sentinel_above: float | None = None,
) -> State:
    """Accumulate inputs into a streaming state (moments + quantile sketches per cell and column).

    Each input file (each partition of a HATS catalog) is a task; within a file, batches are reduced exactly and merged; task states
    are merged, then merged into ``state`` when one is given (a :class:`State` or a state file,
    which is then also the default ``output``). With footprints, ``fuzzy`` rows count in every cell
    they overlap and their area fraction weights the ``w*`` moments.

    ``cell_expressions`` (``{name: expression}`` or ``["name=expression"]``) keep the aggregates
    of their row expressions as extra state columns, so that :func:`finalize` computes them at
    every order; they are remembered in the state.

    The state records which input files it holds (:mod:`healforge.aggregate.journal`): inputs
    it already holds are skipped (``state.skipped_inputs``), so rerunning an accumulation that
    was killed after saving does not count them twice (``state.already_complete``).

    Returns
    -------
    State
        The accumulated state (also saved to ``output`` when given).
    """
    base = None
    if state is not None:
        if isinstance(state, State):
            base = state
        else:
            if output is None:
                output = state
            if as_path(state, storage_options).exists():
                base = State.load(state, storage_options)
    if order is None:
        if base is None:
            raise OptionError("give an order (or an existing state to add to)")
        order = base.order
    exprs = dict(base.extra.get("cell_expressions", {})) if base is not None else {}
    exprs.update({k: v.source for k, v in parse_cell_specs(cell_expressions).items()})
    builder, _ = value_builder(columns, weight, (), exprs)
    assignment = _assignment(
        inputs, order, lon, lat, geometry, mode, lon_convention, latitude, on_bad_rows, storage_options
    )
    held = journal.absorbed(base)
    sources, skipped, prints = journal.split_new(to_sources(inputs, storage_options), held)
    if base is not None and skipped and not sources:  # a rerun after the state was saved
        if output is not None and os.fspath(output) != os.fspath(state):
            base.save(output, storage_options)
        base.skipped_inputs, base.already_complete = [s.label for s in skipped], True
        return base
    fills = FillRules.parse(fill_values, sentinel_above)
    plan = builder.build(sources, assignment, filter=_filter(filter), delta=delta, fills=fills)
    qpath = quarantine_target(on_bad_rows, quarantine, output)
    engine = engine or Engine(synchronous=True, quiet=True)
    results = run_sources(engine, accumulate_source, sources, "accumulate", plan=plan, batch_rows=batch_rows)
    gather_rejects((r.rejects for r in results), qpath, engine.quiet)
    parts = [r.state for r in results]
    if base is not None:
        parts.insert(0, base)
    out = merge_tree(parts)
    if exprs:
        out.annotate(cell_expressions=exprs)
    if held or prints:
        out.annotate(**{journal.JOURNAL_KEY: sorted(held | set(prints))})
    out.skipped_inputs, out.already_complete = [s.label for s in skipped], False
    if output is not None:
        out.save(output, storage_options)
    return out


def merge_states(
    states: Sequence[State | str | os.PathLike],
    output: str | os.PathLike | None = None,
    storage_options: dict | None = None,
) -> State:
    """Merge states (objects or files, local or URLs) of the same order, columns and conventions.

    Raises :class:`~healforge.aggregate.state.StateMismatchError` naming what differs.
    """
    loaded = [s if isinstance(s, State) else State.load(s, storage_options) for s in states]
    labels = [str(s) if not isinstance(s, State) else f"state {i}" for i, s in enumerate(states)]
    for i, s in enumerate(loaded[1:], 1):
        loaded[0].check_compatible(s, where=f" ({labels[0]} and {labels[i]})")
    out = merge_state_objects(loaded)
    if output is not None:
        out.save(output, storage_options)
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
    cell_expressions: CellSpecs = None,
    radius_km: float | None = None,
    storage_options: dict | None = None,
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
    cell_expressions
        Cell expressions (``{name: expression}`` or ``["name=expression"]``) besides those
        remembered in the state; their row expressions must be columns of the state.
    radius_km
        Sphere radius giving ``area`` in km2 in cell expressions (default: steradians).
    """
    st = state if isinstance(state, State) else State.load(state, storage_options)
    exprs = parse_cell_specs(st.extra.get("cell_expressions"))
    exprs.update(parse_cell_specs(cell_expressions))
    if order is not None and order != st.order:
        st = st.coarsen(order)
    kw = dict(cell_expressions=exprs, radius_km=radius_km)
    if min_order is None:
        result: pa.Table | dict[int, pa.Table] = finalize_state(st, stats, ddof, min_count, **kw)
    else:
        min_order = check_order(min_order)
        if min_order > st.order:
            raise OptionError(f"min_order {min_order} is finer than the state's order {st.order}")
        levels = pyramid(st, range(min_order, st.order + 1))
        result = {lv.order: finalize_state(lv, stats, ddof, min_count, **kw) for lv in levels}
        result = dict(sorted(result.items()))
    if output is not None:
        write_output(result, output, metadata=metadata, storage_options=storage_options)
    return result


def write_output(
    maps: pa.Table | dict[int, pa.Table],
    output: str | os.PathLike,
    metadata: dict | None = None,
    storage_options: dict | None = None,
):
    """Write a map or pyramid in the format of ``output``'s suffix (``.zarr`` or Parquet), local
    or URL."""
    if os.fspath(output).rstrip("/").endswith(".zarr"):
        from healforge.maps.zarr_store import write_zarr

        write_zarr(maps, output, metadata=metadata, storage_options=storage_options)
    elif isinstance(maps, pa.Table):
        write_map(maps, output, storage_options=storage_options)
    else:
        write_parquet(maps, output, storage_options=storage_options)

"""The one aggregation core: executes a :class:`~healforge.aggregate.plan.Plan`.

Per source (a task on the :class:`~healforge.engine.Engine`): read batches, apply the filter, assign
rows to cells, evaluate the state columns' row expressions and weights, and either reduce each
batch exactly into a :class:`~healforge.aggregate.state.State` merged per source
(:func:`accumulate_source`), or keep the assigned values for exact statistics
(:func:`collect_source`). States merge with :func:`merge_tree`; :func:`plan_maps` finalizes a state
(and its coarser levels) into map tables with the plan's variables.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from healforge.aggregate.assign import assign_batch
from healforge.aggregate.coords import Rejects, value_column
from healforge.aggregate.finalize import cell_area, cell_expression_values, column_statistics
from healforge.aggregate.kernels import cell_statistics
from healforge.aggregate.plan import Plan, StateColumn
from healforge.aggregate.sources import Source
from healforge.aggregate.state import State, merge_states
from healforge.aggregate.statistics import resolve
from healforge.engine import Engine
from healforge.errors import BadInputError
from healforge.io.fills import FillRules, has_declared_fills, mask_fills
from healforge.io.readers import DEFAULT_BATCH_ROWS

# States merged at once in the merge tree: one merge of k states costs about as much as one
# pairwise merge of the same rows, so a wide tree does far less work than a binary one.
MERGE_FAN_IN = 8


def merge_tree(states: Sequence[State]) -> State:
    """Merge states as a balanced tree of fan-in ``MERGE_FAN_IN`` (same result as one merge)."""
    states = list(states)
    while len(states) > 1:
        states = [merge_states(states[i : i + MERGE_FAN_IN]) for i in range(0, len(states), MERGE_FAN_IN)]
    return states[0]


@dataclass
class Counts:
    """Rows of one or more sources: read, removed by the filter, rejected as bad, assigned."""

    rows_read: int = 0
    rows_filtered: int = 0
    rows_rejected: int = 0
    rows_assigned: int = 0
    fills_skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


@dataclass
class Batch:
    """One filtered, assigned batch: numeric input columns, the assigned rows and where they
    came from (``keep``: rows of the read batch that passed the filter; ``first``: its first row)."""

    columns: dict[str, np.ndarray]
    row: np.ndarray
    cell: np.ndarray
    area: np.ndarray | None
    first: int
    keep: np.ndarray | None
    n_rows: int
    path: str
    table: pa.Table | None = None
    by_order: dict | None = None

    def file_row(self, i: int) -> int:
        """Row in the file of row ``i`` of the filtered batch."""
        return self.first + (int(self.keep[i]) if self.keep is not None else int(i))


@dataclass
class SourceResult:
    state: State | None
    counts: Counts
    rejects: Rejects = field(default_factory=Rejects)
    cells: np.ndarray | None = None
    values: dict[str, np.ndarray] | None = None
    weights: dict[str, np.ndarray | None] | None = None


def numeric_columns(table: pa.Table, names: Sequence[str], path: str) -> dict[str, np.ndarray]:
    """Input columns for expressions: integers and booleans kept (bit tests), others float64."""
    out = {}
    for name in names:
        if name not in table.column_names:
            raise BadInputError(
                f"column {name!r} not found; available columns: {', '.join(table.column_names)}",
                path=path,
                column=name,
            )
        arr = table.column(name)
        if (pa.types.is_integer(arr.type) or pa.types.is_boolean(arr.type)) and arr.null_count == 0:
            out[name] = arr.to_numpy()
        else:
            out[name] = value_column(table, name, path)
    return out


def without_fills(
    table: pa.Table, columns: dict[str, np.ndarray], rules: FillRules
) -> tuple[dict, int, np.ndarray | None]:
    """``columns`` of ``table`` with the fills of ``rules`` as NaN (those a file declares are
    nulls already), how many values were fills of either kind, and which rows hold one
    (``None``: none): never a value of a statistic or a filter."""
    out, total, rows = dict(columns), 0, None
    for name, v in columns.items():
        hit = None
        if has_declared_fills(table, name) and table.column(name).null_count:
            hit = np.asarray(table.column(name).is_null().to_numpy(zero_copy_only=False))
        fills = rules.of(name)
        if (fills or rules.sentinel_above is not None) and v.dtype.kind != "b":
            typ = table.column(name).type
            numeric = pa.types.is_integer(typ) or pa.types.is_floating(typ)
            masked, n = mask_fills(
                v, fills, rules.sentinel_above, np.dtype(typ.to_pandas_dtype()) if numeric else None
            )
            if n:
                out[name] = masked
                user = np.isnan(masked) & ~np.isnan(np.asarray(v, dtype=np.float64))
                hit = user if hit is None else hit | user
        if hit is not None and hit.any():
            total += int(hit.sum())
            rows = hit if rows is None else rows | hit
    return out, total, rows


def _remap_row_error(exc: BadInputError, keep: np.ndarray, first: int) -> BadInputError:
    """The error of a filtered batch with its row index as a row of the file."""
    if exc.row is None:
        return exc
    orig = first + int(keep[int(exc.row)])
    msg = str(exc)
    where = msg.rfind(" (file ")
    base = msg[:where] if where >= 0 else msg
    return BadInputError(base, path=exc.path, column=exc.column, row=orig, value=exc.value)


def _distinct(rows: np.ndarray) -> int:
    """Number of distinct rows (sorted rows, as assignment gives them, need no sort)."""
    d = np.diff(rows)
    if (d >= 0).all():
        return int(np.count_nonzero(d)) + (1 if rows.size else 0)
    return int(np.unique(rows).size)


def batches(
    source: Source,
    plan: Plan,
    batch_rows: int,
    counts: Counts,
    rejects: Rejects,
    orders: Sequence[int] | None = None,
    extra_columns: Sequence[str] = (),
) -> Iterator[Batch]:
    """The filtered, assigned batches of one source (the one batch loop of every front end).

    ``orders``: also assign at these orders (``Batch.by_order``; one pass, as the sidecar needs);
    ``extra_columns``: read these too (``Batch.table`` holds the filtered batch).
    """
    a = plan.assignment
    spec = a.spec()
    names = plan.value_names
    orders = sorted({a.order, *(orders or ())})
    read = plan.read_columns
    if read is not None:
        read = list(dict.fromkeys(read + list(extra_columns)))
    for first, table in source.batches(read, batch_rows):
        counts.rows_read += table.num_rows
        keep = None
        mask = np.ones(table.num_rows, dtype=bool)
        if plan.filter is not None:
            cols = without_fills(
                table, numeric_columns(table, sorted(plan.filter.names), source.label), plan.fills
            )[0]
            mask &= np.broadcast_to(
                np.asarray(plan.filter.evaluate(cols, table.num_rows), dtype=bool), (table.num_rows,)
            )
            counts.rows_filtered += int(table.num_rows - mask.sum())
        values = None  # the value columns, when read before the filtering (drop_rows)
        if plan.fills.drop_rows:  # a row with a fill in any value is dropped whole
            values, _, filled = without_fills(table, numeric_columns(table, names, source.label), plan.fills)
            if filled is not None:
                counts.fills_skipped += int((filled & mask).sum())
                mask &= ~filled
        if not mask.all():
            keep = np.flatnonzero(mask)
            table = table.take(pa.array(keep))
            if values is not None:
                values = {k: v[keep] for k, v in values.items()}
        if table.num_rows == 0:
            continue
        local = Rejects()
        try:
            _, assigned = assign_batch(
                table,
                spec,
                orders,
                path=source.label,
                first_row=first if keep is None else 0,
                rejects=local,
            )
        except BadInputError as exc:
            raise (_remap_row_error(exc, keep, first) if keep is not None else exc) from None
        for t in local.tables:
            if keep is not None:  # rows of the file, not of the filtered batch
                idx = t.schema.get_field_index("_source_row")
                t = t.set_column(idx, "_source_row", pa.array(first + keep[t.column(idx).to_numpy()]))
            rejects.tables.append(t)
        asg = assigned[a.order]
        # points and strict footprints give each row at most one cell
        counts.rows_assigned += _distinct(asg.row) if a.fuzzy else int(asg.row.size)
        if values is None:
            values, n_fills, _ = without_fills(table, numeric_columns(table, names, source.label), plan.fills)
            counts.fills_skipped += n_fills
        yield Batch(
            columns=values,
            row=asg.row,
            cell=asg.cell,
            area=asg.weight if a.fuzzy else None,
            first=first,
            keep=keep,
            n_rows=table.num_rows,
            path=source.label,
            table=table,
            by_order=assigned,
        )


def _row_values(expr, b: Batch) -> np.ndarray:
    """float64 values of a row expression over a batch (a plain column is taken as it is)."""
    if expr.names == {expr.source}:
        return np.asarray(b.columns[expr.source], dtype=np.float64)
    return np.asarray(expr.evaluate(b.columns, b.n_rows), dtype=np.float64)


def column_values(
    b: Batch, columns: Sequence[StateColumn]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray | None]]:
    """Values of the assigned rows per state column, grouped by weight: ``({weight: {key:
    values}}, {weight: weights or None})``; bad weights (negative, not finite) raise naming the row."""
    by_weight: dict[str | None, dict[str, np.ndarray]] = {}
    weights: dict[str | None, np.ndarray | None] = {}
    for sc in columns:
        if sc.values is None:
            v = np.ones(b.row.size)
        else:
            v = np.broadcast_to(_row_values(sc.values, b), (b.n_rows,))[b.row]
        wkey = sc.weight.source if sc.weight is not None else None
        if wkey not in weights:
            if sc.weight is None:
                weights[wkey] = b.area
            else:
                uw = np.asarray(sc.weight.evaluate(b.columns, b.n_rows), dtype=np.float64)
                uw = np.broadcast_to(uw, (b.n_rows,))[b.row]
                weights[wkey] = uw if b.area is None else uw * b.area
        w = weights[wkey]
        if w is not None:
            bad = (~np.isfinite(w) | (w < 0)) & ~np.isnan(v)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise BadInputError(
                    f"weight expression {wkey!r} gives {w[i]!r} for {sc.key!r} (weights must be finite "
                    "and >= 0; filter such rows out)",
                    path=b.path,
                    row=b.file_row(int(b.row[i])),
                    value=float(w[i]),
                )
        by_weight.setdefault(wkey, {})[sc.key] = v
    return by_weight, weights


def batch_state(b: Batch, plan: Plan) -> State:
    """Exact state of one batch with every state column of the plan."""
    by_weight, weights = column_values(b, plan.state_columns)
    conv = {**plan.assignment.conventions(), "delta": plan.delta}
    parts = [
        State.from_batch(b.cell, vals, plan.assignment.order, weights=weights[w], **conv)
        for w, vals in by_weight.items()
    ]
    out = parts[0].with_columns(*parts[1:], order=plan.keys) if len(parts) > 1 else parts[0]
    out.set_counts(rows_in=b.n_rows)
    return out


def accumulate_source(source: Source, plan: Plan, batch_rows: int = DEFAULT_BATCH_ROWS) -> SourceResult:
    """State of one source (a task): batches reduced exactly, merged in bounded groups."""
    counts, rejects = Counts(), Rejects()
    pending: list[State] = []
    for b in batches(source, plan, batch_rows, counts, rejects):
        pending.append(batch_state(b, plan))
        if len(pending) == MERGE_FAN_IN:  # bounded memory; merging in groups keeps the work near-linear
            pending = [merge_tree(pending)]
    counts.rows_rejected = rejects.count
    conv = {**plan.assignment.conventions(), "delta": plan.delta}
    state = merge_tree(pending) if pending else State.empty(plan.assignment.order, plan.keys, **conv)
    state.set_counts(rows_in=counts.rows_read, rows_rejected=counts.rows_rejected)
    return SourceResult(state, counts, rejects)


def collect_source(source: Source, plan: Plan, batch_rows: int = DEFAULT_BATCH_ROWS) -> SourceResult:
    """Cells, values and weights of every assigned row of one source (for exact statistics)."""
    counts, rejects = Counts(), Rejects()
    cells, values, weights = [], {k: [] for k in plan.keys}, {}
    for b in batches(source, plan, batch_rows, counts, rejects):
        by_weight, ws = column_values(b, plan.state_columns)
        cells.append(b.cell)
        for wkey, vals in by_weight.items():
            for k, v in vals.items():
                values[k].append(v)
            weights.setdefault(wkey, []).append(ws[wkey])
    counts.rows_rejected = rejects.count
    sizes = [c.size for c in cells]
    return SourceResult(
        None,
        counts,
        rejects,
        cells=joined(cells, np.int64),
        values={k: joined(v) for k, v in values.items()},
        weights={k: joined_weights(v, sizes) for k, v in weights.items()},
    )


def joined(parts: Sequence[np.ndarray], dtype=np.float64) -> np.ndarray:
    """The parts end to end (the part itself when there is one: no copy)."""
    if not parts:
        return np.empty(0, dtype)
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def joined_weights(parts: Sequence[np.ndarray | None], sizes: Sequence[int]) -> np.ndarray | None:
    """Weights of parts end to end, ones for parts without (``None``: no part has any)."""
    if all(p is None for p in parts):
        return None
    return joined([np.ones(n) if p is None else p for p, n in zip(parts, sizes, strict=True)])


def run_sources(
    engine: Engine, task, sources: Sequence[Source], desc: str, on_result=None, **kwargs
) -> list[SourceResult]:
    """Run a core task (:func:`accumulate_source` or :func:`collect_source`) for every source."""
    return engine.map(
        task, list(sources), desc=desc, labels=[s.label for s in sources], on_result=on_result, **kwargs
    )


def sum_counts(results: Sequence[SourceResult]) -> Counts:
    total = Counts()
    for r in results:
        for k, v in r.counts.as_dict().items():
            setattr(total, k, getattr(total, k) + v)
    return total


def plan_columns(state: State, plan: Plan) -> dict[str, np.ndarray]:
    """The plan's variables computed from a state (at the state's order), configured dtypes."""
    cols: dict[str, np.ndarray] = {}
    by_column: dict[str, list] = {}
    for s in plan.statistics:
        by_column.setdefault(s.column, []).append(s)
    for key, stats in by_column.items():
        res = column_statistics(state, key, [s.stat for s in stats], plan.ddof, plan.min_count)
        for s in stats:
            cols[s.name] = np.asarray(res[s.stat.label]).astype(s.dtype)
    for c in plan.cell_statistics:
        cols[c.name] = cell_expression_values(state, c.expression, c.columns, plan.radius_km).astype(c.dtype)
    return {name: cols[name] for name in plan.variables}


def pyramid(state: State, orders: Sequence[int]) -> Iterator[State]:
    """The state at each of ``orders`` (descending from the state's order), each level the previous
    one merged to the coarser order, so that every statistic exists at every level."""
    current = state
    for k in range(state.order, min(orders, default=state.order) - 1, -1):
        if k != current.order:
            current = current.coarsen(k)
        if k in orders:
            yield current


def exact_statistics(
    cells: np.ndarray,
    values: dict[str, np.ndarray],
    weights: np.ndarray | None,
    plan: Plan,
    order: int,
    ddof: int | None = None,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Exact values of a plan's statistics and cell expressions from every assigned row:
    ``(cell_ids, {variable: array})``."""
    ddof = plan.ddof if ddof is None else ddof
    by_column: dict[str, list] = {}
    for s in plan.statistics:
        by_column.setdefault(s.column, []).append(s)
    # columns asking for the same statistics go through one call (one grouping by cell for all)
    groups: dict[tuple, list[str]] = {}
    for key, stats in by_column.items():
        groups.setdefault(tuple(s.stat for s in stats), []).append(key)
    cell_ids = None
    out: dict[str, np.ndarray] = {}
    for stats, keys in groups.items():
        if not any(s.function == "count" for s in stats):  # resolved as they are, whatever their labels
            stats = (resolve("count", label="_count"), *stats)
        cell_ids, res = cell_statistics(
            cells,
            {k: values[k] for k in keys},
            list(stats),
            weights=weights,
            ddof=ddof,
            min_count=plan.min_count,
        )
        for k in keys:
            for s in by_column[k]:
                out[s.name] = res[f"{k}_{s.stat.label}"]
    for cs in plan.cell_statistics:
        rows = {src: values[key] for src, key in cs.columns.items()}
        cell_ids, out[cs.name] = exact_cell_expression(cells, rows, cs.expression, order, plan.radius_km)
    if cell_ids is None:
        cell_ids = np.unique(np.asarray(cells, np.int64))
    return cell_ids, out


def exact_cell_expression(
    cells: np.ndarray,
    rows: Mapping[str, np.ndarray],
    expression,
    order: int,
    radius_km: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-cell values of a cell expression from every row: ``(cell_ids, values)``.

    ``rows`` maps the source text of each aggregate's row expression to its values (row order of
    ``cells``)."""
    agg = {}
    cell_ids = np.unique(np.asarray(cells, np.int64))
    for a in expression.aggregates:
        st = resolve(a.func, {"ddof": a.ddof} if a.func in ("var", "std") else None)
        cell_ids, res = cell_statistics(cells, {"v": rows[a.row.source]}, [resolve("count"), st], ddof=0)
        agg[a.key] = np.asarray(res[f"v_{st.label}"], dtype=np.float64)
    area = cell_area(order, radius_km) if expression.uses_area else None
    v = np.asarray(expression.evaluate(agg, area=area), dtype=np.float64)
    return cell_ids, (np.broadcast_to(v, cell_ids.shape).copy() if v.ndim == 0 else v)

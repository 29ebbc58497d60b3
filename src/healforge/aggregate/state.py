"""Streaming aggregation state: per cell and column, Chan/Welford moments plus a quantile sketch.

Moments per (cell, column): ``n`` valid values, ``min``, ``max``, ``dmean`` (mean minus min),
``m2`` (sum of squared deviations from the mean), and the weighted set ``wsum``, ``wdmean``
(weighted mean minus min), ``wm2``. Means are held relative to the cell's minimum, a data value,
so that combining parts only subtracts nearby data values (exact) and small offsets: values near
1e9 with unit spread keep full precision. Batches are reduced exactly (two-pass), states combine
with Chan's formulas generalised to many parts. Merging is associative and commutative up to floating-point rounding.

File format (Parquet, one row per cell, sorted by ``cell_ids``): ``cell_ids`` int64, then per
column ``{col}::n`` (int64), ``{col}::min``, ``{col}::max``, ``{col}::dmean``, ``{col}::m2``,
``{col}::wsum``, ``{col}::wdmean``, ``{col}::wm2`` (float64), ``{col}::sketch_mean`` and
``{col}::sketch_weight`` (list<float64>: the cell's t-digest centroids). Schema metadata key
``healforge_state`` holds JSON: ``format`` ("healforge-state"), ``format_version`` (1), ``order``,
``indexing_scheme`` ("nested"), ``columns``, ``lon_convention``, ``latitude``, ``delta``,
``rows_in``, ``rows_rejected``, ``healforge_version``, and ``unit_weight_columns``: columns whose
weights were all 1, for which the three weighted moments equal ``n``, ``dmean``, ``m2`` and are
not stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numba
import numpy as np
import pyarrow as pa

from healforge.aggregate import sketch as sk
from healforge.aggregate.grouping import cell_index, group_cells, group_sort, sorted_by_cell
from healforge.errors import BadInputError, OptionError
from healforge.io.storage import as_path, read_parquet_table, write_parquet_table
from healforge.pixel import check_order, to_parent

MOMENTS = ("n", "min", "max", "dmean", "m2", "wsum", "wdmean", "wm2")
STATE_KEY = b"healforge_state"
FORMAT_VERSION = 1


class StateMismatchError(BadInputError):
    """States that cannot be merged (different order, columns or conventions)."""


def _version() -> str:
    from healforge import __version__

    return __version__


@dataclass
class State:
    """Mergeable per-cell aggregation state at one HEALPix order (nested).

    ``cell_ids`` are sorted unique cells having at least one row; ``moments[col][name]`` arrays and
    ``sketches[col] = (offsets, means, weights)`` are aligned with them.
    """

    order: int
    columns: list[str]
    cell_ids: np.ndarray
    moments: dict[str, dict[str, np.ndarray]]
    sketches: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    lon_convention: str = "0_360"
    latitude: str = "spherical"
    delta: float = sk.DEFAULT_DELTA
    rows_in: int = 0
    rows_rejected: int = 0
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, order: int, columns: Sequence[str], **conv) -> State:
        z = np.empty(0, dtype=np.int64)
        moments = {c: {m: (z.copy() if m == "n" else np.empty(0)) for m in MOMENTS} for c in columns}
        sketches = {c: (np.zeros(1, dtype=np.int64), np.empty(0), np.empty(0)) for c in columns}
        return cls(check_order(order), list(columns), z, moments, sketches, **conv)

    @classmethod
    def from_batch(
        cls,
        cells: np.ndarray,
        values: dict[str, np.ndarray],
        order: int,
        weights: np.ndarray | None = None,
        **conv,
    ) -> State:
        """Exact state of one batch: rows' cells, column values (NaN = missing) and weights."""
        cells = np.asarray(cells, dtype=np.int64)
        delta = conv.get("delta", sk.DEFAULT_DELTA)
        cell_ids, inv = cell_index(cells)
        ncell = cell_ids.size
        moments, sketches = {}, {}
        shared = None
        for col, vals in values.items():
            vals = np.asarray(vals, dtype=np.float64)
            if weights is None:  # one grouping by cell for all columns, in-place sorts per cell
                if shared is None:
                    shared = group_cells(inv, ncell)
                v, offsets = sorted_by_cell(vals, *shared)
                w = np.ones(v.size)
            else:
                valid = ~np.isnan(vals)
                idx = None if valid.all() else np.flatnonzero(valid)
                ci, v = (inv, vals) if idx is None else (inv[idx], vals[idx])
                o, offsets, v = group_sort(ci, v, ncell)
                w = np.asarray(weights, dtype=np.float64)
                w = (w if idx is None else w[idx])[o]
            m = _empty_moments(ncell)
            m["n"] = np.diff(offsets)
            _batch_moments(
                offsets, v, w, m["min"], m["max"], m["dmean"], m["m2"], m["wsum"], m["wdmean"], m["wm2"]
            )
            moments[col] = m
            sketches[col] = sk.from_sorted_values(offsets, v, delta)
        state = cls(check_order(order), list(values), cell_ids, moments, sketches, **conv)
        state.rows_in = int(cells.size)
        return state

    # ------------------------------------------------------------------ combination
    def check_compatible(self, other: State, where: str = "") -> None:
        if other.order != self.order:
            raise StateMismatchError(
                f"cannot merge states of different orders: {self.order} and {other.order}{where}"
            )
        if sorted(other.columns) != sorted(self.columns):
            raise StateMismatchError(
                f"cannot merge states with different columns: {self.columns} and {other.columns}{where}"
            )
        for attr in ("latitude", "lon_convention"):
            if getattr(self, attr) != getattr(other, attr):
                raise StateMismatchError(
                    f"cannot merge states with different {attr}: {getattr(self, attr)!r} and "
                    f"{getattr(other, attr)!r}{where}"
                )

    def merge(self, *others: State) -> State:
        """A new state combining this one with ``others`` (same order, columns, conventions)."""
        return merge_states([self, *others])

    def coarsen(self, order: int) -> State:
        """The state at a coarser ``order``, merging the states of each parent's children."""
        order = check_order(order)
        if order > self.order:
            raise OptionError(f"cannot coarsen order {self.order} to finer order {order}")
        keys = to_parent(self.cell_ids, self.order, order)
        out = _reduce([self], [keys], order)
        out.rows_in, out.rows_rejected = self.rows_in, self.rows_rejected
        return out

    def with_columns(self, *others: State, order: Sequence[str] | None = None) -> State:
        """A new state with the columns of this state and ``others``: states of the same rows
        (hence the same cells), e.g. columns reduced with different weights."""
        columns = list(self.columns)
        moments, sketches = dict(self.moments), dict(self.sketches)
        for o in others:
            if not np.array_equal(o.cell_ids, self.cell_ids) or o.order != self.order:
                raise StateMismatchError("cannot join the columns of states over different cells")
            columns.extend(o.columns)
            moments.update(o.moments)
            sketches.update(o.sketches)
        if order is not None:
            columns = list(order)
        return State(
            self.order,
            columns,
            self.cell_ids,
            moments,
            sketches,
            self.lon_convention,
            self.latitude,
            self.delta,
            self.rows_in,
            self.rows_rejected,
            dict(self.extra),
        )

    def set_counts(self, rows_in: int | None = None, rows_rejected: int | None = None) -> None:
        """Record how many input rows the state saw and how many were rejected."""
        if rows_in is not None:
            self.rows_in = int(rows_in)
        if rows_rejected is not None:
            self.rows_rejected = int(rows_rejected)

    def annotate(self, **extra) -> None:
        """Add product metadata (JSON-able) saved with the state."""
        self.extra.update(extra)

    # ------------------------------------------------------------------ I/O
    def metadata(self) -> dict:
        return {
            "format": "healforge-state",
            "format_version": FORMAT_VERSION,
            "order": self.order,
            "indexing_scheme": "nested",
            "columns": list(self.columns),
            "lon_convention": self.lon_convention,
            "latitude": self.latitude,
            "delta": self.delta,
            "rows_in": int(self.rows_in),
            "rows_rejected": int(self.rows_rejected),
            "healforge_version": _version(),
            **self.extra,
        }

    def to_table(self) -> pa.Table:
        arrays = {"cell_ids": pa.array(self.cell_ids, type=pa.int64())}
        unit = []
        for c in self.columns:
            m = self.moments[c]
            if _unit_weights(m):
                unit.append(c)
            for name in MOMENTS if c not in unit else MOMENTS[:5]:
                arrays[f"{c}::{name}"] = pa.array(m[name])
            off, means, weights = self.sketches[c]
            off32 = pa.array(off.astype(np.int32)) if off[-1] < 2**31 - 1 else None
            if off32 is not None:
                arrays[f"{c}::sketch_mean"] = pa.ListArray.from_arrays(off32, pa.array(means))
                arrays[f"{c}::sketch_weight"] = pa.ListArray.from_arrays(off32, pa.array(weights))
            else:
                off64 = pa.array(off)
                arrays[f"{c}::sketch_mean"] = pa.LargeListArray.from_arrays(off64, pa.array(means))
                arrays[f"{c}::sketch_weight"] = pa.LargeListArray.from_arrays(off64, pa.array(weights))
        table = pa.table(arrays)
        meta = self.metadata()
        if unit:
            meta["unit_weight_columns"] = unit
        return table.replace_schema_metadata({STATE_KEY: json.dumps(meta).encode()})

    def save(self, path: str | os.PathLike, storage_options: dict | None = None) -> str:
        """Write the state to a Parquet file, local or URL (atomically: readers see the old file
        or the whole new one)."""
        table = self.to_table()
        # statistics only where a reader can use them (row-group pruning by cell)
        return write_parquet_table(
            table,
            path,
            storage_options,
            compression=_compression(table),
            use_dictionary=False,
            write_statistics=["cell_ids"],
        )

    @classmethod
    def from_table(cls, table: pa.Table, path: str | None = None) -> State:
        meta = (table.schema.metadata or {}).get(STATE_KEY)
        if meta is None:
            raise BadInputError("not a healforge state file (no 'healforge_state' metadata)", path=path)
        info = json.loads(meta)
        columns = info["columns"]
        moments, sketches = {}, {}
        unit = set(info.get("unit_weight_columns", ()))
        for c in columns:
            if c in unit:
                m = {name: table.column(f"{c}::{name}").to_numpy() for name in MOMENTS[:5]}
                m.update(wsum=m["n"].astype(np.float64), wdmean=m["dmean"], wm2=m["m2"])
            else:
                m = {name: table.column(f"{c}::{name}").to_numpy() for name in MOMENTS}
            moments[c] = m
            lm = table.column(f"{c}::sketch_mean").combine_chunks()
            lw = table.column(f"{c}::sketch_weight").combine_chunks()
            off = np.asarray(lm.offsets, dtype=np.int64)
            base = off[0]
            sketches[c] = (
                off - base,
                np.asarray(lm.values)[base : off[-1]],
                np.asarray(lw.values)[base : off[-1]],
            )
        known = {
            "format",
            "format_version",
            "order",
            "indexing_scheme",
            "columns",
            "lon_convention",
            "latitude",
            "delta",
            "rows_in",
            "rows_rejected",
            "healforge_version",
            "unit_weight_columns",
        }
        return cls(
            order=int(info["order"]),
            columns=list(columns),
            cell_ids=table.column("cell_ids").to_numpy(),
            moments=moments,
            sketches=sketches,
            lon_convention=info.get("lon_convention", "0_360"),
            latitude=info.get("latitude", "spherical"),
            delta=float(info.get("delta", sk.DEFAULT_DELTA)),
            rows_in=int(info.get("rows_in", 0)),
            rows_rejected=int(info.get("rows_rejected", 0)),
            extra={k: v for k, v in info.items() if k not in known},
        )

    @classmethod
    def load(cls, path: str | os.PathLike, storage_options: dict | None = None) -> State:
        """Read a state written by :meth:`save` (local or URL)."""
        target = as_path(path, storage_options)
        if not target.exists():
            raise BadInputError("state file not found", path=str(path))
        try:
            table = read_parquet_table(target)
        except Exception as exc:
            raise BadInputError(f"cannot read state file: {exc}", path=str(path)) from exc
        return cls.from_table(table, os.fspath(path))


def _unit_weights(m: dict[str, np.ndarray]) -> bool:
    """Whether a column's weighted moments equal its unweighted ones (every weight was 1), so the
    file need not hold them."""
    return bool(
        np.array_equal(m["wsum"], m["n"])
        and np.array_equal(m["wdmean"], m["dmean"], equal_nan=True)
        and np.array_equal(m["wm2"], m["m2"], equal_nan=True)
    )


def _compression(table: pa.Table) -> dict[str, str]:
    """Parquet codec per column: none for moments and centroid means (float64 data that barely
    compresses, so compressing only costs time), zstd for centroid weights (mostly 1.0: they
    shrink to almost nothing, quickly)."""
    out = {}
    for name in table.column_names:
        if name.endswith("::sketch_weight"):
            out[f"{name}.list.element"] = "zstd"
        elif name.endswith("::sketch_mean"):
            out[f"{name}.list.element"] = "none"
        else:
            out[name] = "none"
    return out


def _empty_moments(n: int) -> dict[str, np.ndarray]:
    m = {k: np.full(n, np.nan) for k in MOMENTS}
    m["n"] = np.zeros(n, dtype=np.int64)
    m["wsum"] = np.zeros(n)
    m["m2"] = np.zeros(n)
    m["wm2"] = np.zeros(n)
    return m


def _reduce(states: Sequence[State], keys: Sequence[np.ndarray], order: int) -> State:
    """Combine rows of ``states`` grouped by ``keys`` (one key array per state, cells at ``order``)."""
    first = states[0]
    all_keys = np.concatenate(keys) if keys else np.empty(0, dtype=np.int64)
    cell_ids, inv = cell_index(all_keys)
    ncell = cell_ids.size
    o = np.argsort(inv, kind="stable")
    seg = inv[o]
    starts = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if seg.size else np.empty(0, dtype=np.int64)
    moments, sketches = {}, {}
    for c in first.columns:
        cat = {m: np.concatenate([s.moments[c][m] for s in states])[o] for m in MOMENTS}
        moments[c] = _chan(cat, starts, ncell)
        sketches[c] = sk.merge(
            [st.sketches[c] for st in states], inv, o, ncell, max(st.delta for st in states)
        )
    return State(
        order=order,
        columns=list(first.columns),
        cell_ids=cell_ids,
        moments=moments,
        sketches=sketches,
        lon_convention=first.lon_convention,
        latitude=first.latitude,
        delta=max(s.delta for s in states),
        rows_in=sum(s.rows_in for s in states),
        rows_rejected=sum(s.rows_rejected for s in states),
        extra=dict(first.extra),
    )


@numba.njit(cache=True, nogil=True)
def _batch_moments(offsets, v, w, mn, mx, dmean, m2, wsum, wdmean, wm2):
    """Exact moments of each segment of values sorted within segments (two passes per segment)."""
    for s in range(offsets.size - 1):
        a = offsets[s]
        b = offsets[s + 1]
        if b == a:
            continue
        lo = v[a]
        k = b - a
        acc = 0.0
        for i in range(a, b):
            acc += v[i] - lo
        mu = acc / k
        corr = 0.0
        for i in range(a, b):
            corr += v[i] - lo - mu
        mu += corr / k
        q = 0.0
        ws = 0.0
        wacc = 0.0
        unit = True
        for i in range(a, b):
            e = v[i] - lo - mu
            q += e * e
            ws += w[i]
            wacc += w[i] * e
            unit = unit and w[i] == 1.0
        mn[s] = lo
        mx[s] = v[b - 1]
        dmean[s] = mu
        m2[s] = q
        wsum[s] = ws
        if unit:  # the weighted moments are the unweighted ones, to the bit
            wdmean[s] = mu
            wm2[s] = q
        elif ws > 0:
            wmu = mu + wacc / ws
            q = 0.0
            for i in range(a, b):
                e = v[i] - lo - wmu
                q += w[i] * e * e
            wdmean[s] = wmu
            wm2[s] = q


@numba.njit(cache=True, nogil=True)
def _combine_nb(starts, end, wt, shift, dmean, m2):
    nseg = starts.size
    W = np.zeros(nseg)
    mean = np.full(nseg, np.nan)
    M2 = np.zeros(nseg)
    for s in range(nseg):
        a = starts[s]
        b = starts[s + 1] if s + 1 < nseg else end
        tot = 0.0
        acc = 0.0
        for i in range(a, b):
            if wt[i] > 0 and not np.isnan(dmean[i]):
                tot += wt[i]
                acc += wt[i] * (shift[i] + dmean[i])
        if tot <= 0:
            continue
        mu = acc / tot
        corr = 0.0
        for i in range(a, b):
            if wt[i] > 0 and not np.isnan(dmean[i]):
                corr += wt[i] * (shift[i] + dmean[i] - mu)
        mu += corr / tot
        q = 0.0
        for i in range(a, b):
            if wt[i] > 0 and not np.isnan(dmean[i]):
                d = shift[i] + dmean[i] - mu
                q += m2[i] + wt[i] * d * d
        W[s] = tot
        mean[s] = mu
        M2[s] = q
    return W, mean, M2


def _chan(cat: dict[str, np.ndarray], starts: np.ndarray, ncell: int) -> dict[str, np.ndarray]:
    """Many-part Chan combination of moment rows already grouped into segments at ``starts``.

    Means are taken relative to the combined minimum (each part's mean is its own minimum plus
    ``dmean``; minimum differences are differences of nearby data values), in two passes.
    """
    out = _empty_moments(ncell)
    if starts.size == 0:
        return out
    n = cat["n"]
    nf = n.astype(np.float64)
    counts = np.diff(np.r_[starts, n.size])
    N = np.add.reduceat(n, starts)
    has = N > 0
    out["n"] = N.astype(np.int64)
    out["min"] = np.fmin.reduceat(cat["min"], starts)
    out["max"] = np.fmax.reduceat(cat["max"], starts)
    ref = np.repeat(np.where(has, out["min"], 0.0), counts)
    shift = np.where(nf > 0, cat["min"] - ref, 0.0)
    end = n.size
    _, out["dmean"], out["m2"] = _combine_nb(starts, end, nf, shift, cat["dmean"], cat["m2"])
    out["wsum"], out["wdmean"], out["wm2"] = _combine_nb(
        starts, end, cat["wsum"], shift, cat["wdmean"], cat["wm2"]
    )
    return out


def merge_states(states: Sequence[State]) -> State:
    """Merge states (same order, columns and conventions) into one.

    Raises
    ------
    StateMismatchError
        When the states differ in order, columns, latitude or longitude convention.
    """
    states = list(states)
    if not states:
        raise OptionError("no states to merge")
    first = states[0]
    for i, s in enumerate(states[1:], 1):
        first.check_compatible(s, where=f" (state 0 and state {i})")
    states = [s if s.columns == first.columns else _reorder(s, first.columns) for s in states]
    return _reduce(states, [s.cell_ids for s in states], first.order)


def _reorder(state: State, columns: list[str]) -> State:
    return State(
        state.order,
        list(columns),
        state.cell_ids,
        {c: state.moments[c] for c in columns},
        {c: state.sketches[c] for c in columns},
        state.lon_convention,
        state.latitude,
        state.delta,
        state.rows_in,
        state.rows_rejected,
        dict(state.extra),
    )

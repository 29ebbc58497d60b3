"""``healforge run PIPELINE.yaml``: raw input files to finished map products in one command.

Stages (see :mod:`healforge.config` for the YAML file):

1. **validate** the configuration (every key, before any data is read);
2. **accumulate**: one task per input file (run in parallel by :class:`healforge.engine.Engine`).
   Each batch is read, the quality ``filter`` applied, rows assigned to cells at the assignment
   order, statistic inputs (columns or expressions) and weights (e.g. ``1 / h_li_sigma**2``)
   evaluated, and reduced exactly into a streaming :class:`~healforge.aggregate.state.State`
   (moments + quantile sketch per cell and state column). Batch states merge into a per-file state;
2b. **resume**: with ``outputs.state``, each finished file's state is saved under
   ``{state}.parts/`` and listed in ``{state}.progress.json`` (with the file's size and
   modification stamp and the configuration sections the states depend on). A rerun with the same
   configuration skips listed files; a changed configuration is refused (``restart=True`` /
   ``--restart`` starts again). The final state merges the per-file states in input order, so a
   resumed run gives the same outputs as an uninterrupted one;
3. **pyramid**: the merged state is saved to ``outputs.state`` and coarsened order by order
   (states merge; means are never averaged), each order finalized to a map table with the
   configured variable names and dtypes;
4. **write** the Zarr store (all its orders), Parquet, GeoParquet and PNG plots (local or URL).

Statistics computed from a state: count, sum, mean, var/std (``ddof``, default 1), min, max,
median, quantile (sketch), mad, robust_std, weighted_mean and weighted_var/std (population form
``sum w (x - wmean)^2 / (sum w - ddof)``, default ``ddof`` 0). User functions need every raw value
and are refused by the runner (use ``healforge aggregate`` for exact user statistics).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge.config import (
    FUNCTIONS,
    ConfigError,
    PipelineConfig,
    Statistic,
    load_pipeline,
    validate_pipeline,
)
from healforge.engine import Engine, Progress
from healforge.errors import BadInputError, HealforgeError, OptionError

PROGRESS_FORMAT = "healforge-pipeline-progress"
PROGRESS_VERSION = 1
DEFAULT_BATCH_ROWS = 1_000_000


class PipelineStateError(HealforgeError):
    """Saved pipeline progress that does not belong to this configuration."""


# ---------------------------------------------------------------------------------------------
# Plan: which state columns (values x weights) the statistics need


@dataclass(frozen=True)
class StateColumn:
    """One column of the streaming state: the values of ``source`` weighted by ``weight``."""

    key: str
    column: str | None  # input column, or None with an expression / for row counts
    expression: Any  # expressions.RowExpression or None
    weight: Any  # expressions.RowExpression or None

    def describe(self) -> dict:
        return {
            "key": self.key,
            "column": self.column,
            "expression": self.expression.source if self.expression is not None else None,
            "weight": self.weight.source if self.weight is not None else None,
        }


def plan_state_columns(cfg: PipelineConfig) -> tuple[list[StateColumn], dict[str, str]]:
    """State columns of a pipeline and, per statistic name, the state column it reads."""
    columns: dict[tuple, StateColumn] = {}
    of_stat: dict[str, str] = {}
    for stat in cfg.statistics:
        weight = stat.weight if stat.function.startswith("weighted_") else None
        expr = stat.expression
        ident = (stat.column, expr.source if expr is not None else None, weight.source if weight else None)
        if ident not in columns:
            if stat.column is not None:
                base = stat.column
            elif expr is not None:
                base = f"expr{sum(1 for c in columns.values() if c.expression is not None)}"
            else:
                base = "_rows"
            key = base if weight is None else f"{base}@w{sum(1 for c in columns.values() if c.weight)}"
            columns[ident] = StateColumn(key, stat.column, expr, weight)
        of_stat[stat.name] = columns[ident].key
    return list(columns.values()), of_stat


def check_runnable(cfg: PipelineConfig) -> None:
    """Refuse what a streaming pipeline cannot compute (before any data is read)."""
    errors = []
    for stat in cfg.statistics:
        if stat.function not in FUNCTIONS:
            errors.append(
                (
                    f"statistics.{stat.name}.function",
                    f"user function {stat.function!r} needs every raw value and cannot be computed "
                    f"from the streaming state of a pipeline; built-in functions: {', '.join(FUNCTIONS)} "
                    "(use `healforge aggregate` for exact user statistics)",
                )
            )
        if stat.dtype.startswith("int") and stat.function != "count":
            errors.append(
                (
                    f"statistics.{stat.name}.dtype",
                    f"{stat.function} can be NaN (empty cells): use a float dtype",
                )
            )
    if errors:
        raise ConfigError(errors, cfg.source)


def config_sections(cfg: PipelineConfig, columns: list[StateColumn]) -> dict[str, Any]:
    """The parts of a configuration the accumulated states depend on (JSON-able, no credentials)."""
    a = cfg.assignment
    return {
        "inputs": [
            {
                "paths": list(s.paths),
                "format": s.format,
                "groups": list(s.groups),
                "columns": dict(s.columns),
                "options": {k: v for k, v in s.options.items()},
            }
            for s in cfg.inputs
        ],
        "filter": cfg.filter.source if cfg.filter is not None else None,
        "coordinates": {
            "lon": cfg.coordinates.lon,
            "lat": cfg.coordinates.lat,
            "geometry": cfg.coordinates.geometry,
        },
        "assignment": {
            "order": a.order,
            "mode": a.mode,
            "lon_convention": a.lon_convention,
            "latitude": a.latitude,
            "on_bad_rows": a.on_bad_rows,
        },
        "state_columns": [c.describe() for c in columns],
    }


# ---------------------------------------------------------------------------------------------
# Accumulation of one input file (a task; runs in a worker)


def _as_numpy(col) -> np.ndarray:
    if hasattr(col, "to_numpy"):
        try:
            return col.to_numpy()
        except TypeError:
            return col.to_numpy(zero_copy_only=False)
    return np.asarray(col)


def _remap_row_error(exc: BadInputError, keep: np.ndarray | None, first: int) -> BadInputError:
    """The error of a filtered batch with its row index as a row of the file."""
    if exc.row is None:
        return exc
    row = int(exc.row)
    orig = first + (int(keep[row]) if keep is not None else row)
    msg = str(exc)
    where = msg.rfind(" (file ")
    base = msg[:where] if where >= 0 else msg
    return BadInputError(base, path=exc.path, column=exc.column, row=orig, value=exc.value)


def batch_state(
    cells: np.ndarray,
    rows: np.ndarray,
    area_weight: np.ndarray | None,
    columns: Mapping[str, Any],
    plan: list[StateColumn],
    order: int,
    conv: dict,
    *,
    path: str,
    keep: np.ndarray | None,
    first: int,
):
    """Exact state of one (filtered, assigned) batch with every planned state column."""
    from healforge.aggregate.state import State

    by_weight: dict[str | None, dict[str, np.ndarray]] = {}
    weights: dict[str | None, np.ndarray | None] = {}
    n = len(next(iter(columns.values()))) if columns else 0
    for sc in plan:
        if sc.expression is not None:
            vals = np.asarray(sc.expression.evaluate(columns), dtype=np.float64)
            vals = np.broadcast_to(vals, (n,)) if vals.ndim == 0 else vals
        elif sc.column is not None:
            vals = np.asarray(_as_numpy(columns[sc.column]), dtype=np.float64)
        else:
            vals = np.ones(n)
        wkey = sc.weight.source if sc.weight is not None else None
        if wkey not in weights:
            if sc.weight is None:
                weights[wkey] = area_weight
            else:
                uw = np.asarray(sc.weight.evaluate(columns), dtype=np.float64)
                uw = np.broadcast_to(uw, (n,)) if uw.ndim == 0 else uw
                uw = uw[rows]
                weights[wkey] = uw if area_weight is None else uw * area_weight
        v = vals[rows]
        w = weights[wkey]
        if w is not None:
            bad = (~np.isfinite(w) | (w < 0)) & ~np.isnan(v)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                r = int(rows[i])
                raise BadInputError(
                    f"weight {wkey!r} gives {w[i]!r} for statistic input {sc.key!r} (weights must be "
                    "finite and >= 0; filter such rows out)",
                    path=path,
                    row=first + (int(keep[r]) if keep is not None else r),
                    value=float(w[i]),
                )
        by_weight.setdefault(wkey, {})[sc.key] = v
    parts = [
        State.from_batch(cells, vals, order, weights=weights[wkey], **conv)
        for wkey, vals in by_weight.items()
    ]
    out = parts[0]
    for p in parts[1:]:  # same rows, so the same cells: join the columns
        out.columns.extend(p.columns)
        out.moments.update(p.moments)
        out.sketches.update(p.sketches)
    out.columns = [sc.key for sc in plan]
    return out


def accumulate_file(item: tuple[int, str], cfg: PipelineConfig, plan: list[StateColumn], batch_rows: int):
    """State of one input file; returns ``(state, counts, rejected rows table or None)``."""
    from healforge.aggregate.api import _merge_tree
    from healforge.aggregate.assign import Spec, assign_batch
    from healforge.aggregate.coords import Rejects
    from healforge.aggregate.state import State

    spec_index, path = item
    spec = cfg.inputs[spec_index]
    a = cfg.assignment
    co = cfg.coordinates
    footprints = co.geometry is not None and a.mode != "points"
    aspec = Spec(
        lon=None if footprints else co.lon,
        lat=None if footprints else co.lat,
        geometry=co.geometry if footprints else None,
        mode=a.mode if footprints else "strict",
        latitude=a.latitude,
        on_bad_rows=a.on_bad_rows,
    )
    conv = {"lon_convention": a.lon_convention, "latitude": a.latitude}
    counts = {"rows_read": 0, "rows_filtered": 0, "rows_rejected": 0, "rows_assigned": 0}
    rejects = Rejects()
    pending: list[State] = []
    for first, table in spec.iter_file(path, batch_rows):
        counts["rows_read"] += table.num_rows
        columns = {name: table.column(name) for name in table.column_names}
        keep = None
        try:
            mask = cfg.filter_mask(columns)
        except KeyError as exc:
            raise BadInputError(f"filter: {exc.args[0]}", path=path) from None
        if mask is not None:
            mask = np.broadcast_to(mask, (table.num_rows,))
            keep = np.flatnonzero(mask)
            counts["rows_filtered"] += table.num_rows - keep.size
            table = table.take(pa.array(keep))
            columns = {name: table.column(name) for name in table.column_names}
        if table.num_rows == 0:
            continue
        batch_rejects = Rejects()
        try:
            _, assigned = assign_batch(table, aspec, [a.order], path=path, first_row=0, rejects=batch_rejects)
        except BadInputError as exc:
            raise _remap_row_error(exc, keep, first) from None
        for t in batch_rejects.tables:  # rows of the file, not of the filtered batch
            local = t.column("_source_row").to_numpy()
            fixed = first + (keep[local] if keep is not None else local)
            t = t.set_column(t.schema.get_field_index("_source_row"), "_source_row", pa.array(fixed))
            rejects.tables.append(t)
        asg = assigned[a.order]
        area = asg.weight if footprints and a.mode in ("fuzzy", "overlap") else None
        try:
            st = batch_state(
                asg.cell, asg.row, area, columns, plan, a.order, conv, path=path, keep=keep, first=first
            )
        except KeyError as exc:
            raise BadInputError(str(exc.args[0]), path=path) from None
        st.rows_in = table.num_rows
        counts["rows_assigned"] += int(np.unique(asg.row).size)
        pending.append(st)
        if len(pending) == 8:
            pending = [_merge_tree(pending)]
    counts["rows_rejected"] = rejects.count
    state = _merge_tree(pending) if pending else State.empty(a.order, [sc.key for sc in plan], **conv)
    state.rows_in = counts["rows_read"]
    state.rows_rejected = counts["rows_rejected"]
    rejected = pa.concat_tables(rejects.tables, promote_options="permissive") if rejects.tables else None
    return state, counts, rejected


# ---------------------------------------------------------------------------------------------
# Storage helpers (local paths or fsspec URLs)


def _fs(path: str, storage_options: Mapping[str, Any] | None):
    import fsspec

    return fsspec.core.url_to_fs(str(path), **dict(storage_options or {}))


def _is_local(path: str) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def _write_bytes(path: str, data: bytes, storage_options) -> None:
    """Write ``data`` to ``path`` atomically (temporary name, then rename) where the store allows."""
    fs, fs_path = _fs(path, storage_options)
    parent = posixpath.dirname(fs_path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    if _is_local(path):
        tmp = f"{fs_path}.tmp-{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, fs_path)
    else:  # object stores put whole objects atomically
        with fs.open(fs_path, "wb") as f:
            f.write(data)


def _read_bytes(path: str, storage_options) -> bytes | None:
    fs, fs_path = _fs(path, storage_options)
    if not fs.exists(fs_path):
        return None
    with fs.open(fs_path, "rb") as f:
        return f.read()


def _table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", use_dictionary=False)
    return buf.getvalue()


def save_state(state, path: str, storage_options=None) -> str:
    """Save a state to a local path or URL (atomically)."""
    _write_bytes(path, _table_bytes(state.to_table()), storage_options)
    return path


def load_state(path: str, storage_options=None):
    from healforge.aggregate.state import State

    data = _read_bytes(path, storage_options)
    if data is None:
        raise BadInputError("state file not found", path=path)
    return State.from_table(pq.read_table(io.BytesIO(data)), path)


def file_stamp(path: str, storage_options) -> dict[str, Any]:
    """Size and modification stamp of an input file (to notice files changed since a run)."""
    fs, fs_path = _fs(path, storage_options)
    info = fs.info(fs_path)
    stamp = None
    for key in ("mtime", "LastModified", "ETag", "last_modified", "created"):
        if info.get(key) is not None:
            stamp = str(info[key])
            break
    return {"size": int(info.get("size") or 0), "modified": stamp}


# ---------------------------------------------------------------------------------------------
# Progress of a run (resume)


class RunProgress:
    """Per-input-file progress beside the state: ``{state}.progress.json`` + ``{state}.parts/``."""

    def __init__(self, state_path: str, storage_options, sections: dict, restart: bool, quiet: bool):
        self.state_path = state_path
        self.storage_options = storage_options
        self.json_path = f"{state_path}.progress.json"
        self.parts_dir = f"{state_path}.parts"
        self.sections = sections
        self.files: dict[str, dict] = {}
        raw = _read_bytes(self.json_path, storage_options)
        if raw is None:
            return
        try:
            saved = json.loads(raw)
        except ValueError:
            saved = None
        if not isinstance(saved, dict) or saved.get("format") != PROGRESS_FORMAT:
            if not restart:
                raise PipelineStateError(
                    f"{self.json_path} is not a healforge pipeline progress file; remove it or rerun "
                    "with --restart (restart=True)"
                )
            saved = {"config": sections, "files": {}}
        changed = [k for k in sections if saved.get("config", {}).get(k) != sections[k]]
        if changed and not restart:
            raise PipelineStateError(
                f"the saved progress at {self.json_path} was made with a different configuration "
                f"(changed: {', '.join(changed)}); rerun with --restart (restart=True) to start again "
                "from scratch, or give outputs.state another path"
            )
        if changed or restart:
            if not quiet:
                what = f" (changed: {', '.join(changed)})" if changed else ""
                print(f"healforge run: starting again{what}; discarding {self.json_path}", file=sys.stderr)
            self._clear()
            return
        self.files = dict(saved.get("files", {}))

    def _clear(self) -> None:
        fs, fs_path = _fs(self.parts_dir, self.storage_options)
        if fs.exists(fs_path):
            fs.rm(fs_path, recursive=True)
        fs, fs_path = _fs(self.json_path, self.storage_options)
        if fs.exists(fs_path):
            fs.rm(fs_path)
        self.files = {}

    @staticmethod
    def part_name(path: str) -> str:
        return "part-" + hashlib.sha1(path.encode()).hexdigest()[:16]

    def done(self, path: str, stamp: dict) -> bool:
        entry = self.files.get(path)
        return entry is not None and entry.get("stamp") == stamp

    def record(self, path: str, stamp: dict, state, counts: dict, rejected: pa.Table | None) -> None:
        name = self.part_name(path)
        save_state(state, posixpath.join(self.parts_dir, f"{name}.parquet"), self.storage_options)
        if rejected is not None:
            _write_bytes(
                posixpath.join(self.parts_dir, f"{name}.rejected.parquet"),
                _table_bytes(rejected),
                self.storage_options,
            )
        self.files[path] = {"part": name, "stamp": stamp, "counts": counts, "rejected": rejected is not None}
        self._write()

    def _write(self) -> None:
        doc = {
            "format": PROGRESS_FORMAT,
            "format_version": PROGRESS_VERSION,
            "config": self.sections,
            "files": self.files,
        }
        _write_bytes(self.json_path, json.dumps(doc, indent=1).encode(), self.storage_options)

    def load(self, path: str):
        entry = self.files[path]
        state = load_state(posixpath.join(self.parts_dir, f"{entry['part']}.parquet"), self.storage_options)
        rejected = None
        if entry.get("rejected"):
            data = _read_bytes(
                posixpath.join(self.parts_dir, f"{entry['part']}.rejected.parquet"), self.storage_options
            )
            rejected = pq.read_table(io.BytesIO(data)) if data else None
        return state, dict(entry["counts"]), rejected


# ---------------------------------------------------------------------------------------------
# Finalize: state -> map table with the configured variables


def _stat_arrays(stat: Statistic, state, key: str) -> dict[str, np.ndarray]:
    from healforge.aggregate import sketch as sk

    m = state.moments[key]
    n = m["n"]
    f = stat.function
    p = stat.parameters
    out: dict[str, np.ndarray] = {}
    with np.errstate(invalid="ignore", divide="ignore"):
        if f == "count":
            return {stat.name: n}
        if f == "sum":
            v = np.where(n > 0, (m["min"] + m["dmean"]) * n, 0.0)
        elif f == "mean":
            v = m["min"] + m["dmean"]
        elif f in ("var", "std"):
            ddof = int(p.get("ddof", 1))
            v = np.where(n - ddof > 0, m["m2"] / np.maximum(n - ddof, 1), np.nan)
            v = np.sqrt(v) if f == "std" else v
        elif f in ("min", "max"):
            v = m[f]
        elif f in ("median", "quantile", "mad", "robust_std"):
            off, means, weights = state.sketches[key]
            if f == "quantile":
                q = p["q"]
                qs = [float(x) for x in (q if isinstance(q, list | tuple) else [q])]
            else:
                qs = [0.5]
            qv = sk.quantiles(off, means, weights, m["min"], m["max"], qs)
            if f in ("median", "quantile"):
                for i, name in enumerate(stat.output_names):
                    out[name] = np.where(n > 0, qv[:, i], np.nan)
                return out
            mad = sk.mad(off, means, weights, qv[:, 0])
            v = mad if f == "mad" else 1.4826 * mad
        elif f == "weighted_mean":
            v = np.where(m["wsum"] > 0, m["min"] + m["wdmean"], np.nan)
        elif f in ("weighted_var", "weighted_std"):
            ddof = int(p.get("ddof", 0))
            v = np.where(m["wsum"] - ddof > 0, m["wm2"] / (m["wsum"] - ddof), np.nan)
            v = np.sqrt(v) if f == "weighted_std" else v
        else:  # pragma: no cover - refused by check_runnable
            raise OptionError(f"statistic {f!r} is not available from a state")
    return {stat.name: np.where(n > 0, v, np.nan)}


def finalize_map(
    state, cfg: PipelineConfig, of_stat: dict[str, str], extra_meta: dict | None = None
) -> pa.Table:
    """Map table of a state at its order: one column per configured variable, configured dtype."""
    from healforge.maps.table import make_map_table

    cols: dict[str, np.ndarray] = {}
    for stat in cfg.statistics:
        for name, arr in _stat_arrays(stat, state, of_stat[stat.name]).items():
            cols[name] = np.asarray(arr).astype(stat.dtype)
    sources = sorted({s.column for s in cfg.statistics if s.column})
    meta = {
        "pipeline": cfg.name,
        "functions": {s.name: s.function for s in cfg.statistics},
        "source": "pipeline",
        **(extra_meta or {}),
    }
    return make_map_table(
        state.cell_ids,
        cols,
        state.order,
        lon_convention=state.lon_convention,
        latitude=state.latitude,
        statistics=sorted({s.function for s in cfg.statistics}),
        source_columns=sources,
        **meta,
    )


# ---------------------------------------------------------------------------------------------
# The runner


def _load_config(path_or_config) -> PipelineConfig:
    if isinstance(path_or_config, PipelineConfig):
        return path_or_config
    if isinstance(path_or_config, Mapping):
        return validate_pipeline(dict(path_or_config), base_dir=os.getcwd(), source="<pipeline>")
    return load_pipeline(path_or_config)


def run_pipeline(
    path_or_config,
    *,
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
    restart: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_files: int | None = None,
    map_hook=None,
    product_metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Run a pipeline (a YAML path, a parsed dict or a :class:`~healforge.config.PipelineConfig`).

    Parameters
    ----------
    engine, workers, scheduler, synchronous, quiet
        How input files are processed in parallel (see :class:`~healforge.engine.Engine`).
    restart
        Discard saved progress (also when the configuration changed) and start again.
    batch_rows
        Rows per read batch.
    max_files
        Stop after accumulating this many new files (progress saved, no outputs written); for
        splitting long runs into sessions and for tests.
    map_hook
        Applied to every finalized map table before it is written (front ends such as zagg
        files derive their own variables from the configured statistics).
    product_metadata
        Extra entries of the Zarr store's root ``healforge`` attribute.

    Returns
    -------
    dict
        Summary: ``files``, ``files_skipped`` (resumed), ``rows_*`` counts, ``orders``, ``outputs``
        and ``complete`` (False when stopped by ``max_files``).

    Raises
    ------
    ConfigError
        Invalid configuration (raised before any data is read).
    PipelineStateError
        Saved progress made with another configuration (without ``restart``).
    """
    cfg = _load_config(path_or_config)
    check_runnable(cfg)
    plan, of_stat = plan_state_columns(cfg)
    sections = config_sections(cfg, plan)
    out = cfg.outputs
    so = out.storage_options
    own_engine = engine is None
    engine = engine or Engine(workers=workers, scheduler=scheduler, synchronous=synchronous, quiet=quiet)
    quiet = engine.quiet

    # input files (listing only), in configuration order
    items: list[tuple[int, str]] = []
    seen = set()
    for i, spec in enumerate(cfg.inputs):
        for path in spec.files():
            if path not in seen:
                seen.add(path)
                items.append((i, path))
    stamps = {path: file_stamp(path, cfg.inputs[i].storage_options) for i, path in items}

    progress = RunProgress(out.state, so, sections, restart, quiet) if out.state else None
    todo = [it for it in items if progress is None or not progress.done(it[1], stamps[it[1]])]
    skipped = len(items) - len(todo)
    if progress is not None and skipped and not quiet:
        print(
            f"healforge run: resuming, {skipped} of {len(items)} input file(s) already accumulated",
            file=sys.stderr,
        )
    if max_files is not None:
        todo = todo[: max(0, int(max_files))]

    results: dict[str, tuple] = {}

    def on_result(i: int, result) -> None:
        path = todo[i][1]
        if progress is not None:
            progress.record(path, stamps[path], *result)
        results[path] = result

    try:
        engine.map(
            accumulate_file,
            todo,
            desc="accumulate",
            labels=[p for _, p in todo],
            on_result=on_result,
            cfg=cfg,
            plan=plan,
            batch_rows=batch_rows,
        )
    finally:
        if own_engine:
            engine.close()

    summary: dict[str, Any] = {
        "files": len(items),
        "files_skipped": skipped,
        "files_accumulated": len(results),
        "complete": False,
        "outputs": [],
    }
    for path in (p for _, p in items):
        if path not in results and progress is not None and path in progress.files:
            results[path] = progress.load(path)
    if len(results) < len(items):
        left = len(items) - len(results)
        if not quiet:
            print(
                f"healforge run: stopped with {left} input file(s) left; rerun to continue", file=sys.stderr
            )
        return summary

    # the final state: per-file states merged in input order (same result after a resume)
    from healforge.aggregate.api import _merge_tree

    ordered = [results[p] for _, p in items]
    state = _merge_tree([r[0] for r in ordered])
    counts = {
        k: sum(r[1][k] for r in ordered)
        for k in ("rows_read", "rows_filtered", "rows_rejected", "rows_assigned")
    }
    summary.update(counts)
    state.rows_in, state.rows_rejected = counts["rows_read"], counts["rows_rejected"]
    state.extra = {"pipeline": cfg.name, "state_columns": [c.describe() for c in plan]}
    if out.state:
        save_state(state, out.state, so)
        summary["outputs"].append(out.state)
    rejected = [r[2] for r in ordered if r[2] is not None]
    if cfg.assignment.on_bad_rows == "quarantine":
        target = _quarantine_path(cfg)
        if rejected:
            _write_bytes(target, _table_bytes(pa.concat_tables(rejected, promote_options="permissive")), so)
            summary["outputs"].append(target)
            if not quiet:
                print(
                    f"healforge run: {counts['rows_rejected']} bad row(s) quarantined to {target}",
                    file=sys.stderr,
                )

    # pyramid: coarsen state order by order (merging), finalize each needed order
    # one level at a time, so that a map at order k does not depend on which orders were asked for
    needed = set(out.orders)
    orders = range(cfg.assignment.order, min(needed, default=cfg.assignment.order) - 1, -1)
    extra_meta = {
        "inputs": [p for _, p in items],
        "filter": cfg.filter.source if cfg.filter is not None else None,
        **counts,
    }
    maps: dict[int, pa.Table] = {}
    current = state
    with Progress(len(needed), "pyramid", quiet=quiet, unit="order") as bar:
        for k in orders:
            if k != current.order:
                current = current.coarsen(k)
            if k in needed:
                maps[k] = finalize_map(current, cfg, of_stat, extra_meta)
                if map_hook is not None:
                    maps[k] = map_hook(maps[k])
                bar.update()
    summary["orders"] = sorted(maps)
    summary["cells"] = {k: t.num_rows for k, t in maps.items()}

    n_out = sum(1 for x in (out.zarr, out.parquet, out.geoparquet) if x) + len(out.plots)
    with Progress(n_out, "write", quiet=quiet, unit="output") as bar:
        if out.zarr:
            from healforge.maps.zarr_store import write_zarr

            write_zarr(
                {k: maps[k] for k in out.zarr.orders},
                out.zarr.path,
                chunk_cells=out.zarr.chunk_cells,
                storage_options=so or None,
                metadata={"inputs": extra_meta["inputs"], "pipeline": cfg.name, **(product_metadata or {})},
            )
            summary["outputs"].append(out.zarr.path)
            bar.update()
        if out.parquet:
            from healforge.maps.parquet import write_parquet

            orders_p = out.parquet.orders
            target = maps[orders_p[0]] if len(orders_p) == 1 else {k: maps[k] for k in orders_p}
            write_parquet(target, out.parquet.path, storage_options=so or None)
            summary["outputs"].append(out.parquet.path)
            bar.update()
        if out.geoparquet:
            from healforge.maps.geoparquet import write_geoparquet

            g = out.geoparquet
            if _is_local(g.path):
                os.makedirs(os.path.dirname(os.path.abspath(g.path.removeprefix("file://"))), exist_ok=True)
            write_geoparquet(maps[g.order], g.path, step=g.edge_points, storage_options=so or None)
            summary["outputs"].append(g.path)
            bar.update()
        for plot in out.plots:
            _plot(maps[plot.order], plot, so)
            summary["outputs"].append(plot.path)
            bar.update()
    summary["complete"] = True
    return summary


def _quarantine_path(cfg: PipelineConfig) -> str:
    out = cfg.outputs
    for base in (out.state, out.zarr and out.zarr.path, out.parquet and out.parquet.path):
        if base:
            return f"{str(base).rstrip('/')}.quarantine.parquet"
    base = out.geoparquet.path if out.geoparquet else out.plots[0].path
    return f"{base}.quarantine.parquet"


def _plot(table: pa.Table, plot, storage_options) -> None:
    import matplotlib.pyplot as plt

    from healforge.maps.plot import plot_map

    kwargs = dict(
        projection=plot.projection,
        center=plot.center,
        cmap=plot.cmap,
        vrange=plot.range,
        bounding_lat=plot.bounding_lat,
        width=plot.width,
    )
    if _is_local(plot.path):
        path = plot.path.removeprefix("file://")
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        plot_map(table, plot.variable, out=path, **kwargs)
        plt.close("all")
        return
    fig = plot_map(table, plot.variable, out=None, **kwargs)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150)
    plt.close(fig)
    _write_bytes(plot.path, buf.getvalue(), storage_options)

"""``healforge run PIPELINE.yaml``: raw input files to finished map products in one command.

Stages (see :mod:`healforge.run` for the YAML file); this module is the run driver (per-input
resume, outputs) on top of the one aggregation core:

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

The plan and the per-file work are those of the CLI commands (:func:`healforge.run.to_plan`,
:func:`healforge.aggregate.core.accumulate_source`); statistics use the one vocabulary of
:mod:`healforge.aggregate.statistics`. User functions need every raw value: a streaming run refuses
them. An **exact run** (``exact:`` key, ``--exact``; :mod:`healforge.run.exact`) replaces stages 2-3:
rows are shuffled by shard through a work directory and every order is computed from the rows
(:mod:`healforge.aggregate.shuffle`), user functions included; stage 4 is the same.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import sys
from collections.abc import Mapping
from functools import partial
from typing import Any

import pyarrow as pa

from healforge.aggregate.core import (
    Counts,
    SourceResult,
    plan_columns,
    pyramid,
    sum_counts,
)
from healforge.aggregate.plan import Plan
from healforge.engine import Engine, Progress, owned_engine
from healforge.errors import HealforgeError, OptionError
from healforge.io import storage
from healforge.io.storage import as_path, atomic_write_bytes, filesystem_of, is_local, write_parquet_table
from healforge.run import PipelineConfig, load_pipeline, to_plan, validate_pipeline
from healforge.run.exact import exact_options, map_table, run_shuffled
from healforge.run.streaming import accumulate_part, finish_on_worker, merge_parts, read_rejected
from healforge.run.validate import check_runnable

PROGRESS_FORMAT = "healforge-pipeline-progress"
PROGRESS_VERSION = 2
DEFAULT_BATCH_ROWS = 1_000_000


class PipelineStateError(HealforgeError):
    """Saved pipeline progress that does not belong to this configuration."""


def config_sections(cfg: PipelineConfig, plan: Plan) -> dict[str, Any]:
    """The parts of a configuration the accumulated states depend on (JSON-able, no credentials)."""
    return {
        "inputs": [
            {
                "paths": list(s.paths),
                "format": s.format,
                "groups": list(s.groups),
                "columns": dict(s.columns),
                "options": dict(s.options),
            }
            for s in cfg.inputs
        ],
        **plan.describe(),
    }


# ---------------------------------------------------------------------------------------------
# Storage helpers (local paths or fsspec URLs)


def _fs(path: str, storage_options: Mapping[str, Any] | None):
    return filesystem_of(as_path(path, dict(storage_options or {}) or None))


def _write_bytes(path: str, data: bytes, storage_options) -> None:
    """Write ``data`` to ``path`` atomically (readers see the old file or the whole new one)."""
    atomic_write_bytes(as_path(path, dict(storage_options or {}) or None), data)


def _read_bytes(path: str, storage_options) -> bytes | None:
    fs, fs_path = _fs(path, storage_options)
    if not fs.exists(fs_path):
        return None
    with fs.open(fs_path, "rb") as f:
        return f.read()


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

    def part_path(self, path: str) -> str:
        """Where the state of input ``path`` is saved."""
        return posixpath.join(self.parts_dir, f"{self.part_name(path)}.parquet")

    def record(self, path: str, stamp: dict, counts: dict, rejected: bool) -> None:
        """List input ``path`` as accumulated (its state saved at :meth:`part_path`)."""
        self.files[path] = {
            "part": self.part_name(path),
            "stamp": stamp,
            "counts": counts,
            "rejected": rejected,
        }
        self._write()

    def _write(self) -> None:
        doc = {
            "format": PROGRESS_FORMAT,
            "format_version": PROGRESS_VERSION,
            "config": self.sections,
            "files": self.files,
        }
        _write_bytes(self.json_path, json.dumps(doc, indent=1).encode(), self.storage_options)

    def result(self, path: str) -> dict:
        """The counts of accumulated input ``path`` and whether rows were rejected."""
        entry = self.files[path]
        return {"counts": dict(entry["counts"]), "rejected": bool(entry.get("rejected"))}


# ---------------------------------------------------------------------------------------------
# Finalize: state -> map table with the configured variables


def finalize_map(state, cfg: PipelineConfig, plan: Plan, extra_meta: dict | None = None) -> pa.Table:
    """Map table of a state at its order: one column per configured variable, configured dtype."""
    conv = {"lon_convention": state.lon_convention, "latitude": state.latitude}
    return map_table(state.cell_ids, plan_columns(state, plan), state.order, conv, cfg, extra_meta)


# ---------------------------------------------------------------------------------------------
# The runner


def _load_config(path_or_config, exact: bool | None = None) -> PipelineConfig:
    if isinstance(path_or_config, PipelineConfig):
        return path_or_config
    if isinstance(path_or_config, Mapping):
        return validate_pipeline(
            dict(path_or_config), base_dir=os.getcwd(), source="<pipeline>", exact_override=exact
        )
    return load_pipeline(path_or_config, exact=exact)


def run_pipeline(
    path_or_config,
    *,
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
    wait_workers: float | None = None,
    processes: bool = False,
    restart: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    max_files: int | None = None,
    map_hook=None,
    product_metadata: Mapping[str, Any] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    exact: bool | None = None,
    work_dir: str | None = None,
    shard_order: int | None = None,
) -> dict[str, Any]:
    """Run a pipeline (a YAML path, a parsed dict or a :class:`~healforge.run.PipelineConfig`).

    Parameters
    ----------
    engine, workers, scheduler, synchronous, quiet, wait_workers, processes
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
    storage_options
        fsspec options for the inputs and outputs whose configuration gives none (the CLI's
        ``--storage-options``).
    exact, work_dir, shard_order
        Exact statistics at scale instead of the streaming state (``exact``, default: the
        configuration's ``exact`` key): rows shuffled by shard through ``work_dir`` (default
        ``exact.work_dir``, else beside the first output) and every order computed from the rows
        (:mod:`healforge.aggregate.shuffle`); user functions are allowed. A killed run resumes
        from the work directory, which is removed at the end.

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
    cfg = _load_config(path_or_config, exact).with_storage_options(storage_options)
    shuffled = exact_options(cfg, exact, work_dir, shard_order)
    check_runnable(cfg, exact=shuffled is not None)
    plan = to_plan(cfg)
    quiet = engine.quiet if engine is not None else quiet
    if shuffled is not None:
        if max_files is not None:
            raise OptionError(
                "max_files applies to streaming runs only (an exact run resumes from its work_dir)"
            )
        with owned_engine(engine, workers, scheduler, synchronous, quiet, wait_workers, processes) as eng:
            summary, maps, rejected = run_shuffled(cfg, plan, eng, shuffled, batch_rows)
        product_metadata = {**(product_metadata or {}), "exact": True, "shard_order": summary["shard_order"]}
        return _publish(cfg, plan, maps, rejected, summary, quiet, product_metadata, map_hook)
    with owned_engine(engine, workers, scheduler, synchronous, quiet, wait_workers, processes) as eng:
        return _stream(cfg, plan, eng, restart, batch_rows, max_files, map_hook, product_metadata)


def _publish(cfg, plan: Plan, maps, rejected, summary: dict, quiet: bool, product_metadata, map_hook) -> dict:
    """Write a run's maps (through ``map_hook``), its quarantined rows and its other outputs."""
    if map_hook is not None:
        maps = {k: map_hook(t) for k, t in maps.items()}
    _write_quarantine(cfg, rejected, summary, quiet)
    summary["orders"] = sorted(maps)
    summary["cells"] = {k: t.num_rows for k, t in maps.items()}
    _write_outputs(cfg, maps, summary, quiet, product_metadata, [s.path for s in plan.sources])
    summary["complete"] = True
    return summary


def _stream(cfg, plan: Plan, eng: Engine, restart, batch_rows, max_files, map_hook, product_metadata) -> dict:
    """A streaming run: per-file states saved by their tasks (with per-file resume), merged on
    the workers, and the maps made and written by one more task; the client keeps only counts."""
    so = cfg.outputs.storage_options
    work = f"{cfg.outputs.base}.work"
    summary, parts, rejected = _accumulate(cfg, plan, eng, restart, batch_rows, max_files, work)
    if parts is None:  # stopped by max_files
        return summary
    merged = merge_parts(eng, parts, posixpath.join(work, "merge"), so)
    finish = partial(_finish_state, cfg=cfg, plan=plan, summary=summary, quiet=eng.quiet)
    summary = finish_on_worker(
        eng, finish, merged, so, rejected=rejected, product_metadata=product_metadata, map_hook=map_hook
    )
    storage.rmtree(as_path(work, so or None))
    return summary


def _finish_state(state, cfg, plan: Plan, summary: dict, quiet, rejected, product_metadata, map_hook) -> dict:
    """The merged state of a streaming run saved (``outputs.state``) and made into its maps and
    outputs (a worker's task)."""
    out = cfg.outputs
    state.set_counts(rows_in=summary["rows_read"], rows_rejected=summary["rows_rejected"])
    state.annotate(pipeline=cfg.name, state_columns=[c.describe() for c in plan.state_columns])
    if out.state:
        state.save(out.state, out.storage_options)
        summary["outputs"].append(out.state)
    maps = _pyramid(state, cfg, plan, summary, quiet)
    rejected_rows = read_rejected(rejected, out.storage_options)
    return _publish(cfg, plan, maps, rejected_rows, summary, quiet, product_metadata, map_hook)


def _accumulate(cfg, plan, eng: Engine, restart, batch_rows, max_files, work: str):
    """A streaming run's accumulation (with per-file resume); returns the summary, the saved
    state of every input in order (``None`` when stopped by ``max_files``) and those of them
    with rejected rows."""
    quiet = eng.quiet
    sections = config_sections(cfg, plan)
    out = cfg.outputs
    so = out.storage_options
    # input files (listing only), in configuration order
    paths = [s.path for s in plan.sources]
    stamps = {s.path: file_stamp(s.path, s.storage_options) for s in plan.sources}
    progress = RunProgress(out.state, so, sections, restart, quiet) if out.state else None
    todo = [s for s in plan.sources if progress is None or not progress.done(s.path, stamps[s.path])]
    skipped = len(paths) - len(todo)
    if progress is not None and skipped and not quiet:
        print(
            f"healforge run: resuming, {skipped} of {len(paths)} input file(s) already accumulated",
            file=sys.stderr,
        )
    if max_files is not None:
        todo = todo[: max(0, int(max_files))]

    results: dict[str, dict] = {}

    def part_of(path: str) -> str:
        own = posixpath.join(work, f"{RunProgress.part_name(path)}.parquet")
        return progress.part_path(path) if progress is not None else own

    def on_result(i: int, result: dict) -> None:
        path = todo[i].path
        if progress is not None:
            progress.record(path, stamps[path], result["counts"], result["rejected"])
        results[path] = result

    eng.map(
        accumulate_part,
        [(s, part_of(s.path)) for s in todo],
        "accumulate",
        labels=[s.label for s in todo],
        on_result=on_result,
        plan=plan,
        batch_rows=batch_rows,
        storage_options=so,
    )

    summary: dict[str, Any] = {
        "files": len(paths),
        "files_skipped": skipped,
        "files_accumulated": len(results),
        "complete": False,
        "outputs": [],
    }
    for path in paths:
        if path not in results and progress is not None and path in progress.files:
            results[path] = progress.result(path)
    if len(results) < len(paths):
        left = len(paths) - len(results)
        if not quiet:
            print(
                f"healforge run: stopped with {left} input file(s) left; rerun to continue", file=sys.stderr
            )
        return summary, None, []
    # per-file states merged in input order (the same result after a resume)
    summary.update(sum_counts([SourceResult(None, _counts(results[p]["counts"])) for p in paths]).as_dict())
    return summary, [part_of(p) for p in paths], [part_of(p) for p in paths if results[p]["rejected"]]


def _pyramid(state, cfg: PipelineConfig, plan: Plan, summary: dict, quiet: bool) -> dict[int, pa.Table]:
    """The map tables of a streaming run: each order the previous one merged (means are never
    averaged), so that a map at order k does not depend on which orders were asked for."""
    needed = set(cfg.outputs.orders)
    extra_meta = {
        "inputs": [s.path for s in plan.sources],
        "filter": cfg.filter.source if cfg.filter is not None else None,
        **{k: summary[k] for k in Counts().as_dict()},
        **cfg.fills.describe(),
    }
    maps: dict[int, pa.Table] = {}
    with Progress(len(needed), "pyramid", quiet=quiet, unit="order") as bar:
        for level in pyramid(state, needed):
            maps[level.order] = finalize_map(level, cfg, plan, extra_meta)
            bar.update()
    return maps


def _write_quarantine(cfg: PipelineConfig, rejected: list[pa.Table], summary: dict, quiet: bool) -> None:
    if cfg.assignment.on_bad_rows != "quarantine" or not rejected:
        return
    target = f"{cfg.outputs.base}.quarantine.parquet"
    table = pa.concat_tables(rejected, promote_options="permissive")
    write_parquet_table(table, target, cfg.outputs.storage_options, compression="zstd")
    summary["outputs"].append(target)
    if not quiet:
        print(
            f"healforge run: {summary['rows_rejected']} bad row(s) quarantined to {target}", file=sys.stderr
        )


def _write_outputs(
    cfg: PipelineConfig, maps: dict[int, pa.Table], summary: dict, quiet: bool, product_metadata, inputs: list
) -> None:
    """Write the Zarr store, Parquet, GeoParquet and plots of a run (adding them to the summary)."""
    out = cfg.outputs
    so = out.storage_options
    n_out = sum(1 for x in (out.zarr, out.parquet, out.geoparquet) if x) + len(out.plots)
    with Progress(n_out, "write", quiet=quiet, unit="output") as bar:
        if out.zarr:
            from healforge.maps.zarr_store import write_zarr

            write_zarr(
                {k: maps[k] for k in out.zarr.orders},
                out.zarr.path,
                chunk_cells=out.zarr.chunk_cells,
                storage_options=so or None,
                metadata={"inputs": inputs, "pipeline": cfg.name, **(product_metadata or {})},
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
            if is_local(g.path):
                os.makedirs(os.path.dirname(os.path.abspath(g.path.removeprefix("file://"))), exist_ok=True)
            write_geoparquet(maps[g.order], g.path, step=g.edge_points, storage_options=so or None)
            summary["outputs"].append(g.path)
            bar.update()
        for plot in out.plots:
            _plot(maps[plot.order], plot, so)
            summary["outputs"].append(plot.path)
            bar.update()


def _counts(d: Mapping[str, int]):
    return Counts(**{k: int(d.get(k, 0)) for k in Counts().as_dict()})


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
        frame=plot.frame,
        scale=plot.scale,
        extent=plot.extent,
        graticule=plot.graticule,
    )
    if is_local(plot.path):
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

"""Running a zagg pipeline file through the pipeline runner: streaming (default) or exact (rows
shuffled by shard, :mod:`healforge.aggregate.shuffle`)."""

from __future__ import annotations

import math
import os
import tempfile
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.engine import Engine, owned_engine
from healforge.maps.table import map_metadata, with_metadata
from healforge.run import PipelineConfig, validate_pipeline
from healforge.run.runner import run_pipeline
from healforge.zagg.translate import ZaggPlan, load


def morton_of(cells: np.ndarray, order: int) -> np.ndarray:
    """mortie's packed morton word (uint64) of nested cells at ``order`` (zagg's ``morton``)."""
    import mortie

    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return np.empty(0, np.uint64)
    normed = cells & ((1 << (2 * order)) - 1)
    return np.asarray(mortie.norm2mort(normed, cells >> (2 * order), order), dtype=np.uint64)


def runnable(plan: ZaggPlan) -> PipelineConfig:
    """The validated healforge configuration of a plan (zagg's cell expressions as the core's
    ``expression:`` statistics)."""
    return validate_pipeline(
        plan.pipeline, base_dir=os.path.dirname(os.path.abspath(plan.source)), source=plan.source
    )


def finish_map(table: pa.Table, plan: ZaggPlan, cfg: PipelineConfig) -> pa.Table:
    """A finalized map table with zagg's variables: numpy's NaN propagation applied, zagg dtypes
    and fill values, the morton coordinate; helper statistics dropped."""
    meta = map_metadata(table)
    order = int(meta["order"])
    cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    cells = {s.name: s.cell.source for s in cfg.statistics if s.cell is not None}
    out: dict[str, np.ndarray] = {"cell_ids": cols["cell_ids"]}
    if plan.morton is not None:
        out["morton"] = morton_of(cols["cell_ids"], order)
    fills, attrs = {}, {}
    for o in plan.outputs:
        v = cols[o.name]
        if o.nan_guard is not None:  # numpy's min/mean/... of a cell holding a NaN is NaN
            valid, rows = (cols[g] for g in o.nan_guard)
            v = np.where(valid < rows, np.nan, v.astype(np.float64))
        dtype = np.dtype(o.dtype)
        if dtype.kind in "iub":
            v = np.where(np.isnan(v), o.fill_value, v) if v.dtype.kind == "f" else v
        out[o.name] = np.asarray(v).astype(dtype)
        if not (isinstance(o.fill_value, float) and math.isnan(o.fill_value)):
            fills[o.name] = o.fill_value
        if o.attrs:
            attrs[o.name] = o.attrs
    if plan.morton is not None:
        attrs["morton"] = {"long_name": "mortie morton index (packed uint64 word)"}
        fills["morton"] = plan.morton["fill_value"]
    meta.update(
        {
            "variables_dtypes": {o.name: o.dtype for o in plan.outputs},
            "variable_attrs": attrs,
            "fill_values": fills,
            "zagg": plan.conventions,
            "functions": {
                o.name: cells.get(o.name, meta.get("functions", {}).get(o.name)) for o in plan.outputs
            },
        }
    )
    return with_metadata(pa.table({k: pa.array(v) for k, v in out.items()}), meta)


def run_zagg(
    path_or_plan: str | ZaggPlan,
    *,
    inputs: list[str] | None = None,
    store: str | None = None,
    exact: bool | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
    wait_workers: float | None = None,
    processes: bool = False,
    batch_rows: int = 1_000_000,
    work_dir: str | None = None,
) -> dict[str, Any]:
    """Run a zagg pipeline file (or a translated :class:`ZaggPlan`); returns the run summary.

    ``inputs`` (granules or a granule catalog JSON) and ``store`` override the file's ``catalog``
    and ``output.store``; ``exact`` overrides its ``exact`` key. An exact run shards at the
    plan's shard order through ``work_dir`` (default: ``{store}.work`` beside the store; a local
    temporary folder for a URL store on a local cluster), which a killed run resumes from.
    """
    plan = path_or_plan
    if not isinstance(plan, ZaggPlan):
        plan = load(str(path_or_plan), inputs=inputs, store=store, exact=exact)
    cfg = runnable(plan)
    product = {"zagg": plan.conventions, "zagg_config": plan.source}
    if plan.exact and work_dir is None:
        store_path = plan.store.rstrip("/")
        on_cluster = bool(scheduler or (engine is not None and engine.scheduler))
        local_scratch = "://" in store_path and not on_cluster  # workers on other hosts need the URL
        work_dir = tempfile.mkdtemp(prefix="healforge-zagg-") if local_scratch else f"{store_path}.work"
    with owned_engine(engine, workers, scheduler, synchronous, quiet, wait_workers, processes) as eng:
        return run_pipeline(
            cfg,
            engine=eng,
            batch_rows=batch_rows,
            map_hook=lambda t: finish_map(t, plan, cfg),
            product_metadata=product,
            exact=plan.exact,
            work_dir=work_dir if plan.exact else None,  # a streaming run needs none
            shard_order=plan.shard_order if plan.exact else None,
        )

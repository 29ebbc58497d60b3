"""The exact run of a pipeline (``exact:`` key, ``healforge run --exact``): every order computed
from the rows shuffled by shard (:mod:`healforge.aggregate.shuffle`) instead of the streaming
state; and the map table of a run's variables, shared by both runs."""

from __future__ import annotations

from typing import Any

import numpy as np

from healforge.aggregate.plan import Plan
from healforge.aggregate.shuffle import shuffle_statistics
from healforge.engine import Engine
from healforge.errors import OptionError
from healforge.run.schema import Exact, PipelineConfig


def exact_options(
    cfg: PipelineConfig, exact: bool | None, work_dir: str | None, shard_order: int | None
) -> Exact | None:
    """The exact-run options (:class:`~healforge.run.schema.Exact`) of a run, ``None`` for a
    streaming run: the configuration's ``exact`` key overridden by the arguments."""
    base = cfg.exact
    if not (base is not None if exact is None else exact):
        if work_dir is not None or shard_order is not None:
            raise OptionError(
                "a work directory and a shard order apply to exact runs (--exact or the exact key)"
            )
        return None
    base = base or Exact()
    return Exact(work_dir or base.work_dir, base.shard_order if shard_order is None else shard_order)


def run_shuffled(cfg: PipelineConfig, plan: Plan, eng: Engine, opts: Exact, batch_rows: int):
    """An exact run: every order computed from the rows shuffled by shard; returns the summary,
    the map tables by order and the rejected rows."""
    orders = cfg.outputs.orders or [cfg.assignment.order]
    so = cfg.outputs.storage_options
    work = opts.work_dir or f"{cfg.outputs.base}.work"
    res = shuffle_statistics(
        eng,
        plan,
        orders,
        work,
        shard_order=opts.shard_order,
        batch_rows=batch_rows,
        storage_options=so or None,
    )
    paths = [s.path for s in plan.sources]
    counts = res.counts.as_dict()
    summary: dict[str, Any] = {
        "files": len(paths),
        "files_skipped": 0,
        "files_accumulated": len(paths),
        "complete": False,
        "outputs": [],
        "mode": "exact",
        "shard_order": res.shard_order,
        **counts,
    }
    extra_meta = {
        "inputs": paths,
        "filter": cfg.filter.source if cfg.filter is not None else None,
        "exact": True,
        "shard_order": res.shard_order,
        **counts,
        **cfg.fills.describe(),
    }
    conv = plan.assignment.conventions()
    dtypes = {s.name: s.dtype for s in (*plan.statistics, *plan.cell_statistics)}
    maps = {}
    for k, (cell_ids, cols) in res.maps.items():
        cols = {name: np.asarray(v).astype(dtypes[name]) for name, v in cols.items()}
        maps[k] = map_table(cell_ids, cols, k, conv, cfg, extra_meta)
    return summary, maps, list(res.rejects.tables)


def map_table(cell_ids, cols: dict, order: int, conv: dict, cfg: PipelineConfig, extra_meta: dict | None):
    """Map table of the configured variables ``cols`` of cells ``cell_ids`` at ``order``."""
    from healforge.maps.table import make_map_table

    sources = sorted({s.column for s in cfg.statistics if s.column})
    meta = {
        "pipeline": cfg.name,
        "functions": {s.name: s.function for s in cfg.statistics},
        "source": "pipeline",
        **(extra_meta or {}),
    }
    cells = {s.name: s.cell.source for s in cfg.statistics if s.cell is not None}
    if cells:
        meta["cell_expressions"] = cells
    return make_map_table(
        cell_ids,
        cols,
        order,
        **conv,
        statistics=sorted({s.function for s in cfg.statistics}),
        source_columns=sources,
        **meta,
    )

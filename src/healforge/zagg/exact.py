"""Exact per-cell statistics of a zagg file at scale: rows shuffled by shard, one shard per task.

zagg computes exact statistics because each worker holds every point of its shard. healforge does
the same with the catalog import's machinery:

1. **prepare** (one task per granule): read, filter, convert latitudes to authalic and write the
   needed columns to a Parquet file (``_lon``, ``_lat`` + statistic inputs);
2. **map / split / reduce** (:mod:`healforge.catalog.build.stages`): histogram at the shard order,
   every non-empty shard pixel one destination, rows split and gathered into one Parquet file per
   shard, sorted by ``_healpix_29``;
3. **statistics** (one task per shard, so memory is bounded by the largest shard): exact
   statistics per cell with :func:`healforge.aggregate.kernels.cell_statistics` at every pyramid
   order (all at or finer than the shard order, so each cell lies in one shard);
4. **write**: per-order tables concatenated in shard order (cells stay sorted), finished with
   zagg's variables and written to the Zarr store.

The work directory (default ``{store}.work``) makes a killed run resumable: every stage skips
tasks whose outputs exist. It is removed after a successful write.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge.engine import Engine
from healforge.errors import BadInputError
from healforge.healpix import SPATIAL_INDEX_COLUMN, bad_coordinate_mask, describe_bad_coordinate
from healforge.run import PipelineConfig, Statistic

LON, LAT = "_lon", "_lat"


def _quantile_name(q: float) -> str | None:
    """The ``qNN`` statistic name of level ``q`` (None for 0 and 1, which are min and max)."""
    if q <= 0 or q >= 1:
        return None
    digits = f"{q:.12f}"[2:].rstrip("0")
    return "q" + digits.ljust(2, "0")


def _stat_names(stat: Statistic) -> list[tuple[str, str]]:
    """``(cell_statistics name, output name)`` pairs of one configured statistic."""
    f, p = stat.function, stat.parameters
    if f == "quantile" or f == "median":
        qs = p.get("q", 0.5)
        qs = [float(x) for x in (qs if isinstance(qs, list | tuple) else [qs])]
        names = []
        for q, out in zip(qs, stat.output_names, strict=True):
            names.append((_quantile_name(q) or ("min" if q <= 0 else "max"), out))
        return names
    simple = {"weighted_mean": "wmean", "weighted_var": "wvar", "weighted_std": "wstd"}
    return [(simple.get(f, f), stat.name)]


def _group_key(stat: Statistic) -> tuple:
    weight = stat.weight.source if stat.function.startswith("weighted_") and stat.weight else None
    expr = stat.expression.source if stat.expression is not None else None
    ddof = int(stat.parameters.get("ddof", 1)) if stat.function in ("var", "std") else 1
    if stat.function.startswith("weighted_") and int(stat.parameters.get("ddof", 0)) != 0:
        raise ValueError(f"statistic {stat.name}: exact weighted variance uses ddof 0")
    return stat.column, expr, weight, ddof


def prepare_granule(
    item: tuple[int, str, str], cfg: PipelineConfig, columns: list[str], batch_rows: int
) -> dict:
    """Prepare stage: one granule's filtered rows (authalic latitudes) as a Parquet file."""
    from healforge.aggregate.coords import geodetic_to_authalic

    index, path, out = item
    spec = cfg.inputs[0]
    co = cfg.coordinates
    counts = {"rows_read": 0, "rows_filtered": 0}
    parts = []
    for first, table in spec.iter_file(path, batch_rows):
        counts["rows_read"] += table.num_rows
        cols = {n: table.column(n) for n in table.column_names}
        mask = cfg.filter_mask(cols)
        keep = (
            np.arange(table.num_rows)
            if mask is None
            else np.flatnonzero(np.broadcast_to(mask, (table.num_rows,)))
        )
        counts["rows_filtered"] += table.num_rows - keep.size
        table = table.take(pa.array(keep))
        if table.num_rows == 0:
            continue
        lon = table.column(co.lon).to_numpy(zero_copy_only=False).astype(np.float64)
        lat = table.column(co.lat).to_numpy(zero_copy_only=False).astype(np.float64)
        bad = bad_coordinate_mask(lon, lat)
        if bad.any():
            i = int(np.argmax(bad))
            column, value = describe_bad_coordinate(lon[i], lat[i], co.lon, co.lat)
            raise BadInputError(
                "bad coordinate (NaN or out of range)",
                path=path,
                column=column,
                row=first + int(keep[i]),
                value=value,
            )
        data = {LON: pa.array(lon), LAT: pa.array(geodetic_to_authalic(lat))}
        data.update({c: table.column(c) for c in columns})
        parts.append(pa.table(data))
    counts["rows_kept"] = sum(t.num_rows for t in parts)
    if parts:
        tmp = f"{out}.{uuid.uuid4().hex}.tmp"
        pq.write_table(pa.concat_tables(parts), tmp, compression="zstd")
        os.replace(tmp, out)
    tmp = f"{out}.counts.{uuid.uuid4().hex}.tmp"
    Path(tmp).write_text(json.dumps(counts))
    os.replace(tmp, f"{out}.counts.json")  # written last: the task is done
    return counts


def shard_statistics(target: str, cfg: PipelineConfig, orders: list[int]) -> dict[int, pa.Table]:
    """Statistics stage: exact statistics of every cell of one shard at every order."""
    from healforge.aggregate.api import exact_cell_expression
    from healforge.aggregate.kernels import cell_statistics
    from healforge.aggregate.statistics import resolve

    table = pq.read_table(target)
    h29 = table.column(SPATIAL_INDEX_COLUMN).to_numpy()
    columns = {n: table.column(n) for n in table.column_names}
    groups: dict[tuple, list[Statistic]] = {}
    for stat in cfg.statistics:
        if stat.cell is None:
            groups.setdefault(_group_key(stat), []).append(stat)
    cell_stats = [s for s in cfg.statistics if s.cell is not None]
    rows = {  # the row expressions of the cell expressions' aggregates
        a.row.source: np.asarray(a.row.evaluate(columns, h29.size), dtype=np.float64)
        for s in cell_stats
        for a in s.cell.aggregates
    }
    inputs = {}
    for key, stats in groups.items():
        stat = stats[0]
        vals = stat.values(columns)
        vals = np.broadcast_to(vals, h29.shape) if vals.ndim == 0 else vals
        w = None
        if key[2] is not None:
            w = np.asarray(stat.weight.evaluate(columns), dtype=np.float64)
            w = np.broadcast_to(w, h29.shape) if w.ndim == 0 else w
            bad = (~np.isfinite(w) | (w < 0)) & ~np.isnan(vals)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise BadInputError(
                    f"weight {key[2]!r} gives {w[i]!r} for statistic {stat.name!r} (weights must be finite, >= 0)",
                    path=target,
                    row=i,
                )
        inputs[key] = (vals, w)
    out: dict[int, pa.Table] = {}
    for k in orders:
        cells = h29 >> (2 * (29 - k))
        result: dict[str, np.ndarray] = {}
        cell_ids = None
        for key, stats in groups.items():
            vals, w = inputs[key]
            names = [n for s in stats for n, _ in _stat_names(s)]
            ids, res = cell_statistics(cells, {"v": vals}, stats=sorted(set(names)), weights=w, ddof=key[3])
            cell_ids = ids
            for s in stats:
                for name, label in _stat_names(s):
                    arr = res[f"v_{resolve(name).label}"]
                    result[label] = np.asarray(arr).astype(s.dtype)
        for s in cell_stats:
            cell_ids, v = exact_cell_expression(cells, rows, s.cell, k, cfg.assignment.radius_km)
            result[s.name] = v.astype(s.dtype)
        out[k] = pa.table(
            {"cell_ids": pa.array(cell_ids, pa.int64()), **{n: pa.array(v) for n, v in result.items()}}
        )
    return out


def _claim(work: Path, cfg: PipelineConfig, plan) -> None:
    """Keep a work directory made by the same configuration (resume); start afresh otherwise."""
    from healforge.run import to_plan
    from healforge.run.runner import config_sections

    sections = config_sections(cfg, to_plan(cfg))
    sections["statistics"] = [repr(s) for s in cfg.statistics]
    sections["orders"] = [int(k) for k in plan.orders]
    stamp = json.dumps(sections, sort_keys=True, default=str)
    marker = work / "config.json"
    if marker.exists() and marker.read_text() != stamp:
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        marker.write_text(stamp)


def run_exact(
    plan,
    cfg: PipelineConfig,
    engine: Engine,
    *,
    batch_rows: int = 1_000_000,
    work_dir: str | None = None,
    product: dict | None = None,
) -> dict[str, Any]:
    """Exact run of a translated zagg plan (see the module docstring); returns a run summary."""
    from healforge.catalog.alignment import Alignment
    from healforge.catalog.build.stages import common_schema, map_stage, reduce_stage, split_stage
    from healforge.catalog.build.tasks import InputSpec
    from healforge.maps.table import make_map_table
    from healforge.maps.zarr_store import write_zarr
    from healforge.zagg.run import finish_map

    store = plan.store
    if work_dir is None:  # local scratch beside a local store, a temporary folder for a URL
        work_dir = (
            tempfile.mkdtemp(prefix="healforge-zagg-") if "://" in store else f"{store.rstrip('/')}.work"
        )
    work = Path(work_dir)
    _claim(work, cfg, plan)
    (work / "prep").mkdir(parents=True, exist_ok=True)
    files = cfg.inputs[0].files()
    needed = sorted(cfg.needed_columns - {cfg.coordinates.lon, cfg.coordinates.lat})
    prep = [str(work / "prep" / f"g{i:05d}.parquet") for i in range(len(files))]
    items = [(i, f, p) for i, (f, p) in enumerate(zip(files, prep, strict=True))]
    todo = [it for it in items if not Path(f"{it[2]}.counts.json").exists()]  # resume
    engine.map(
        prepare_granule,
        todo,
        "prepare",
        labels=[t[1] for t in todo],
        cfg=cfg,
        columns=needed,
        batch_rows=batch_rows,
    )
    results = [json.loads(Path(f"{p}.counts.json").read_text()) for p in prep]
    summary: dict[str, Any] = {
        "files": len(files),
        "rows_read": sum(r["rows_read"] for r in results),
        "rows_filtered": sum(r["rows_filtered"] for r in results),
        "rows_rejected": 0,
        "outputs": [],
        "mode": "exact",
    }
    kept = [p for p, r in zip(prep, results, strict=True) if r["rows_kept"]]
    spec = InputSpec(ra=LON, dec=LAT, fmt="parquet", batch_rows=batch_rows)
    shard_order = plan.shard_order
    mapped = map_stage(engine, kept, spec, shard_order, work)
    pixels = mapped["pixels"]
    alignment = Alignment(
        shard_order, pixels, mapped["counts"], np.full(pixels.size, shard_order, np.int64), pixels.copy()
    )
    align_file = work / "alignment.npz"
    alignment.save(align_file)
    schema = common_schema(kept, mapped["schemas"])
    slices, _ = split_stage(engine, kept, spec, work, align_file, schema)
    destinations = alignment.destinations()
    (work / "shards").mkdir(exist_ok=True)
    targets = [work / "shards" / f"{o}_{p}.parquet" for o, p, _ in destinations]
    reduce_stage(engine, destinations, slices, targets, work / "done")
    orders = sorted(plan.orders, reverse=True)
    pieces = engine.map(
        shard_statistics,
        [str(t) for t in targets],
        "statistics",
        labels=[t.name for t in targets],
        cfg=cfg,
        orders=orders,
    )
    summary["rows_assigned"] = int(mapped["counts"].sum())
    maps = {}
    sources = sorted({s.column for s in cfg.statistics if s.column})
    for k in orders:
        tables = [p[k] for p in pieces]
        t = pa.concat_tables(tables) if tables else None
        cols = {n: t.column(n).to_numpy(zero_copy_only=False) for n in t.column_names if n != "cell_ids"}
        table = make_map_table(
            t.column("cell_ids").to_numpy(),
            cols,
            k,
            lon_convention="-180_180",
            latitude="authalic",
            statistics=sorted({s.function for s in cfg.statistics}),
            source_columns=sources,
            pipeline=cfg.name,
            functions={s.name: s.function for s in cfg.statistics},
            source="pipeline",
            inputs=files,
            exact=True,
            shard_order=shard_order,
            **{key: summary[key] for key in ("rows_read", "rows_filtered", "rows_assigned")},
        )
        maps[k] = finish_map(table, plan, cfg)
    summary["orders"] = sorted(maps)
    summary["cells"] = {k: t.num_rows for k, t in maps.items()}
    write_zarr(
        maps,
        store,
        storage_options=plan.storage_options or None,
        metadata={
            "inputs": files,
            "pipeline": cfg.name,
            **(product or {}),
            "exact": True,
            "shard_order": shard_order,
        },
    )
    summary["outputs"].append(store)
    summary["complete"] = True
    shutil.rmtree(work, ignore_errors=True)
    return summary

"""``healforge demo``: a small synthetic survey run through the main jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def synthetic_survey(n_rows: int, seed: int = 42) -> pa.Table:
    """A survey-like table: a uniform background plus dense clusters (one on ra 0, one near a pole).

    Columns: ``id`` (int64), ``ra``, ``dec`` (float64, degrees), ``mag`` (float32), ``mag_err``
    (float32), ``band`` (string), ``mjd`` (float64).
    """
    rng = np.random.default_rng(seed)
    n_bg = n_rows // 2
    ra = [rng.uniform(0, 360, n_bg)]
    dec = [np.degrees(np.arcsin(rng.uniform(-1, 1, n_bg)))]
    centres = [(0.0, 5.0), (120.0, -30.0), (250.0, 40.0), (45.0, 87.0)]
    left = n_rows - n_bg
    sizes = np.full(len(centres), left // len(centres))
    sizes[0] += left - sizes.sum()
    for (ra0, dec0), k in zip(centres, sizes, strict=True):
        d = np.clip(dec0 + rng.normal(0, 1.5, k), -90, 90)
        r = ra0 + rng.normal(0, 1.5, k) / np.maximum(np.cos(np.radians(d)), 0.05)
        ra.append(np.mod(r, 360))
        dec.append(d)
    ra, dec = np.concatenate(ra), np.concatenate(dec)
    mag = rng.normal(20, 1.5, n_rows).astype(np.float32)
    return pa.table(
        {
            "id": np.arange(n_rows, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "mag": mag,
            "mag_err": (0.01 * np.exp((mag - 18) / 2.5)).astype(np.float32),
            "band": pa.array(np.array(["g", "r", "i", "z"])[rng.integers(0, 4, n_rows)]),
            "mjd": rng.uniform(60000, 60400, n_rows),
        }
    )


def write_inputs(table: pa.Table, folder: Path, n_files: int, prefix: str = "survey_") -> list[str]:
    """Split ``table`` into ``n_files`` parquet files ``{prefix}00.parquet``... in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, table.num_rows, n_files + 1).astype(int)
    paths = []
    for i in range(n_files):
        path = folder / f"{prefix}{i:02d}.parquet"
        pq.write_table(table.slice(bounds[i], bounds[i + 1] - bounds[i]), path)
        paths.append(str(path))
    return paths


MAP_ORDER = 6
MAP_MIN_ORDER = 3
MAP_STATS = ("count", "mean", "median", "std")


def run_demo(out: str | Path, rows: int = 200_000, workers: int | None = None, quiet: bool = False) -> dict:
    """Build inputs, import them as a HATS catalog, validate it, then map it.

    The map step aggregates ``mag`` straight from the catalog (one task per partition) into a
    streaming state at order 6, finalizes a Zarr DGGS pyramid (orders 6..3, every level merged from
    states) and a Parquet map, and plots the mean magnitude. Returns the paths made.
    """
    from healforge.aggregate.api import accumulate, finalize
    from healforge.catalog.build.importer import import_catalog
    from healforge.catalog.check.validate import validate_catalog
    from healforge.engine import Engine
    from healforge.maps.parquet import write_parquet
    from healforge.maps.plot import plot_map

    out = Path(out)
    inputs = write_inputs(synthetic_survey(rows), out / "inputs", 4)
    catalog = out / "catalog"
    maps = out / "maps"
    with Engine(workers=workers or 2, quiet=quiet) as engine:  # one local cluster for every stage
        result = import_catalog(
            inputs,
            catalog,
            "ra",
            "dec",
            id_column="id",
            threshold=max(rows // 20, 1000),
            highest_order=8,
            name="demo_survey",
            overwrite=True,
            engine=engine,
            quiet=quiet,
        )
        report = validate_catalog(catalog, id_column="id")
        if not report.ok:
            raise RuntimeError(str(report))
        maps.mkdir(parents=True, exist_ok=True)
        state_path = maps / "survey_state.parquet"
        # ra/dec come from the catalog's hats_col_ra/hats_col_dec; each partition is one task
        state = accumulate(catalog, ["mag"], order=MAP_ORDER, output=state_path, engine=engine)
    zarr_path = maps / "survey.zarr"
    pyramid = finalize(
        state,
        MAP_STATS,
        min_order=MAP_MIN_ORDER,
        output=zarr_path,
        metadata={"inputs": [str(catalog)], "title": "healforge demo survey"},
    )
    parquet_path = maps / f"survey_order{MAP_ORDER:02d}.parquet"
    write_parquet(pyramid[MAP_ORDER], parquet_path)
    png = maps / "mag_mean.png"
    plot_map(zarr_path, "mag_mean", MAP_ORDER, out=png, width=1200, title="demo survey: mean mag (order 6)")
    return {
        "inputs": inputs,
        "catalog": str(catalog),
        "import": result,
        "validation": report,
        "state": str(state_path),
        "zarr": str(zarr_path),
        "orders": sorted(pyramid),
        "cells": {k: t.num_rows for k, t in pyramid.items()},
        "parquet": str(parquet_path),
        "png": str(png),
    }


def nightly_batches(
    folder: str | Path,
    n_objects: int,
    nights: int,
    seed: int = 3,
    observed: float = 0.3,
    orphans: int = 0,
) -> list[dict[str, str]]:
    """Write a survey's alert-pipeline output: night 0 (the first catalog) and ``nights`` nightly
    batches of objects, sources and forced sources (parquet), like the incremental-HATS seed.

    Each night a fraction ``observed`` of the known objects, plus new ones, are re-measured: every
    such object gets one to three versions (``validityStart``), its new sources and forced
    sources. Forced sources are also measured for objects *not* in that night's batch (forced
    photometry at known positions). The last night adds objects on new sky. ``orphans`` sources
    per night refer to objects that never existed. Returns, per night, the paths
    ``{"objects", "sources", "forced"}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n0 = max(1, n_objects // 2)
    pos_ra = rng.uniform(30, 45, n_objects)
    pos_dec = np.degrees(np.arcsin(rng.uniform(-0.15, 0.15, n_objects)))
    pos_ra[-max(1, n_objects // 20) :] = rng.uniform(250, 252, max(1, n_objects // 20))
    new_per_night = (n_objects - n0) // max(1, nights)
    known = n0
    next_src, next_forced = 1, 1
    out = []
    for night in range(nights + 1):
        if night == 0:
            ids = np.arange(n0)
        else:
            seen = rng.choice(known, int(observed * known), replace=False)
            fresh_end = n_objects if night == nights else known + new_per_night
            ids = np.r_[seen, np.arange(known, fresh_end)].astype(np.int64)
            known = fresh_end
        versions = rng.integers(1, 4, len(ids))
        vid = np.repeat(ids, versions)
        start = 60000.0 + night + rng.uniform(0, 0.9, len(vid))
        objects = pa.table(
            {
                "diaObjectId": vid.astype(np.int64),
                "ra": pos_ra[vid],
                "dec": pos_dec[vid],
                "validityStart": start,
                "nDiaSources": rng.integers(1, 100, len(vid)).astype(np.int32),
                "meanFlux": rng.normal(1000, 50, len(vid)),
            }
        )
        n_src = rng.poisson(2.5, len(ids))
        owner = np.repeat(ids, n_src)
        if orphans and night:
            owner = np.r_[owner, 10_000_000 + rng.integers(0, 1000, orphans)]
        sources = _sources(rng, owner, pos_ra, pos_dec, night, next_src, "diaSourceId")
        next_src += len(owner)
        # forced photometry on batch objects and on known objects absent from the batch
        extra = rng.choice(known, min(known, max(1, len(ids) // 3)), replace=False)
        f_owner = np.r_[np.repeat(ids, rng.poisson(1.5, len(ids))), extra]
        forced = _sources(rng, f_owner, pos_ra, pos_dec, night, next_forced, "diaForcedSourceId")
        next_forced += len(f_owner)
        paths = {}
        for kind, table in (("objects", objects), ("sources", sources), ("forced", forced)):
            paths[kind] = str(folder / f"night{night:02d}_{kind}.parquet")
            pq.write_table(table, paths[kind])
        out.append(paths)
    return out


def _sources(rng, owner, pos_ra, pos_dec, night, first_id, id_name) -> pa.Table:
    n = len(owner)
    safe = np.minimum(owner, len(pos_ra) - 1)
    return pa.table(
        {
            id_name: np.arange(first_id, first_id + n, dtype=np.int64),
            "diaObjectId": owner.astype(np.int64),
            "ra": np.mod(pos_ra[safe] + rng.normal(0, 1e-4, n), 360),
            "dec": np.clip(pos_dec[safe] + rng.normal(0, 1e-4, n), -90, 90),
            "midpointMjdTai": 60000.0 + night + rng.uniform(0, 1, n),
            "psfFlux": rng.normal(1000, 30, n).astype(np.float32),
        }
    )

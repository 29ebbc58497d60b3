"""Nightly nested increments: a nightly batch of objects with their sources nested into a large
nested catalog, and a weekly consolidation after 7 increments, against re-building the nested
catalog from all the inputs (import objects + import sources + nest) in the same run.

Every step runs as a ``healforge`` command; wall time, CPU time and peak memory are those of the
whole process tree (psutil, as in ``import_bench.py``).

    python benchmarks/nested_bench.py [--objects 10000000] [--night-objects 100000]
        [--night-sources 1000000] [--workdir bench_data]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from datetime import date
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
from import_bench import run_measured

HF = [sys.executable, "-m", "healforge"]
ID = "diaObjectId"
SOURCES_PER_OBJECT = 3


def _positions(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))


def _objects(ids, ra, dec, night, rng) -> pa.Table:
    n = len(ids)
    return pa.table(
        {
            ID: ids.astype(np.int64),
            "ra": ra,
            "dec": dec,
            "validityStart": 60000.0 + night + rng.uniform(0, 0.9, n),
            "nDiaSources": rng.integers(1, 100, n).astype(np.int32),
            "meanFlux": rng.normal(1000, 50, n),
            "meanFluxErr": rng.normal(10, 1, n).astype(np.float32),
        }
    )


def _sources(owner, ra, dec, night, first_id, rng) -> pa.Table:
    n = len(owner)
    return pa.table(
        {
            "diaSourceId": np.arange(first_id, first_id + n, dtype=np.int64),
            ID: owner.astype(np.int64),
            "ra": np.mod(ra[owner] + rng.normal(0, 1e-4, n), 360),
            "dec": np.clip(dec[owner] + rng.normal(0, 1e-4, n), -90, 90),
            "midpointMjdTai": 60000.0 + night + rng.uniform(0, 1, n),
            "psfFlux": rng.normal(1000, 30, n).astype(np.float32),
            "psfFluxErr": rng.normal(10, 1, n).astype(np.float32),
        }
    )


def make_data(folder: Path, n_objects: int, night_objects: int, night_sources: int, nights: int):
    """Base objects and sources (10 files each) and ``nights`` nightly batches (objects, sources)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    total = n_objects + nights * night_objects
    ra, dec = _positions(total, rng)
    base = {"objects": [], "sources": []}
    chunks = np.array_split(np.arange(n_objects), 10)
    next_src = 1
    for i, ids in enumerate(chunks):
        for kind, table in (
            ("objects", _objects(ids, ra[ids], dec[ids], 0, rng)),
            ("sources", _sources(np.repeat(ids, SOURCES_PER_OBJECT), ra, dec, 0, next_src, rng)),
        ):
            path = folder / f"base_{kind}_{i}.parquet"
            if not path.exists():
                pq.write_table(table, path)
            base[kind].append(str(path))
        next_src += len(ids) * SOURCES_PER_OBJECT
    known = n_objects
    out = []
    for night in range(1, nights + 1):
        # half re-observed objects, half new ones; one to two versions each; 90% of the sources
        # belong to the batch's objects, 10% to catalog objects absent from it (forced photometry)
        seen = rng.choice(known, night_objects // 2, replace=False)
        fresh = np.arange(known, known + night_objects - len(seen))
        known += len(fresh)
        ids = np.r_[seen, fresh]
        vid = np.repeat(ids, rng.integers(1, 3, len(ids)))
        n_in = int(night_sources * 0.9)
        owner = np.r_[rng.choice(ids, n_in), rng.choice(seen.max() + 1, night_sources - n_in)]
        paths = {}
        for kind, table in (
            ("objects", _objects(vid, ra[vid], dec[vid], night, rng)),
            ("sources", _sources(owner, ra, dec, night, next_src, rng)),
        ):
            paths[kind] = str(folder / f"night{night}_{kind}.parquet")
            pq.write_table(table, paths[kind])
        next_src += len(owner)
        out.append(paths)
    return base, out


def rebuild(work: Path, objects: list[str], sources: list[str], out: Path, threshold: int) -> dict:
    """Import + nest from scratch (the latest version of each object)."""
    latest = work / "rebuild_latest"
    shutil.rmtree(latest, ignore_errors=True)
    latest.mkdir(parents=True)
    steps = {}
    # latest version per object (the rebuild has to do this too; counted in its time)
    code = (
        "import pandas as pd, sys; "
        f"df = pd.concat([pd.read_parquet(f) for f in sys.argv[2:]]).sort_values('validityStart')"
        f".drop_duplicates('{ID}', keep='last'); df.to_parquet(sys.argv[1] + '/latest.parquet', index=False)"
    )
    steps["latest"] = run_measured([sys.executable, "-c", code, str(latest), *objects])
    for kind, files in (("objects", [str(latest / "latest.parquet")]), ("sources", sources)):
        target = work / f"rebuild_{kind}"
        steps[f"import_{kind}"] = run_measured(
            [*HF, "import", *files, "-o", str(target), "--overwrite", "--threshold",
             str(threshold if kind == "objects" else threshold * SOURCES_PER_OBJECT * 4), "--workers", "2", "-q"]
        )  # fmt: skip
    steps["nest"] = run_measured(
        [*HF, "nest", str(work / "rebuild_objects"), str(work / "rebuild_sources"), "-o", str(out), "--on", ID,
         "--as", "sources", "--sort-by", "midpointMjdTai", "--overwrite", "--workers", "2", "-q"]
    )  # fmt: skip
    return {
        "wall_s": sum(s["wall_s"] for s in steps.values()),
        "peak_rss_mb": max(s["peak_rss_mb"] for s in steps.values()),
        "steps": {k: round(v["wall_s"], 1) for k, v in steps.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=10_000_000)
    ap.add_argument("--night-objects", type=int, default=100_000)
    ap.add_argument("--night-sources", type=int, default=1_000_000)
    ap.add_argument("--nights", type=int, default=7)
    ap.add_argument("--threshold", type=int, default=250_000)
    ap.add_argument("--workdir", default="bench_data")
    ap.add_argument("--no-week-rebuild", action="store_true", help="skip the rebuild after the last night")
    a = ap.parse_args()
    work = Path(a.workdir) / f"nested_{a.objects}"
    base, nights = make_data(work / "in", a.objects, a.night_objects, a.night_sources, a.nights)

    # the base nested catalog (its build is the rebuild of the first night's state)
    catalog = work / "catalog"
    built = rebuild(work, base["objects"], base["sources"], catalog, a.threshold)
    increments = []
    for i, night in enumerate(nights, start=1):
        res = run_measured(
            [*HF, "increment", str(catalog), "--objects", night["objects"], "--nested",
             f"sources={night['sources']}", "--on", ID, "--latest-by", "validityStart",
             "--batch", f"night{i}", "--on-orphans", "quarantine", "--workers", "2", "-q"]
        )  # fmt: skip
        increments.append(res)
        if i == 1:
            # the same state re-built from all inputs, in the same run
            rebuilt = rebuild(
                work,
                base["objects"] + [night["objects"]],
                base["sources"] + [night["sources"]],
                work / "rebuilt",
                a.threshold,
            )
    consolidation = run_measured(
        [*HF, "compact", str(catalog), "--dedupe-on", ID, "--keep-latest-by", "validityStart",
         "--nested-dedupe-on", "diaSourceId", "--workers", "2", "-q"]
    )  # fmt: skip
    rebuilt_week, n_rebuilt = None, None
    if not a.no_week_rebuild:
        rebuilt_week = rebuild(
            work,
            base["objects"] + [n["objects"] for n in nights],
            base["sources"] + [n["sources"] for n in nights],
            work / "rebuilt_week",
            a.threshold,
        )
        n_rebuilt = sum(
            pq.ParquetFile(f).metadata.num_rows
            for f in (work / "rebuilt_week" / "dataset").rglob("*.parquet")
        )
    # every object once after the consolidation: the same count as the week's rebuild
    n_consolidated = sum(
        pq.ParquetFile(f).metadata.num_rows for f in (catalog / "dataset").rglob("*.parquet")
    )
    first = increments[0]
    print(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": f"{platform.machine()} {psutil.cpu_count()} cores "
                f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
                "catalog_objects": a.objects,
                "catalog_sources": a.objects * SOURCES_PER_OBJECT,
                "night_objects": a.night_objects,
                "night_sources": a.night_sources,
                "base_build": built,
                "increment_1": {
                    "wall_s": round(first["wall_s"], 1),
                    "peak_rss_mb": round(first["peak_rss_mb"]),
                },
                "increments_wall_s": [round(r["wall_s"], 1) for r in increments],
                "increments_peak_rss_mb": [round(r["peak_rss_mb"]) for r in increments],
                "rebuild_after_night_1": rebuilt,
                "rebuild_over_increment": round(rebuilt["wall_s"] / first["wall_s"], 1),
                "consolidation": {
                    "wall_s": round(consolidation["wall_s"], 1),
                    "peak_rss_mb": round(consolidation["peak_rss_mb"]),
                    "log": consolidation["log"].strip()[-400:],
                },
                "rebuild_after_week": rebuilt_week,
                "objects_consolidated_vs_rebuilt": [n_consolidated, n_rebuilt],
            },
            indent=1,
            default=lambda x: round(x, 1) if isinstance(x, float) else str(x),
        )
    )


if __name__ == "__main__":
    main()

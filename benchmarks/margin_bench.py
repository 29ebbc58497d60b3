"""Margin benchmark: healforge against hats-import's margin pipeline, same catalogs, same run.

Generates N rows (default 10 million; uniform on the sphere, and clustered: half uniform, half in
dense blobs, one near a pole, one on ra 0), imports them with healforge, then builds margins at 5
and 60 arcsec with healforge (2 local Dask workers) and with hats-import (``MarginCacheArguments``
+ ``pipeline_with_client`` on a 2-worker ``LocalCluster``), each on a fresh cluster (``--warm``:
with the tool's task module imported in the workers before timing). Reports wall times and row counts, and
checks healforge's margin exactly on a few pixels: the rows of hats-import's margin for a pixel (a
superset) are measured against the pixel boundary sampled with healpy (arcs <= 2 arcsec).

    python benchmarks/margin_bench.py [--rows 10000000] [--workdir bench_margin] [--only uniform] [--warm]
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import healpy as hp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from import_bench import make_inputs  # same data as the import benchmark
from scipy.spatial import cKDTree

RAD = np.pi / 180 / 3600
THRESHOLD = 1_000_000


def boundary_distance(points: np.ndarray, order: int, pixel: int, reach_arcsec: float) -> np.ndarray:
    """Distance (arcsec) from unit vectors to one pixel's boundary (healpy samples, great-circle arcs)."""
    nside = 2**order
    step = int(np.ceil(hp.nside2resol(nside, arcmin=True) * 60 * 2 / 2.0))
    verts = hp.boundaries(nside, pixel, step=step, nest=True).T
    seg = np.max(np.linalg.norm(np.roll(verts, -1, 0) - verts, axis=1))
    tree = cKDTree(verts)
    out = np.full(len(points), np.inf)
    reach = reach_arcsec * RAD + seg
    nearest, _ = tree.query(points, distance_upper_bound=reach)
    cand = np.flatnonzero(np.isfinite(nearest))
    if len(cand) == 0:
        return out
    near = tree.query_ball_point(points[cand], r=reach)
    owner = np.repeat(cand, [len(x) for x in near])
    s0 = np.concatenate([np.asarray(x, dtype=np.int64) for x in near])
    owner, s0 = np.concatenate([owner, owner]), np.concatenate([s0, (s0 - 1) % len(verts)])
    a, b, p = verts[s0], verts[(s0 + 1) % len(verts)], points[owner]
    n = np.cross(a, b)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    on_arc = (np.einsum("ij,ij->i", np.cross(a, p), n) >= 0) & (np.einsum("ij,ij->i", np.cross(p, b), n) >= 0)
    d_line = np.arcsin(np.abs(np.einsum("ij,ij->i", n, p)))
    d_end = np.minimum(
        2 * np.arcsin(np.linalg.norm(a - p, axis=1) / 2), 2 * np.arcsin(np.linalg.norm(b - p, axis=1) / 2)
    )
    np.minimum.at(out, owner, np.where(on_arc, d_line, d_end) / RAD)
    return out


def margin_pixel_table(root: Path, order: int, pixel: int) -> pd.DataFrame:
    files = list(root.glob(f"dataset/Norder={order}/Dir=*/Npix={pixel}.parquet")) + list(
        root.glob(f"dataset/Norder={order}/Dir=*/Npix={pixel}/*.parquet")
    )
    if not files:
        return pd.DataFrame({"id": [], "ra": [], "dec": []})
    return pd.concat([pq.read_table(f, columns=["id", "ra", "dec"]).to_pandas() for f in files])


def check_pixels(ours: Path, theirs: Path, radius: float, n_pixels: int = 4, seed: int = 0) -> dict:
    """Exact check of our margin on a few pixels, using hats-import's (superset) rows as candidates."""
    info = pd.read_csv(ours / "partition_info.csv")
    rng = np.random.default_rng(seed)
    pick = info.iloc[rng.choice(len(info), min(n_pixels, len(info)), replace=False)]
    out = {"pixels": 0, "rows_checked": 0, "mismatches": 0, "ours_outside_theirs": 0}
    for order, pixel in zip(pick["Norder"], pick["Npix"], strict=True):
        cand = margin_pixel_table(theirs, order, pixel)
        mine = set(margin_pixel_table(ours, order, pixel)["id"])
        d = boundary_distance(
            hp.ang2vec(cand["ra"].to_numpy(), cand["dec"].to_numpy(), lonlat=True).reshape(-1, 3),
            order,
            pixel,
            radius + 1,
        )
        must = set(cand["id"][d < radius - 0.001])
        may = set(cand["id"][d < radius + 0.001])
        out["pixels"] += 1
        out["rows_checked"] += len(cand)
        out["mismatches"] += len(must - mine) + len(mine - may)
        out["ours_outside_theirs"] += len(mine - set(cand["id"]))
    return out


def count_rows(root: Path) -> int:
    return (
        int(pq.read_metadata(root / "dataset" / "_metadata").num_rows)
        if (root / "dataset" / "_metadata").exists()
        else 0
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="bench_margin")
    ap.add_argument("--only", choices=["uniform", "clustered"], default=None)
    ap.add_argument("--radii", default="5,60")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="time each tool this many times (alternating)")
    ap.add_argument("--json", default=None, help="write results here")
    ap.add_argument(
        "--warm", action="store_true", help="import each tool's task module in its workers before timing"
    )
    args = ap.parse_args()

    from dask.distributed import Client, LocalCluster
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    from healforge.catalog.build.importer import import_catalog
    from healforge.catalog.derived.margin import margin
    from healforge.engine import Engine

    work = Path(args.workdir).absolute()
    radii = [float(r) for r in args.radii.split(",")]
    results = []
    for kind in [args.only] if args.only else ["uniform", "clustered"]:
        files = make_inputs(work / "inputs", kind, args.rows)
        cat = work / f"{kind}_{args.rows}"
        if not (cat / "hats.properties").exists():
            shutil.rmtree(cat, ignore_errors=True)
            t0 = time.perf_counter()
            import_catalog(
                files, cat, threshold=THRESHOLD, highest_order=10, workers=args.workers, quiet=True
            )
            print(f"{kind}: import {time.perf_counter() - t0:.1f}s", flush=True)
        n_parts = len(pd.read_csv(cat / "partition_info.csv"))
        for radius in radii:
            ours = work / f"{cat.name}_{radius:g}arcs_healforge"
            theirs_name = f"{cat.name}_{radius:g}arcs_hatsimport"
            theirs = work / theirs_name
            t_ours, t_theirs = [], []
            for _ in range(args.repeat):
                for d in (ours, theirs):
                    shutil.rmtree(d, ignore_errors=True)
                with Engine(workers=args.workers, quiet=True) as eng:
                    eng.start()
                    if args.warm:
                        eng.client.run(importlib.import_module, "healforge.catalog.derived.margin")
                    t0 = time.perf_counter()
                    res = margin(cat, ours, radius, engine=eng)
                    t_ours.append(time.perf_counter() - t0)
                with (
                    LocalCluster(n_workers=args.workers, threads_per_worker=1, dashboard_address=None) as lc,
                    Client(lc) as client,
                ):
                    margs = MarginCacheArguments(
                        input_catalog_path=str(cat),
                        output_path=str(work),
                        output_artifact_name=theirs_name,
                        margin_threshold=radius,
                        tmp_dir=str(work / "tmp"),
                        progress_bar=False,
                        resume=False,
                    )
                    if args.warm:
                        client.run(
                            importlib.import_module, "hats_import.margin_cache.margin_cache_map_reduce"
                        )
                    t0 = time.perf_counter()
                    pipeline_with_client(margs, client)
                    t_theirs.append(time.perf_counter() - t0)
            check = check_pixels(ours, theirs, radius)
            row = {
                "kind": kind,
                "warm": args.warm,
                "rows": args.rows,
                "partitions": n_parts,
                "radius_arcsec": radius,
                "healforge_s": [round(t, 1) for t in t_ours],
                "hats_import_s": [round(t, 1) for t in t_theirs],
                "speedup_of_medians": round(float(np.median(t_theirs) / np.median(t_ours)), 2),
                "healforge_rows": res.rows,
                "hats_import_rows": count_rows(theirs),
                "check": check,
            }
            print(json.dumps(row), flush=True)
            results.append(row)
    meta = {"date": str(date.today()), "machine": f"{platform.machine()}, 2 cores, 24 GB", "results": results}
    if args.json:
        Path(args.json).write_text(json.dumps(meta, indent=1))


if __name__ == "__main__":
    main()

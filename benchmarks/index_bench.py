"""Index-catalog benchmark: healforge's index on ``id`` of a 10-million-row catalog, hats-import's
index pipeline on the same catalog in the same run, and an ``id_search`` of 1,000 random ids
through lsdb.

Uses the uniform input files of ``import_bench.py`` (made if missing), imported once with
healforge (not timed here). Each index build runs in its own subprocess; wall time, CPU seconds
and the peak of the summed RSS of the whole process tree are sampled from outside. hats-import
0.11's index pipeline refuses to run with Dask outside 2025.3 on Python 3.11; its message is
recorded.

    python benchmarks/index_bench.py [--rows 10000000] [--workdir bench_data]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import psutil
from import_bench import HIGHEST_ORDER, THRESHOLD, make_inputs, run_measured


def run_healforge(catalog: Path, out: Path) -> None:
    import healforge

    res = healforge.index_catalog(catalog, "id", out, workers=2, quiet=True)
    print(res)


def run_hats_import(catalog: Path, out: Path) -> None:
    from dask.distributed import Client
    from hats_import.index.arguments import IndexArguments
    from hats_import.pipeline import pipeline_with_client

    args = IndexArguments(
        input_catalog_path=str(catalog),
        indexing_column="id",
        output_path=str(out.parent),
        output_artifact_name=out.name,
        tmp_dir=str(out.parent / (out.name + "_tmp")),
        progress_bar=False,
    )
    with Client(n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        pipeline_with_client(args, client)


def id_search(catalog: Path, index: Path, n: int, rows: int, seed: int = 5) -> dict:
    import lsdb

    ids = np.random.default_rng(seed).choice(rows, n, replace=False).tolist()
    t0 = time.perf_counter()
    cat = lsdb.open_catalog(str(catalog), columns=["id", "ra", "dec"])
    found = cat.id_search(values={"id": ids}, index_catalogs={"id": str(index)}).compute()
    wall = time.perf_counter() - t0
    if sorted(found["id"].tolist()) != sorted(ids):
        raise RuntimeError(f"id_search returned {len(found)} rows for {n} ids")
    return {"ids": n, "found": len(found), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="bench_data")
    ap.add_argument("--searches", type=int, default=1000)
    ap.add_argument("--tool", choices=["hats-import", "healforge", "search"], help=argparse.SUPPRESS)
    ap.add_argument("--catalog", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tool == "search":  # child process: a fresh lsdb (imports and numba compilation counted)
        print(json.dumps(id_search(Path(a.catalog), Path(a.out), a.searches, a.rows)))
        return
    if a.tool:  # child process: run one tool
        run = run_healforge if a.tool == "healforge" else run_hats_import
        run(Path(a.catalog), Path(a.out))
        return

    import healforge

    work = Path(a.workdir)
    files = make_inputs(work / f"in_uniform_{a.rows}", "uniform", a.rows)
    catalog = work / f"index_catalog_{a.rows}"
    if not (catalog / "hats.properties").exists():
        t0 = time.perf_counter()
        healforge.import_catalog(
            files,
            catalog,
            threshold=THRESHOLD,
            highest_order=HIGHEST_ORDER,
            workers=2,
            quiet=True,
            overwrite=True,
        )
        print(f"imported {a.rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
    results: dict = {}
    for tool in ("healforge", "hats-import"):
        out = work / f"index_{tool}_{a.rows}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.parent / (out.name + "_tmp"), ignore_errors=True)
        cmd = [sys.executable, __file__, "--tool", tool, "--catalog", str(catalog), "--out", str(out)]
        try:
            r = run_measured(cmd)
            r["size_mb"] = sum(p.stat().st_size for p in out.rglob("*.parquet")) / 2**20
            results[tool] = r
        except RuntimeError as exc:
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            results[tool] = {"refused": lines[-1] if lines else str(exc)}
        print(tool, json.dumps(results[tool], default=str)[:2000], flush=True)
    index = work / f"index_healforge_{a.rows}"
    # id_search in a fresh process (lsdb imports and numba compilation counted once)
    cmd = [sys.executable, __file__, "--tool", "search", "--catalog", str(catalog), "--out", str(index)]
    cmd += ["--rows", str(a.rows), "--searches", str(a.searches)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    results["id_search"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("id_search", results["id_search"], flush=True)
    print(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": f"{platform.machine()} {psutil.cpu_count()} cores "
                f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
                "rows": a.rows,
                "results": results,
            },
            indent=1,
            default=str,
        )
    )


if __name__ == "__main__":
    main()

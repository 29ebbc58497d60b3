"""A/B timing of two healforge source trees: import and aggregation, side by side in one run.

Each case runs in a fresh subprocess per tree (``PYTHONPATH=TREE/src``), the trees alternating
and the order swapped every round; a small untimed warm-up call in the same process compiles the
numba kernels first. Reported: the fastest wall time of ``--reps`` runs per tree and the ratio
after/before. Cases: ``import`` (parquet files -> HATS catalog, as ``import_bench.py``) and the
aggregation cases of ``aggregate_bench.py`` (exact and moments at orders 6 and 8, streaming at 6,
fuzzy footprints at 8).

Usage: python benchmarks/tree_ab.py BEFORE_TREE AFTER_TREE [--rows 2000000] [--reps 3] [--json out.json]
(``*_TREE`` are checkouts, e.g. ``git worktree add ../before <commit>``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregate_bench import make_footprints, make_points  # noqa: E402
from import_bench import make_inputs  # noqa: E402

COLS = ["a", "b", "c"]
STATS = ["mean", "median", "std", "mad", "robust_std"]

PRELUDE = """
import json, sys, time, shutil
import pyarrow.parquet as pq
import healforge
work = sys.argv[1]
"""
AGGREGATE = (
    PRELUDE
    + """
pts = pq.read_table(work + "/points.parquet")
healforge.aggregate(pts.slice(0, 5000), {cols}, {stats}, order=3, lon="lon", lat="lat")
t0 = time.perf_counter()
healforge.aggregate(pts, {cols}, {stats}, order={order}, lon="lon", lat="lat")
print(json.dumps(time.perf_counter() - t0))
"""
)
STREAMING = (
    PRELUDE
    + """
pts = pq.read_table(work + "/points.parquet")
n = pts.num_rows // 10
batches = [pts.slice(i * n, n) for i in range(10)]
healforge.accumulate([pts.slice(0, 5000)], {cols}, order=3, lon="lon", lat="lat")
t0 = time.perf_counter()
healforge.accumulate(batches, {cols}, order={order}, lon="lon", lat="lat")
print(json.dumps(time.perf_counter() - t0))
"""
)
FUZZY = (
    PRELUDE
    + """
fp = pq.read_table(work + "/footprints.parquet")
healforge.sidecar(fp.slice(0, 100), {order}, geometry="g", mode="fuzzy")
t0 = time.perf_counter()
healforge.sidecar(fp, {order}, geometry="g", mode="fuzzy")
print(json.dumps(time.perf_counter() - t0))
"""
)
IMPORT = (
    PRELUDE
    + """
import glob
files = sorted(glob.glob(work + "/import/uniform_*.parquet"))
out = work + "/catalog"
shutil.rmtree(out, ignore_errors=True)
t0 = time.perf_counter()
healforge.import_catalog(files, out, "ra", "dec", threshold=1_000_000, quiet=True)
print(json.dumps(time.perf_counter() - t0))
"""
)


def cases() -> dict[str, str]:
    c = {"import": IMPORT}
    for order in (6, 8):
        c[f"exact o{order}"] = AGGREGATE.format(cols=COLS, stats=STATS, order=order)
        c[f"moments o{order}"] = AGGREGATE.format(cols=COLS, stats=["count", "mean", "std"], order=order)
    c["streaming o6"] = STREAMING.format(cols=COLS, order=6)
    c["fuzzy footprints o8"] = FUZZY.format(order=8)
    return c


def run_case(tree: str, code: str, work: str) -> float:
    env = dict(os.environ, PYTHONPATH=str(Path(tree) / "src"))
    out = subprocess.run([sys.executable, "-c", code, work], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{tree}: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--footprints", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--only", nargs="*", help="case names to run (default: all)")
    p.add_argument("--workdir", default=None)
    p.add_argument("--json")
    args = p.parse_args(argv)
    import shapely

    work = args.workdir or tempfile.mkdtemp(prefix="tree_ab_")
    Path(work).mkdir(parents=True, exist_ok=True)
    pq.write_table(make_points(args.rows), f"{work}/points.parquet")
    pq.write_table(
        pa.table({"g": shapely.to_wkb(make_footprints(args.footprints))}), f"{work}/footprints.parquet"
    )
    make_inputs(Path(work) / "import", "uniform", args.rows)
    trees = {"before": args.before, "after": args.after}
    res = {
        "machine": f"{platform.node()} {os.cpu_count()} cores",
        "date": str(date.today()),
        "rows": args.rows,
        "footprints": args.footprints,
        "reps": args.reps,
        "cases": {},
    }
    for name, code in cases().items():
        if args.only and name not in args.only:
            continue
        wall: dict[str, list[float]] = {"before": [], "after": []}
        for r in range(args.reps):
            for v in ("before", "after") if r % 2 == 0 else ("after", "before"):
                wall[v].append(run_case(trees[v], code, work))
        row = {f"{v}_s": round(min(x), 3) for v, x in wall.items()}
        row["ratio"] = round(row["after_s"] / row["before_s"], 3)
        res["cases"][name] = row
        print(name, json.dumps(row), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

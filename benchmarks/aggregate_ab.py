"""A/B timing of two healforge source trees in one process, calls alternated.

On a shared machine, separate benchmark runs differ by 2-5x with the load; importing both trees
side by side and alternating their calls (the faster of ``--reps`` calls each, order swapped
every round) makes the comparison fair. Cases are those of ``aggregate_bench.py``.

Usage: python benchmarks/aggregate_ab.py BEFORE_SRC AFTER_SRC [--reps 6] [--json out.json]
(``*_SRC`` are ``src`` directories, e.g. of ``git worktree`` or ``git archive`` checkouts).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from aggregate_bench import make_footprints, make_points  # noqa: E402

COLS = ["a", "b", "c"]
STATS = ["mean", "median", "std", "mad", "robust_std"]


def load(src: str) -> dict:
    """The aggregation entry points of the healforge tree at ``src`` (imported afresh)."""
    for m in [m for m in sys.modules if m == "healforge" or m.startswith("healforge.")]:
        del sys.modules[m]
    sys.path.insert(0, src)
    try:
        api = importlib.import_module("healforge.aggregate.api")
        sc = importlib.import_module("healforge.aggregate.sidecar")
    finally:
        sys.path.remove(src)
    return {"aggregate": api.aggregate, "accumulate": api.accumulate, "sidecar": sc.sidecar}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--footprints", type=int, default=50_000)
    p.add_argument("--reps", type=int, default=6)
    p.add_argument("--json")
    args = p.parse_args(argv)
    versions = {"before": load(args.before), "after": load(args.after)}
    pts = make_points(args.rows)
    import shapely

    fp = pa.table({"g": shapely.to_wkb(make_footprints(args.footprints))})
    batches = [pts.slice(i * (args.rows // 10), args.rows // 10) for i in range(10)]
    cases = {
        "exact o6": lambda f: f["aggregate"](pts, COLS, STATS, order=6, lon="lon", lat="lat"),
        "exact o8": lambda f: f["aggregate"](pts, COLS, STATS, order=8, lon="lon", lat="lat"),
        "moments o6": lambda f: f["aggregate"](
            pts, COLS, ["count", "mean", "std"], order=6, lon="lon", lat="lat"
        ),
        "moments o8": lambda f: f["aggregate"](
            pts, COLS, ["count", "mean", "std"], order=8, lon="lon", lat="lat"
        ),
        "streaming o6": lambda f: f["accumulate"](batches, COLS, order=6, lon="lon", lat="lat"),
        "fuzzy footprints o8": lambda f: f["sidecar"](fp, 8, geometry="g", mode="fuzzy"),
    }
    small = pts.slice(0, 5000)
    for f in versions.values():  # numba warm-up, not timed
        f["aggregate"](small, COLS, STATS, order=3, lon="lon", lat="lat")
        f["accumulate"](small, COLS, order=3, lon="lon", lat="lat")
        f["sidecar"](fp.slice(0, 100), 8, geometry="g", mode="fuzzy")
    res = {}
    for name, fn in cases.items():
        wall: dict[str, list] = {"before": [], "after": []}
        cpu: dict[str, list] = {"before": [], "after": []}
        for r in range(args.reps):
            for v in ("before", "after") if r % 2 == 0 else ("after", "before"):
                t0, c0 = time.perf_counter(), time.process_time()
                fn(versions[v])
                wall[v].append(time.perf_counter() - t0)
                cpu[v].append(time.process_time() - c0)
        r = {f"{v}_s": min(x) for v, x in wall.items()}
        r.update({f"{v}_cpu_s": min(x) for v, x in cpu.items()})
        r["ratio"] = r["after_s"] / r["before_s"]
        r["cpu_ratio"] = r["after_cpu_s"] / r["before_cpu_s"]
        res[name] = r
        print(name, json.dumps(r), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

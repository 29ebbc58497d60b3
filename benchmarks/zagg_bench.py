"""zagg pipeline file benchmark: zagg's shipped atl06.yaml run by ``healforge run`` on generated
ATL06-like granules (six beams, 20% quality-flagged rows), streaming and exact.

Each run is a CLI subprocess; wall time and peak memory (RSS summed over the process tree, Dask
workers included, sampled every 0.1 s) are measured with psutil.

Usage: python benchmarks/zagg_bench.py [--rows 10000000] [--granules 20] [--workers 2]
       [--work DIR] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "tests" / "data" / "zagg_atl06.yaml"
BEAMS = ["gt1l", "gt1r", "gt2l", "gt2r", "gt3l", "gt3r"]
FILL = np.float32(3.4028235e38)


def make_granules(folder: Path, n_rows: int, n_granules: int, seed: int = 3) -> list[str]:
    """Granules over an Antarctic region (80S-75S, 0E-30E): about 50 points per order-12 cell."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"ATL06_{i:03d}.h5" for i in range(n_granules)]
    per_beam = n_rows // (n_granules * len(BEAMS))
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    rng = np.random.default_rng(seed)
    for path in paths:
        with h5py.File(path, "w") as f:
            for b in BEAMS:
                g = f.create_group(f"{b}/land_ice_segments")
                q = (rng.uniform(size=per_beam) < 0.2).astype(np.int8)
                h = rng.normal(2000, 300, per_beam).astype(np.float32)
                h[q == 1] = FILL
                g.create_dataset("latitude", data=rng.uniform(-80, -75, per_beam))
                g.create_dataset("longitude", data=rng.uniform(0, 30, per_beam))
                g.create_dataset("h_li", data=h)
                g.create_dataset("h_li_sigma", data=rng.uniform(0.05, 2.0, per_beam).astype(np.float32))
                g.create_dataset("atl06_quality_summary", data=q)
    return [str(p) for p in paths]


def measure(cmd: list[str]) -> dict:
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    peak = 0
    while proc.poll() is None:
        total = 0
        try:
            procs = [proc] + proc.children(recursive=True)
        except psutil.NoSuchProcess:
            break
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(0.1)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(peak / 2**20), "log": out[-300:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--granules", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", default=None, help="folder for the granules and outputs (kept)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="zagg-bench-"))
    t0 = time.perf_counter()
    files = make_granules(work / "granules", args.rows, args.granules)
    gen_s = time.perf_counter() - t0
    results = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()} {psutil.cpu_count()} cores "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "rows": args.rows,
        "granules": len(files),
        "workers": args.workers,
        "generate_s": round(gen_s, 1),
    }
    for mode in ("streaming", "exact"):
        store = work / f"{mode}.zarr"
        cmd = [
            sys.executable,
            "-m",
            "healforge",
            "run",
            str(CONFIG),
            "--inputs",
            *files,
            "--store",
            str(store),
        ]
        cmd += ["--workers", str(args.workers), "-q"] + (["--exact"] if mode == "exact" else [])
        res = measure(cmd)
        import zarr

        meta = zarr.open_group(str(store), mode="r").attrs["healforge"]
        res["orders"] = meta["orders"]
        res["cells_order12"] = int(zarr.open_group(str(store), mode="r")["order_12/cell_ids"].shape[0])
        results[mode] = res
        print(mode, {k: v for k, v in res.items() if k != "log"}, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(json.dumps({k: v for k, v in results.items()}, indent=1))


if __name__ == "__main__":
    main()

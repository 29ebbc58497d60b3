"""Client memory against rows on a loopback Dask cluster: does the process that runs the command
grow with the data?

A scheduler and ``--workers`` worker processes (``dask scheduler``, ``dask worker``) run on this
host; each command runs with ``--scheduler`` in a fresh process under ``/usr/bin/time``, which
reports its peak resident memory (the client only: the workers are other processes). For each
size, 8 Parquet inputs of uniform points:

- ``import`` (a HATS catalog) and ``compact --dedupe-on id`` of it,
- ``aggregate`` (count, mean, std, median of one column at order 8; on a scheduler the rows
  are shuffled through ``OUTPUT.work`` by default) and ``aggregate --no-shuffle`` (every row
  gathered by the client: the behaviour before),
- ``run`` (a pipeline file with the same statistics, maps at orders 8 and 6).

    python benchmarks/client_memory.py --rows 1 4 16 [--workdir bench_client] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

FILES = 8
STATS = [
    "--lon",
    "ra",
    "--lat",
    "dec",
    "--columns",
    "mag",
    "--stats",
    "count",
    "mean",
    "std",
    "median",
    "--order",
    "8",
]


def write_inputs(folder: Path, rows: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(FILES):
        path = folder / f"part{i:02d}.parquet"
        paths.append(str(path))
        if path.exists():
            continue
        n = rows // FILES
        rng = np.random.default_rng(i)
        table = pa.table(
            {
                "id": np.arange(i * n, (i + 1) * n),
                "ra": rng.uniform(0, 360, n),
                "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                "mag": rng.normal(20, 1, n),
            }
        )
        pq.write_table(table, path)
    return paths


def pipeline(inputs: list[str], out: Path) -> dict:
    stat = {"function": None, "column": "mag"}
    return {
        "name": "client-memory",
        "inputs": [{"paths": inputs}],
        "coordinates": {"lon": "ra", "lat": "dec"},
        "assignment": {"order": 8},
        "statistics": {
            "n": {"function": "count"},
            **{f"mag_{f}": {**stat, "function": f} for f in ("mean", "std", "median")},
        },
        "outputs": {"parquet": {"path": str(out), "orders": [8, 6]}},
    }


def measured(cmd: list[str], clean: list[Path]) -> tuple[float, float]:
    """Peak resident memory (MB) and wall time (s) of one command."""
    for path in clean:
        shutil.rmtree(path, ignore_errors=True)
        if path.is_file():
            path.unlink()
    t0 = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "MAXRSS %M", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    kb = int(done.stderr.rsplit("MAXRSS", 1)[1].split()[0])
    return round(kb / 1024, 1), round(wall, 1)


def start_cluster(work: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    dask = str(Path(sys.executable).with_name("dask"))
    sched_file = work / "scheduler.json"
    sched_file.unlink(missing_ok=True)
    procs = [
        subprocess.Popen(
            [
                dask,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--no-dashboard",
                "--scheduler-file",
                str(sched_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    for _ in range(100):
        if sched_file.exists() and sched_file.stat().st_size:
            break
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    procs.append(
        subprocess.Popen(
            [
                dask,
                "worker",
                address,
                "--nworkers",
                str(workers),
                "--nthreads",
                "1",
                "--no-dashboard",
                "--local-directory",
                str(work / "dask"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    from distributed import Client

    with Client(address) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=float, nargs="+", default=[1, 4, 16], help="millions of rows")
    ap.add_argument("--workdir", default="bench_client")
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    work = Path(a.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    address, procs = start_cluster(work, a.workers)
    hf = [sys.executable, "-m", "healforge"]
    on = ["--scheduler", address, "-q"]
    table = {}
    try:
        for millions in a.rows:
            rows = int(millions * 1_000_000)
            d = work / f"{millions:g}M"
            inputs = write_inputs(d / "in", rows)
            cfg = d / "pipeline.yaml"
            cfg.write_text(yaml.safe_dump(pipeline(inputs, d / "run.parquet"), sort_keys=False))
            res = {
                "import": measured([*hf, "import", *inputs, "-o", str(d / "cat"), *on], [d / "cat"]),
                "compact --dedupe-on id": measured(
                    [*hf, "compact", str(d / "cat"), "--dedupe-on", "id", *on], []
                ),
                "aggregate": measured(
                    [*hf, "aggregate", *inputs, "-o", str(d / "a.parquet"), *STATS, *on], [d / "a.parquet"]
                ),
                "aggregate --no-shuffle": measured(
                    [*hf, "aggregate", *inputs, "-o", str(d / "b.parquet"), *STATS, "--no-shuffle", *on],
                    [d / "b.parquet"],
                ),
                "run": measured([*hf, "run", str(cfg), *on], [d / "run.parquet"]),
            }
            table[f"{millions:g}M"] = res
            print(f"{millions:g}M rows:", {k: f"{m} MB, {w} s" for k, (m, w) in res.items()}, flush=True)
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "workers": a.workers,
        "peak_client_mb_and_wall_s": table,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

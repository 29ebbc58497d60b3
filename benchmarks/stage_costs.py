"""Per-stage cost model: rows per second per core of each stage of an import and a margin.

Runs ``healforge import`` and ``healforge margin`` from the command line on ``--rows`` uniform
points with ``--workers`` local workers, reads each stage's wall time from the progress lines the
commands print (``Stage: n/n (100%) 12.3s``), and reports rows / (stage seconds x workers) for
each: the figures ``docs/scaling.md`` projects from.

    python benchmarks/stage_costs.py [--rows 10000000] [--workers 2] [--workdir bench_stages]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

LINE = re.compile(r"^(?P<stage>[A-Za-z][\w ]*?): (?P<done>\d+)/(?P<total>\d+) \(\d+%\) (?P<s>[\d.]+)s$")


def stage_seconds(stderr: str) -> dict[str, float]:
    """The wall time of every stage that finished, from its last progress line."""
    out = {}
    for line in stderr.splitlines():
        m = LINE.match(line.strip())
        if m and m["done"] == m["total"]:
            out[m["stage"]] = float(m["s"])
    return out


def run(cmd: list[str]) -> tuple[float, dict[str, float]]:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return wall, stage_seconds(done.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--files", type=int, default=10)
    ap.add_argument("--workdir", default="bench_stages")
    a = ap.parse_args()
    work = Path(a.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(a.files):
        f = work / f"in_{a.rows}_{i}.parquet"
        if not f.exists():
            rng = np.random.default_rng(i)
            n = a.rows // a.files
            table = pa.table(
                {
                    "id": np.arange(i * n, (i + 1) * n),
                    "ra": rng.uniform(0, 360, n),
                    "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                    "mag": rng.normal(20, 1, n).astype(np.float32),
                    "flux": rng.lognormal(0, 1, n),
                }
            )
            pq.write_table(table, f)
        files.append(str(f))
    cat, margin = work / "cat", work / "margin"
    for d in (cat, margin):
        shutil.rmtree(d, ignore_errors=True)
    hf = [sys.executable, "-m", "healforge"]
    workers = ["--workers", str(a.workers)]
    import_wall, import_stages = run([*hf, "import", *files, "-o", str(cat), *workers])
    margin_wall, margin_stages = run([*hf, "margin", str(cat), "-o", str(margin), "--radius", "5", *workers])
    per_core = {
        stage: round(a.rows / (seconds * a.workers))
        for stage, seconds in {**import_stages, **margin_stages}.items()
        if seconds > 0
    }
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
                "rows": a.rows,
                "workers": a.workers,
                "import_wall_s": round(import_wall, 2),
                "margin_wall_s": round(margin_wall, 2),
                "stage_s": {**import_stages, **margin_stages},
                "rows_per_s_per_core": per_core,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

"""Small jobs from the command line: the fixed cost a user pays, healforge beside hats-import.

Each figure is one fresh process, wall clock from start to exit (imports, cluster start and stop
included), the median of ``--repeat`` runs, tools alternating:

- a 1,000-row import: ``healforge import`` against hats-import's ``ImportArguments`` pipeline
  (``python -c``, its own 2-worker ``Client`` as its docs show);
- the 5" margin of that catalog: ``healforge margin`` against ``MarginCacheArguments``;
- a 50,000-row append into a 5 M-row catalog: ``healforge append`` (hats-import has no append:
  its figure is a re-import of the 5.05 M rows, what a hats-import user does instead).

    python benchmarks/small_jobs_bench.py [--workdir bench_small] [--repeat 3] [--big-rows 5000000]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

HATS_IMPORT = """
import sys
from dask.distributed import Client
from hats_import.catalog.arguments import ImportArguments
from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
from hats_import.pipeline import pipeline_with_client
kind, source, out = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
parent, name = out.rsplit("/", 1)
if kind == "import":
    args = ImportArguments(output_artifact_name=name, input_file_list=source, file_reader="parquet",
        ra_column="ra", dec_column="dec", output_path=parent, tmp_dir=out + "_tmp", progress_bar=False)
else:
    args = MarginCacheArguments(input_catalog_path=source[0], output_path=parent, output_artifact_name=name,
        margin_threshold=5.0, tmp_dir=out + "_tmp", progress_bar=False, resume=False)
with Client(n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
    pipeline_with_client(args, client)
"""


def points(n: int, seed: int, start_id: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table(
        {
            "id": np.arange(start_id, start_id + n),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": rng.normal(20, 1, n),
        }
    )


def timed(cmd: list[str], clean: list[Path]) -> float:
    for path in clean:
        shutil.rmtree(path, ignore_errors=True)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir", default="bench_small")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--big-rows", type=int, default=5_000_000)
    a = ap.parse_args()
    work = Path(a.workdir).absolute()
    work.mkdir(parents=True, exist_ok=True)
    tiny, batch = work / "tiny.parquet", work / "batch.parquet"
    pq.write_table(points(1_000, 1), tiny)
    pq.write_table(points(50_000, 2, start_id=10**9), batch)
    big_inputs = []
    for i in range(5):
        f = work / f"big_{i}.parquet"
        if not f.exists():
            pq.write_table(points(a.big_rows // 5, 10 + i, start_id=i * a.big_rows), f)
        big_inputs.append(str(f))
    hf = [sys.executable, "-m", "healforge"]
    hi = [sys.executable, "-c", HATS_IMPORT]
    cat, cat_hi = work / "tiny_hf", work / "tiny_hi"
    runs: dict[str, list[float]] = {
        k: [] for k in ("import", "import_hi", "margin", "margin_hi", "append", "reimport_hi")
    }
    big = work / "big_hf"
    if not (big / "hats.properties").exists():
        timed([*hf, "import", *big_inputs, "-o", str(big), "-q", "--workers", "2"], [big])
    snapshot = work / "big_hf_snapshot"
    if not snapshot.exists():
        shutil.copytree(big, snapshot)
    for _ in range(a.repeat):
        runs["import"].append(timed([*hf, "import", str(tiny), "-o", str(cat), "-q"], [cat]))
        runs["import_hi"].append(
            timed([*hi, "import", str(tiny), str(cat_hi)], [cat_hi, work / "tiny_hi_tmp"])
        )
        m, m_hi = work / "tiny_hf_margin", work / "tiny_hi_margin"
        runs["margin"].append(timed([*hf, "margin", str(cat), "-o", str(m), "--radius", "5", "-q"], [m]))
        runs["margin_hi"].append(
            timed([*hi, "margin", str(cat_hi), str(m_hi)], [m_hi, work / "tiny_hi_margin_tmp"])
        )
        shutil.rmtree(big, ignore_errors=True)
        shutil.copytree(snapshot, big)
        runs["append"].append(timed([*hf, "append", str(big), str(batch), "--batch", "b", "-q"], []))
        re_hi = work / "big_hi"
        cmd = [*hi, "import", *big_inputs, str(batch), str(re_hi)]
        runs["reimport_hi"].append(timed(cmd, [re_hi, work / "big_hi_tmp"]))
        print({k: round(v[-1], 2) for k, v in runs.items()}, flush=True)
    med = {k: round(statistics.median(v), 2) for k, v in runs.items()}
    report = {
        "date": date.today().isoformat(),
        "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
        "big_rows": a.big_rows,
        "median_s": med,
        "runs_s": runs,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()

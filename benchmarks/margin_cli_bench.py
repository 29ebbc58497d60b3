"""Margins from the command line: ``healforge margin`` beside hats-import's margin pipeline.

Both tools run as a user runs them: a fresh process each (imports, cluster start and stop
included), 2 workers, on the same catalog (imported once by healforge; hats-import's margin
pipeline reads any HATS catalog). Radii 5" and 60"; the row counts of both margins are printed
(healforge's margin holds exactly the rows within the radius, hats-import's a superset).

    python benchmarks/margin_cli_bench.py [--rows 5000000] [--workdir bench_margin_cli] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
from datetime import date
from pathlib import Path

from import_bench import make_inputs
from small_jobs_bench import timed

HATS_MARGIN = """
import sys
from dask.distributed import Client
from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
from hats_import.pipeline import pipeline_with_client
catalog, out, radius = sys.argv[1], sys.argv[2], float(sys.argv[3])
parent, name = out.rsplit("/", 1)
args = MarginCacheArguments(input_catalog_path=catalog, output_path=parent, output_artifact_name=name,
    margin_threshold=radius, tmp_dir=out + "_tmp", progress_bar=False, resume=False)
with Client(n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
    pipeline_with_client(args, client)
"""


def margin_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.read_metadata(path / "dataset" / "_metadata").num_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=5_000_000)
    ap.add_argument("--workdir", default="bench_margin_cli")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    work = Path(a.workdir).absolute()
    files = make_inputs(work / f"in_{a.rows}", "uniform", a.rows)
    cat = work / "cat"
    if not (cat / "hats.properties").exists():
        timed(
            [sys.executable, "-m", "healforge", "import", *files, "-o", str(cat), "--workers", "2", "-q"],
            [cat],
        )
    results = {}
    for radius in (5, 60):
        hf, hi = work / f"hf_{radius}", work / f"hi_{radius}"
        walls = {"healforge": [], "hats-import": []}
        for _ in range(a.repeat):
            cmd = [
                sys.executable,
                "-m",
                "healforge",
                "margin",
                str(cat),
                "-o",
                str(hf),
                "--radius",
                str(radius),
            ]
            walls["healforge"].append(timed([*cmd, "--workers", "2", "-q"], [hf]))
            cmd = [sys.executable, "-c", HATS_MARGIN, str(cat), str(hi), str(radius)]
            walls["hats-import"].append(timed(cmd, [hi, Path(f"{hi}_tmp")]))
        med = {k: round(statistics.median(v), 2) for k, v in walls.items()}
        results[f'{radius}"'] = {
            "wall_s": med,
            "ratio": round(med["healforge"] / med["hats-import"], 3),
            "rows": {"healforge": margin_rows(hf), "hats-import": margin_rows(hi)},
            "runs_s": walls,
        }
        print(radius, json.dumps(results[f'{radius}"']), flush=True)
    print(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "machine": platform.node(),
                "rows": a.rows,
                "results": results,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

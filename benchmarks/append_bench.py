"""Append benchmark: a 1-million-row batch appended to a 10-million-row catalog, against
re-importing all the rows, in the same run. The batch is appended twice (in-process, then
through a 2-worker local cluster); the re-import reads the 10 base files and the batch once
(11 million rows).

Uses the input files of ``import_bench.py`` (made if missing) and the same column layout.

    python benchmarks/append_bench.py [--rows 10000000] [--batch-rows 1000000] [--workdir bench_data]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import psutil
from import_bench import HIGHEST_ORDER, THRESHOLD, make_inputs

import healforge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--batch-rows", type=int, default=1_000_000)
    ap.add_argument("--workdir", default="bench_data")
    a = ap.parse_args()
    work = Path(a.workdir)
    base = make_inputs(work / f"in_uniform_{a.rows}", "uniform", a.rows)
    batch = make_inputs(work / f"batch_{a.batch_rows}", "clustered", a.batch_rows, n_files=1, seed=7)
    catalog = work / "append_catalog"
    shutil.rmtree(catalog, ignore_errors=True)
    opts = {"threshold": THRESHOLD, "highest_order": HIGHEST_ORDER, "workers": 2, "quiet": True}

    t0 = time.perf_counter()
    healforge.import_catalog(base, catalog, **opts)
    t_import = time.perf_counter() - t0

    # the same batch twice (two labels): once in-process, once as a user would with workers=2 (a
    # batch this small runs its reduce stage in-process rather than start a local cluster)
    t0 = time.perf_counter()
    res = healforge.append(catalog, batch, "bench", synchronous=True, quiet=True)
    t_append = time.perf_counter() - t0
    t0 = time.perf_counter()
    healforge.append(catalog, batch, "bench-cluster", workers=2, quiet=True)
    t_append_cluster = time.perf_counter() - t0

    reimport = work / "append_reimport"
    shutil.rmtree(reimport, ignore_errors=True)
    t0 = time.perf_counter()
    healforge.import_catalog(base + batch, reimport, **opts)
    t_reimport = time.perf_counter() - t0

    report = healforge.validate_catalog(catalog, check_index=False)
    print(
        json.dumps(
            {
                "date": str(date.today()),
                "machine": f"{platform.machine()} {psutil.cpu_count()} cores "
                f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
                "catalog_rows": a.rows,
                "batch_rows": a.batch_rows,
                "import_s": round(t_import, 2),
                "append_s": round(t_append, 2),
                "append_workers_2_s": round(t_append_cluster, 2),
                "reimport_all_s": round(t_reimport, 2),
                "reimport_over_append": round(t_reimport / t_append, 2),
                "append": str(res),
                "valid_after_append": report.ok,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()

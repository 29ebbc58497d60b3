"""Import to object storage: healforge to a local moto S3 server vs to local disk, same files.

Uses import_bench's generator (N rows, default 10 million, in 10 parquet files; uniform set). The
moto server runs in its own process on 127.0.0.1 (it keeps the objects in memory; its peak RSS is
reported apart). Each import runs in its own subprocess (``workers=2``); wall, CPU and the peak
summed RSS of the import's process tree are sampled from outside. The S3 catalog is then read
back (row count from its metadata, and hats strict validation).

    python benchmarks/storage_bench.py [--rows 10000000] [--workdir bench_data]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import socket
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_bench import HIGHEST_ORDER, THRESHOLD, make_inputs, run_measured  # noqa: E402

BUCKET = "bench"


def start_moto() -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def options(port: int) -> dict:
    return {"key": "bench", "secret": "bench", "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}


def run_child(files: list[str], out: str, storage_options: dict | None) -> None:
    import healforge

    healforge.import_catalog(
        files,
        out,
        "ra",
        "dec",
        threshold=THRESHOLD,
        highest_order=HIGHEST_ORDER,
        workers=2,
        quiet=True,
        storage_options=storage_options,
    )


def peak_rss_of(pid: int, stop: threading.Event, out: list) -> None:
    proc = psutil.Process(pid)
    peak = 0
    while not stop.is_set():
        try:
            peak = max(peak, proc.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.2)
    out.append(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="bench_data")
    ap.add_argument("--child", nargs=2, metavar=("OUT", "OPTIONS_JSON"), help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        out, opts = a.child
        run_child(a.files, out, json.loads(opts) or None)
        return

    import s3fs

    work = Path(a.workdir)
    files = make_inputs(work / f"in_uniform_{a.rows}", "uniform", a.rows)
    moto, port = start_moto()
    results = {}
    try:
        fs = s3fs.S3FileSystem(**options(port))
        fs.mkdir(BUCKET)
        local_out = work / "out_storage_local"
        shutil.rmtree(local_out, ignore_errors=True)
        for target, out, opts in (
            ("local disk", str(local_out), {}),
            ("moto S3", f"s3://{BUCKET}/cat", options(port)),
        ):
            stop, moto_peak = threading.Event(), []
            sampler = threading.Thread(target=peak_rss_of, args=(moto.pid, stop, moto_peak))
            sampler.start()
            cmd = [sys.executable, __file__, "--child", out, json.dumps(opts), "--files", *files]
            r = run_measured(cmd)
            stop.set()
            sampler.join()
            r.pop("log")
            if opts:
                from hats.io.validation import is_valid_catalog
                from upath import UPath

                import healforge

                r["rows_read_back"] = healforge.catalog_info(out, storage_options=opts).rows
                r["hats_strict_valid"] = bool(is_valid_catalog(UPath(out, **opts), strict=True))
                r["moto_peak_rss_mb"] = moto_peak[0] / 2**20 if moto_peak else None
                r["size_mb"] = sum(fs.du(f"{BUCKET}/cat/dataset", total=False).values()) / 2**20
            else:
                r["size_mb"] = (
                    sum(p.stat().st_size for p in (local_out / "dataset").rglob("*") if p.is_file()) / 2**20
                )
            results[target] = r
            print(target, json.dumps({k: round(v, 2) if isinstance(v, float) else v for k, v in r.items()}))
    finally:
        moto.kill()
        moto.wait()
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
        )
    )


if __name__ == "__main__":
    main()

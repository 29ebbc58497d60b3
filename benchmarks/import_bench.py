"""Import benchmark: healforge against hats-import on the same files, in the same run.

A third tool is the floor (``run_floor``): one process that reads the inputs, computes the
order-29 index, sorts once and writes zstd; half its time is the parallel floor of 2 workers.

Generates N rows (default 10 million) in 10 parquet files, twice (uniform on the sphere; clustered:
half uniform, half in dense blobs, one near a pole, one on ra 0) with columns id int64, ra, dec
float64, eight float32 and one 8-character string. Each tool runs in its own subprocess; wall time,
CPU seconds and the peak of the summed RSS of the whole process tree are sampled from outside.

    python benchmarks/import_bench.py [--rows 10000000] [--workdir bench_data] [--only uniform]
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
import pyarrow as pa
import pyarrow.parquet as pq

THRESHOLD = 1_000_000
HIGHEST_ORDER = 10


def make_inputs(folder: Path, kind: str, n_rows: int, n_files: int = 10, seed: int = 1) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{kind}_{i:02d}.parquet" for i in range(n_files)]
    if all(p.exists() for p in paths):
        return [str(p) for p in paths]
    rng = np.random.default_rng(seed)
    per = n_rows // n_files
    blobs = [(0.0, 10.0, 1.0), (80.0, 88.5, 0.8), (150.0, -30.0, 1.5), (260.0, 45.0, 0.5)]
    for i, path in enumerate(paths):
        n = per if i < n_files - 1 else n_rows - per * (n_files - 1)
        ra = rng.uniform(0, 360, n)
        dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
        if kind == "clustered":
            k = n // 2
            which = rng.integers(0, len(blobs), k)
            c = np.array(blobs)[which]
            d = np.clip(c[:, 1] + rng.normal(0, 1, k) * c[:, 2], -90, 90)
            r = c[:, 0] + rng.normal(0, 1, k) * c[:, 2] / np.maximum(np.cos(np.radians(d)), 0.02)
            ra[:k], dec[:k] = np.mod(r, 360), d
        cols = {"id": np.arange(i * per, i * per + n, dtype=np.int64), "ra": ra, "dec": dec}
        for j in range(8):
            cols[f"f{j}"] = rng.normal(j, 1 + j, n).astype(np.float32)
        letters = rng.integers(97, 123, (n, 8), dtype=np.uint8)
        cols["tag"] = pa.array(letters.view("S8").ravel().astype(str))
        pq.write_table(pa.table(cols), path)
    return [str(p) for p in paths]


def run_measured(cmd: list[str]) -> dict:
    """Run a command; sample the process tree for peak summed RSS and total CPU seconds."""
    t0 = time.perf_counter()
    proc = psutil.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu: dict[int, float] = {}
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
                t = p.cpu_times()
                cpu[p.pid] = t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
        peak = max(peak, total)
        time.sleep(0.1)
    out = proc.stdout.read()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out[-3000:]}")
    return {"wall_s": wall, "cpu_s": sum(cpu.values()), "peak_rss_mb": peak / 2**20, "log": out[-500:]}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in (path / "dataset").rglob("*.parquet"))


def run_hats_import(files: list[str], out: Path, tmp: Path) -> None:
    from dask.distributed import Client
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.pipeline import pipeline_with_client

    args = ImportArguments(
        output_artifact_name=out.name,
        input_file_list=files,
        file_reader="parquet",
        ra_column="ra",
        dec_column="dec",
        pixel_threshold=THRESHOLD,
        highest_healpix_order=HIGHEST_ORDER,
        output_path=str(out.parent),
        tmp_dir=str(tmp),
        progress_bar=False,
    )
    with Client(n_workers=2, threads_per_worker=1, dashboard_address=None) as client:
        pipeline_with_client(args, client)


def run_healforge(files: list[str], out: Path) -> None:
    import healforge

    healforge.import_catalog(
        files, out, "ra", "dec", threshold=THRESHOLD, highest_order=HIGHEST_ORDER, workers=2, quiet=True
    )


def run_floor(files: list[str], out: Path) -> None:
    """The single-process floor: read every input, compute ``_healpix_29``, sort once, write one
    zstd Parquet file. No partitioning, no metadata: the least work any importer does."""
    from healforge.pixel import spatial_index

    table = pa.concat_tables(pq.read_table(f) for f in files)
    h29 = spatial_index(table["ra"].to_numpy(), table["dec"].to_numpy())
    order = np.argsort(h29, kind="stable")
    table = table.take(order).add_column(0, "_healpix_29", pa.array(h29[order]))
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "dataset" / "all.parquet", compression="zstd", compression_level=3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--workdir", default="bench_data")
    ap.add_argument("--only", choices=["uniform", "clustered"], default=None)
    ap.add_argument("--tool", choices=["hats-import", "healforge", "floor"], help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.tool:  # child process: run one tool
        out = Path(a.out)
        if a.tool == "hats-import":
            run_hats_import(a.files, out, out.parent / (out.name + "_tmp"))
        elif a.tool == "floor":
            run_floor(a.files, out)
        else:
            run_healforge(a.files, out)
        return

    work = Path(a.workdir)
    results = {}
    for kind in [a.only] if a.only else ["uniform", "clustered"]:
        files = make_inputs(work / f"in_{kind}_{a.rows}", kind, a.rows)
        for tool in ("hats-import", "healforge", "floor"):
            out = work / f"out_{kind}_{tool}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(out.parent / (out.name + "_tmp"), ignore_errors=True)
            cmd = [sys.executable, __file__, "--tool", tool, "--out", str(out), "--files", *files]
            r = run_measured(cmd)
            r["size_mb"] = size_of(out) / 2**20
            r.pop("log")
            results[f"{kind}/{tool}"] = r
            print(kind, tool, json.dumps({k: round(v, 2) for k, v in r.items()}), flush=True)
        hi, hf = results[f"{kind}/hats-import"], results[f"{kind}/healforge"]
        floor = results[f"{kind}/floor"]["wall_s"] / 2  # the parallel floor of 2 workers
        print(
            f"{kind}: healforge / parallel floor = {hf['wall_s'] / floor:.2f}, "
            f"wall ratio healforge/hats-import = {hf['wall_s'] / hi['wall_s']:.3f}, "
            f"memory ratio = {hf['peak_rss_mb'] / hi['peak_rss_mb']:.3f}, "
            f"size ratio = {hf['size_mb'] / hi['size_mb']:.3f}",
            flush=True,
        )
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

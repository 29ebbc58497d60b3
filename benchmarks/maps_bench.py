"""Map-product benchmark: a full-sky order-9 map (12 * 4**9 = 3,145,728 cells) with 10 statistics.

Times writing it to Zarr (healforge.write_zarr) and reading it back with xarray, against writing and
reading the same table as Parquet (pyarrow, zstd); then plotting it (target: < 5 s).

    PYTHONPATH=src python benchmarks/maps_bench.py [--order 9] [--dir /tmp/maps-bench]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import time

import numpy as np
import pyarrow.parquet as pq
import xarray as xr

from healforge.maps import make_map_table, read_map, write_parquet, write_zarr
from healforge.maps.plot import plot_map
from healforge.pixel import pixel_centers


def du(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def timed(label: str, func, results: dict, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = func()
        best = min(best, time.perf_counter() - t0)
    results[label] = best
    print(f"{label:<45s} {best:8.2f} s", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--order", type=int, default=9)
    ap.add_argument("--dir", default="/tmp/healforge-maps-bench")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    os.makedirs(args.dir)
    order = args.order
    n = 12 * 4**order
    rng = np.random.default_rng(42)
    cells = np.arange(n, dtype=np.int64)
    lon, lat = pixel_centers(cells, order)
    base = 1000 + 500 * np.sin(np.radians(lat)) + 50 * np.cos(np.radians(3 * lon))
    cols = {
        "h_count": rng.poisson(20, n).astype(np.int64),
        "h_mean": base + rng.normal(0, 1, n),
        "h_std": rng.gamma(2, 1, n),
        "h_min": base - 10,
        "h_max": base + 10,
        "h_median": base + rng.normal(0, 1, n),
        "h_p10": base - 5 + rng.normal(0, 1, n),
        "h_p90": base + 5 + rng.normal(0, 1, n),
        "h_mad": rng.gamma(2, 0.5, n),
        "h_wmean": base + rng.normal(0, 0.5, n),
    }
    table = make_map_table(cells, cols, order, units={"h": "m"}, name="benchmark")
    raw = sum(c.nbytes for c in table.columns)
    print(f"order {order}: {n:,} cells, {len(cols)} statistics, {raw / 1e6:.0f} MB in memory")
    res: dict[str, float] = {}
    zpath = os.path.join(args.dir, "m.zarr")
    ppath = os.path.join(args.dir, "m.parquet")
    timed("write Zarr (write_zarr)", lambda: write_zarr(table, zpath), res, args.repeat)
    timed("write Parquet (write_parquet, zstd)", lambda: write_parquet(table, ppath), res, args.repeat)

    def xr_read():
        with xr.open_zarr(zpath, group=f"order_{order:02d}") as ds:
            return ds.load()

    ds = timed("read Zarr with xarray (open_zarr + load)", xr_read, res, args.repeat)
    assert ds.sizes["cells"] == n
    timed("read Zarr as map table (read_map)", lambda: read_map(zpath), res, args.repeat)
    back = timed("read Parquet (pyarrow read_table)", lambda: pq.read_table(ppath), res, args.repeat)
    assert back.num_rows == n
    timed(
        "plot from table (mollweide, 2000 px)",
        lambda: plot_map(table, "h_mean", out=os.path.join(args.dir, "m.png")),
        res,
        args.repeat,
    )
    timed(
        "plot from Zarr path (mollweide, incl. read)",
        lambda: plot_map(zpath, "h_mean", out=os.path.join(args.dir, "z.png")),
        res,
        args.repeat,
    )
    timed(
        "plot polar-south from table",
        lambda: plot_map(table, "h_mean", projection="polar-south", out=os.path.join(args.dir, "s.png")),
        res,
        args.repeat,
    )
    print(f"{'Zarr size':<45s} {du(zpath) / 1e6:8.1f} MB")
    print(f"{'Parquet size':<45s} {du(ppath) / 1e6:8.1f} MB")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")


if __name__ == "__main__":
    main()

"""CLI: ``healforge demo OUT``."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main jobs on built-in sample data")
    p.add_argument("output", help="folder to create")
    p.add_argument("--rows", type=int, default=200_000, help="rows of the synthetic survey")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--quiet", "-q", action="store_true")
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from healforge.demo import run_demo

    made = run_demo(args.output, rows=args.rows, workers=args.workers, quiet=args.quiet)
    print(f"inputs:   {len(made['inputs'])} parquet files in {args.output}/inputs")
    print(f"catalog:  {made['import']}")
    print(f"validate: {made['validation']}")
    print("open it with lsdb:")
    print("    import lsdb")
    print(f"    cat = lsdb.open_catalog({made['catalog']!r})")
    print("    cat.compute().head()")
    cells = ", ".join(f"order {k}: {n}" for k, n in sorted(made["cells"].items(), reverse=True))
    print(f"state:    {made['state']} (mag at order {max(made['orders'])}, from the catalog's partitions)")
    print(f"zarr:     {made['zarr']} (pyramid, cells per order: {cells})")
    print(f"parquet:  {made['parquet']}")
    print(f"plot:     {made['png']}")
    print("open the map with xarray and xdggs:")
    print("    import xarray as xr, xdggs")
    print(f"    ds = xr.open_zarr({made['zarr']!r}, group='order_{max(made['orders']):02d}')")
    print("    ds = xdggs.decode(ds)")
    print("    ds.dggs.cell_centers()  # lon/lat of each cell; ds.mag_mean, ds.mag_median, ...")
    return 0

"""``healforge plot`` and ``healforge export``: pictures and format conversions of map products."""

from __future__ import annotations

import argparse
import os
import sys

from healforge.commands import add_command

# Kept here (not imported from healforge.maps.plot) so that ``healforge --help`` stays fast.
PROJECTIONS = ("mollweide", "polar-north", "polar-south", "orthographic")


def register(subparsers) -> None:
    p = add_command(subparsers, _plot, "plot", run={"engine": False, "storage": False})
    p.add_argument("map", metavar="MAP", help="map store (.zarr) or Parquet map (.parquet)")
    p.add_argument("--var", required=True, help="variable to plot, e.g. h_li_mean")
    p.add_argument("--order", type=int, default=None, help="order of a pyramid (default: finest)")
    p.add_argument("--projection", choices=PROJECTIONS, default="mollweide")
    p.add_argument("--center", nargs=2, type=float, metavar=("LON", "LAT"), default=None)
    p.add_argument("--cmap", default="viridis", help="matplotlib colour map")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), default=None, dest="vrange")
    p.add_argument("--bounding-lat", type=float, default=None, help="edge latitude of polar views")
    p.add_argument("--width", type=int, default=2000, help="raster width in pixels")
    p.add_argument("--title", default=None)
    p.add_argument("-o", "--output", required=True, help="PNG file")

    e = add_command(subparsers, _export, "export", run={"engine": False, "storage": False})
    e.add_argument("map", metavar="MAP", help="map store (.zarr) or Parquet map (.parquet)")
    e.add_argument("-o", "--output", required=True, help="OUT.zarr, OUT.parquet or OUT.geoparquet")
    e.add_argument("--order", type=int, action="append", default=None, help="order(s) to export (repeatable)")
    e.add_argument("--edge-points", type=int, default=1, help="GeoParquet: boundary points per cell edge")


def _plot(args: argparse.Namespace) -> int:
    """plot one variable of a map to a PNG

    Rasterised plot of a Zarr or Parquet map (cells without data in light grey).
    """
    from healforge.maps.plot import plot_map

    out = plot_map(
        args.map,
        args.var,
        args.order,
        projection=args.projection,
        center=tuple(args.center) if args.center else None,
        cmap=args.cmap,
        vrange=tuple(args.vrange) if args.vrange else None,
        bounding_lat=args.bounding_lat,
        width=args.width,
        title=args.title,
        out=args.output,
    )
    print(out)
    return 0


def _export(args: argparse.Namespace) -> int:
    """convert a map to Zarr, Parquet or GeoParquet

    Write a map in the format given by the output suffix: .zarr (all orders), .parquet (one
    order: a file; several: a directory of order_KK.parquet) or .geoparquet (cell polygons, one
    order).
    """
    from healforge.maps.geoparquet import write_geoparquet
    from healforge.maps.parquet import read_map, read_pyramid, write_parquet
    from healforge.maps.table import MapError, source_provenance, with_provenance
    from healforge.maps.zarr_store import write_zarr

    out = args.output.rstrip("/")
    suffix = out.lower().rsplit(".", 1)[-1] if "." in out else ""
    if suffix not in ("zarr", "parquet", "geoparquet"):
        raise MapError(f"cannot tell the output format of {args.output}: use .zarr, .parquet or .geoparquet")
    source = args.map if "://" in args.map else os.path.abspath(args.map)
    provenance = {**source_provenance(args.map), "exported_from": source}
    if suffix == "geoparquet":
        orders = args.order or [None]
        if len(orders) > 1:
            raise MapError("GeoParquet holds one order: give --order once")
        write_geoparquet(
            with_provenance(read_map(args.map, orders[0]), provenance), out, step=args.edge_points
        )
    else:
        maps = read_pyramid(args.map) if not args.order else {k: read_map(args.map, k) for k in args.order}
        maps = {k: with_provenance(t, provenance) for k, t in maps.items()}
        if suffix == "zarr":
            write_zarr(maps, out, metadata=provenance)
        else:
            write_parquet(next(iter(maps.values())) if len(maps) == 1 else maps, out)
    print(out, file=sys.stdout)
    return 0

"""``healforge plot`` and ``healforge export``: pictures and format conversions of map products."""

from __future__ import annotations

import argparse
import os
import sys

from healforge.commands import add_command
from healforge.maps.views import FRAMES, PROJECTIONS, SCALES  # a module without imports: fast --help


def register(subparsers) -> None:
    p = add_command(subparsers, _plot, "plot", run={"engine": False, "storage": False})
    p.add_argument("map", metavar="MAP", help="map store (.zarr), Parquet map (.parquet), or a HATS catalog")
    p.add_argument(
        "--var",
        action="append",
        default=None,
        help="variable to plot, e.g. h_li_mean; repeat for panels side by side (maps only)",
    )
    p.add_argument("--order", type=int, default=None, help="order of a pyramid (default: finest)")
    p.add_argument("--projection", choices=PROJECTIONS, default="mollweide")
    p.add_argument("--center", nargs=2, type=float, metavar=("LON", "LAT"), default=None)
    p.add_argument("--cmap", default="viridis", help="matplotlib colour map")
    p.add_argument("--range", nargs=2, type=float, metavar=("LO", "HI"), default=None, dest="vrange")
    p.add_argument("--bounding-lat", type=float, default=None, help="edge latitude of polar views")
    p.add_argument("--width", type=int, default=2000, help="raster width in pixels")
    p.add_argument("--title", default=None)
    p.add_argument(
        "--frame", choices=FRAMES, default=None, help="sky: RA increasing to the left; body: east right"
    )
    p.add_argument("--scale", choices=SCALES, default="linear", help="colour scaling (default linear)")
    p.add_argument(
        "--extent", type=float, default=None, help="width in degrees of a gnomonic or cartesian view"
    )
    p.add_argument(
        "--graticule", type=float, default=None, help="meridian/parallel spacing in degrees (0: none)"
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="PNG file (a catalog: a folder for skymap.png and partition_info.png)",
    )

    r = add_command(subparsers, _report, "report", run={"engine": False})
    r.add_argument("path", metavar="CATALOG|MAP", help="a HATS catalog or collection, or a map product")
    r.add_argument("-o", "--output", required=True, help="HTML file to write (one self-contained page)")

    e = add_command(subparsers, _export, "export", run={"engine": False, "storage": False})
    e.add_argument("map", metavar="MAP", help="map store (.zarr) or Parquet map (.parquet)")
    e.add_argument("-o", "--output", required=True, help="OUT.zarr, OUT.parquet or OUT.geoparquet")
    e.add_argument("--order", type=int, action="append", default=None, help="order(s) to export (repeatable)")
    e.add_argument("--edge-points", type=int, default=1, help="GeoParquet: boundary points per cell edge")
    g = e.add_argument_group("GeoTIFF (.tif): a raster of one order")
    g.add_argument("--var", action="append", default=None, help="variable(s) to write as bands (default all)")
    g.add_argument("--crs", default="EPSG:4326", help="output CRS, e.g. EPSG:3031 (default EPSG:4326)")
    g.add_argument(
        "--bounds",
        nargs=4,
        type=float,
        metavar=("XMIN", "YMIN", "XMAX", "YMAX"),
        help="region in CRS units (default: the map's cells)",
    )
    g.add_argument("--resolution", type=float, help="pixel size in CRS units (default: about one cell)")
    g.add_argument(
        "--resampling",
        choices=["nearest", "area"],
        default="nearest",
        help="cell under each pixel centre, or the mean over 4 x 4 points of each pixel",
    )


def _plot(args: argparse.Namespace) -> int:
    """plot a map's variables to a PNG, or a catalog's density and partitions

    Rasterised plot of a Zarr or Parquet map (cells without data in light grey), with a labelled
    graticule, in the sky frame (RA increasing to the left) or a body's (east to the right), on
    a linear, log or percentile colour scale; whole-sphere, polar or regional (gnomonic,
    cartesian) views. For a HATS catalog: hats-import's skymap.png (row density) and
    partition_info.png (partition orders) in the output folder.
    """
    from healforge.catalog.opener import open_path

    opened = open_path(args.map)
    if opened.is_hats and opened.kind in ("collection", "catalog", "margin"):
        from healforge.catalog.build.ancillary import write_plots

        for path in write_plots(opened.table, args.output):
            print(path)
        return 0
    from healforge.errors import OptionError
    from healforge.maps.plot import plot_map

    if not args.var:
        raise OptionError("give the variable(s) to plot with --var")
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
        frame=args.frame,
        scale=args.scale,
        extent=args.extent,
        graticule=args.graticule,
    )
    print(out)
    return 0


def _report(args: argparse.Namespace) -> int:
    """one self-contained HTML page about a catalog, collection or map product

    For a catalog: coverage and row density, partition orders, row counts, every column with
    its type, minimum, maximum and null count, the margins and indexes of its collection, and
    its provenance. For a map product: its levels, variables, provenance and a plot of each
    variable. Images are embedded: the page is one file.
    """
    from healforge.commands import storage_kwargs
    from healforge.report import write_report

    print(write_report(args.path, args.output, **storage_kwargs(args)))
    return 0


def _export(args: argparse.Namespace) -> int:
    """convert a map to Zarr, Parquet, GeoParquet or a GeoTIFF raster

    Write a map in the format given by the output suffix: .zarr (all orders), .parquet (one
    order: a file; several: a directory of order_KK.parquet), .geoparquet (cell polygons, one
    order) or .tif (a raster of one order in a CRS, region and resolution of your choice).
    """
    from healforge.maps.geoparquet import write_geoparquet
    from healforge.maps.parquet import read_map, read_pyramid, write_parquet
    from healforge.maps.provenance import source_provenance, with_provenance
    from healforge.maps.table import MapError
    from healforge.maps.zarr_store import write_zarr

    out = args.output.rstrip("/")
    suffix = out.lower().rsplit(".", 1)[-1] if "." in out else ""
    if suffix not in ("zarr", "parquet", "geoparquet", "tif", "tiff"):
        raise MapError(
            f"cannot tell the output format of {args.output}: use .zarr, .parquet, .geoparquet or .tif"
        )
    source = args.map if "://" in args.map else os.path.abspath(args.map)
    provenance = {**source_provenance(args.map), "exported_from": source}
    if suffix in ("tif", "tiff"):
        from healforge.maps.raster import export_geotiff

        orders = args.order or [None]
        if len(orders) > 1:
            raise MapError("a GeoTIFF holds one order: give --order once")
        info = export_geotiff(
            read_map(args.map, orders[0]),
            out,
            variables=args.var,
            crs=args.crs,
            bounds=args.bounds,
            resolution=args.resolution,
            resampling=args.resampling,
            provenance=provenance,
        )
        if not args.quiet:
            print(f"{info['width']} x {info['height']} pixels, {info['crs']}", file=sys.stderr)
    elif suffix == "geoparquet":
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

"""CLI: ``import``, ``info`` and ``validate`` for HATS catalogs."""

from __future__ import annotations

import argparse
import sys

from healforge.commands import add_engine_args, engine_kwargs


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="import point tables into a HATS catalog")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or glob patterns")
    p.add_argument("-o", "--output", required=True, help="catalog directory to create")
    p.add_argument("--ra", default="ra", help="right ascension / longitude column (degrees)")
    p.add_argument("--dec", default="dec", help="declination / latitude column (degrees)")
    p.add_argument("--id", dest="id_column", default=None, help="unique id column")
    p.add_argument("--threshold", type=int, default=1_000_000, help="maximum rows per partition")
    p.add_argument("--highest-order", type=int, default=10)
    p.add_argument("--lowest-order", type=int, default=0)
    p.add_argument("--name", default=None, help="catalog name (obs_collection)")
    p.add_argument("--catalog-type", choices=["object", "source"], default="object")
    p.add_argument("--sort-columns", nargs="*", default=[], help="secondary sort columns")
    p.add_argument("--compression", default="zstd:3", help="parquet codec[:level] (default zstd:3)")
    p.add_argument("--format", dest="input_format", choices=["csv", "parquet", "fits", "hdf5"], default=None)
    p.add_argument("--hdf5-group", default=None, help="HDF5 group holding the column datasets")
    p.add_argument("--fits-hdu", type=int, default=None, help="FITS table extension (default: the first)")
    p.add_argument("--no-drop-empty-siblings", action="store_true", help="hats' alternative alignment")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="require and continue an unfinished run")
    mode.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--on-bad-rows", choices=["error", "quarantine"], default="error")
    p.add_argument(
        "--margin",
        type=float,
        nargs="+",
        default=[],
        metavar="ARCSEC",
        help="also build margin caches of these radii (several only with --collection; the first is the default)",
    )
    p.add_argument("--margin-path", default=None, help="where to write it (default: OUTPUT_margin)")
    p.add_argument(
        "--collection",
        action="store_true",
        help="write a HATS collection at OUTPUT: the catalog, its margins and indexes as sub-catalogs",
    )
    p.add_argument(
        "--index",
        nargs="+",
        default=[],
        metavar="COL",
        help="also build index catalogs on these columns (the first is the default)",
    )
    add_engine_args(p)
    p.set_defaults(func=_import)

    p = sub.add_parser(
        "append",
        help="append a batch of rows to a catalog or collection, keeping its partitioning "
        "(margins and indexes are rebuilt in the same transaction)",
    )
    p.add_argument("catalog", help="catalog or collection")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--batch", default=None, help="batch label (file name in each pixel; default: UTC time)")
    p.add_argument("--format", dest="input_format", choices=["csv", "parquet", "fits", "hdf5"], default=None)
    p.add_argument("--on-bad-rows", choices=["error", "quarantine"], default="error")
    p.add_argument("--hdf5-group", default=None, help="HDF5 group holding the column datasets")
    p.add_argument("--fits-hdu", type=int, default=None, help="FITS table extension (default: the first)")
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")
    add_engine_args(p)
    p.set_defaults(func=_append)

    p = sub.add_parser("compact", help="merge appended files, de-duplicate, split pixels over the threshold")
    p.add_argument("catalog", help="catalog or collection")
    p.add_argument("--dedupe-on", default=None, metavar="ID", help="keep one row per value of this column")
    p.add_argument("--keep-latest-by", default=None, metavar="COL", help="keep the row with the greatest COL")
    p.add_argument("--threshold", type=int, default=None, help="maximum rows per pixel")
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")
    add_engine_args(p)
    p.set_defaults(func=_compact)

    p = sub.add_parser("info", help="describe a HATS catalog or collection")
    p.add_argument("path")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "validate",
        help="strict hats validation plus data checks (a collection member by member, a margin "
        "against its primary's exact rows, an index against its primary)",
    )
    p.add_argument("catalog")
    p.add_argument("--id", dest="id_column", default=None, help="check this column is unique")
    p.set_defaults(func=_validate)


def _import(args: argparse.Namespace) -> int:
    from healforge.catalog.importer import import_catalog

    result = import_catalog(
        args.inputs,
        args.output,
        args.ra,
        args.dec,
        id_column=args.id_column,
        threshold=args.threshold,
        highest_order=args.highest_order,
        lowest_order=args.lowest_order,
        name=args.name,
        catalog_type=args.catalog_type,
        sort_columns=args.sort_columns,
        compression=args.compression,
        drop_empty_siblings=not args.no_drop_empty_siblings,
        input_format=args.input_format,
        reader_options=_reader_options(args),
        on_bad_rows=args.on_bad_rows,
        margins=args.margin,
        margin_path=args.margin_path,
        collection=args.collection,
        indexes=args.index,
        resume=True if args.resume else None,
        overwrite=args.overwrite,
        **engine_kwargs(args),
    )
    print(("resumed and finished: " if result.resumed else "imported ") + str(result))
    return 0


def _append(args: argparse.Namespace) -> int:
    from healforge.catalog.append import append

    result = append(
        args.catalog,
        args.inputs,
        args.batch,
        input_format=args.input_format,
        reader_options=_reader_options(args),
        on_bad_rows=args.on_bad_rows,
        margin=args.margin,
        **engine_kwargs(args),
    )
    print(result)
    return 0


def _compact(args: argparse.Namespace) -> int:
    from healforge.catalog.compact import compact

    result = compact(
        args.catalog,
        args.dedupe_on,
        args.keep_latest_by,
        args.threshold,
        margin=args.margin,
        **engine_kwargs(args),
    )
    print(result)
    return 0


def _reader_options(args: argparse.Namespace) -> dict:
    options = {}
    if getattr(args, "hdf5_group", None):
        options["group"] = args.hdf5_group
    if getattr(args, "fits_hdu", None) is not None:
        options["hdu"] = args.fits_hdu
    return options


def _info(args: argparse.Namespace) -> int:
    from healforge.catalog.info import catalog_info

    print(catalog_info(args.path))
    return 0


def _validate(args: argparse.Namespace) -> int:
    from healforge.catalog.validate import validate_catalog

    report = validate_catalog(args.catalog, id_column=args.id_column)
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1

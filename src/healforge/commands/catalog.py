"""CLI: ``import``, ``info`` and ``validate`` for HATS catalogs."""

from __future__ import annotations

import argparse
import sys

from healforge.commands import add_command, call_api, storage_kwargs
from healforge.hats import Key
from healforge.io.formats import format_names


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, _import, "import", run={"tmp_dir": True})
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="files, directories or glob patterns, or one HATS catalog/collection to re-import",
    )
    p.add_argument("-o", "--output", required=True, help="catalog directory to create")
    p.add_argument("--ra", default=None, help="right ascension / longitude column (default ra)")
    p.add_argument("--dec", default=None, help="declination / latitude column (default dec)")
    p.add_argument("--id", dest="id_column", default=None, help="unique id column")
    p.add_argument(
        "--on-duplicate-ids",
        choices=["error", "report"],
        default="report",
        help="repeated --id values: report them (count, examples) and import, or stop (default report)",
    )
    size = p.add_mutually_exclusive_group()
    size.add_argument("--threshold", type=int, default=None, help="maximum rows per partition (1000000)")
    size.add_argument(
        "--max-bytes",
        default=None,
        metavar="SIZE",
        help="maximum in-memory bytes per partition instead (500MB, 1GiB or bytes)",
    )
    p.add_argument("--highest-order", type=int, default=10)
    p.add_argument("--lowest-order", type=int, default=0)
    p.add_argument("--name", default=None, help="catalog name (obs_collection)")
    p.add_argument("--catalog-type", choices=["object", "source"], default=None, help="default object")
    p.add_argument("--sort-columns", nargs="*", default=None, help="secondary sort columns")
    p.add_argument("--compression", default="zstd:3", help="parquet codec[:level] (default zstd:3)")
    p.add_argument("--format", dest="input_format", choices=format_names(), default=None)
    p.add_argument("--columns", nargs="+", default=None, metavar="COL", help="import only these (+ ra, dec)")
    p.add_argument("--schema", default=None, metavar="FILE", help="parquet file whose schema gives the types")
    p.add_argument(
        "--dtype",
        action="append",
        default=None,
        metavar="COL=TYPE",
        help="type of a column (repeatable), e.g. id=int64; values that would change are an error",
    )
    groups = p.add_mutually_exclusive_group()
    groups.add_argument(
        "--row-group-rows", type=int, default=1_048_576, metavar="N", help="rows per row group"
    )
    groups.add_argument(
        "--subtile-order-delta",
        type=int,
        default=None,
        metavar="D",
        help="one row group per order K+D sub-pixel of each order-K partition",
    )
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
    _add_output_args(p)

    p = add_command(sub, _append, "append", run={"tmp_dir": True})
    p.add_argument("catalog", help="catalog or collection")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("--batch", default=None, help="batch label (file name in each pixel; default: UTC time)")
    p.add_argument("--format", dest="input_format", choices=format_names(), default=None)
    p.add_argument("--on-bad-rows", choices=["error", "quarantine"], default="error")
    p.add_argument("--hdf5-group", default=None, help="HDF5 group holding the column datasets")
    p.add_argument("--fits-hdu", type=int, default=None, help="FITS table extension (default: the first)")
    p.add_argument("--cast", choices=["safe", "none"], default="safe", help="cast value-keeping type changes")
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")

    p = add_command(sub, _compact, "compact", run={"tmp_dir": True})
    p.add_argument("catalog", help="catalog or collection")
    p.add_argument("--dedupe-on", default=None, metavar="ID", help="keep one row per value of this column")
    p.add_argument("--keep-latest-by", default=None, metavar="COL", help="keep the row with the greatest COL")
    p.add_argument("--threshold", type=int, default=None, help="maximum rows per pixel")
    p.add_argument(
        "--merge-nested",
        nargs="+",
        default=None,
        metavar="NAME",
        help="nested columns to merge (default: all)",
    )
    p.add_argument(
        "--nested-dedupe-on", default=None, metavar="SRC_ID", help="source id inside nested columns"
    )
    p.add_argument(
        "--replace-nested",
        action="store_true",
        help="nested columns not merged keep only the latest row's list",
    )
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")

    p = add_command(sub, _info, "info", run={"engine": False})
    p.add_argument("path")

    p = add_command(sub, _validate, "validate", run={"engine": False})
    p.add_argument("catalog")
    p.add_argument("--id", dest="id_column", default=None, help="check this column is unique")


def _import(args: argparse.Namespace) -> int:
    """import point tables into a HATS catalog"""
    from healforge.catalog.build.ancillary import parse_property

    target = "plan_import" if args.plan else "import_catalog"
    result = call_api(
        args,
        f"healforge.catalog.build.importer:{target}",
        "healforge.catalog.build.arguments:ImportArguments",
        drop_empty_siblings=not args.no_drop_empty_siblings,
        reader_options=_reader_options(args),
        margins=args.margin,
        indexes=args.index,
        properties=dict(parse_property(text) for text in args.property),
        resume=True if args.resume else None,
    )
    if args.plan:
        print("\n".join(result.lines()))
        return 0
    if result.complete:
        print("already complete: " + str(result))
    else:
        print(("resumed and finished: " if result.resumed else "imported ") + str(result))
    return 0


def _append(args: argparse.Namespace) -> int:
    """append a batch of rows to a catalog or collection, keeping its partitioning (margins and indexes are rebuilt in the same transaction)"""
    print(call_api(args, "healforge.catalog.change.append:append", reader_options=_reader_options(args)))
    return 0


def _compact(args: argparse.Namespace) -> int:
    """merge appended files, de-duplicate, split pixels over the threshold"""
    print(call_api(args, "healforge.catalog.change.compact:compact"))
    return 0


def _add_output_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optional outputs (kept current by append and compact)")
    g.add_argument(
        "--skymap-alt-orders", type=int, nargs="+", default=[], metavar="K", help="also write skymap.K.fits"
    )
    g.add_argument(
        "--thumbnail", action="store_true", help="write data_thumbnail.parquet (a row per data file)"
    )
    g.add_argument(
        "--per-partition-stats",
        action="store_true",
        help="write per_partition_statistics.parquet (footer stats)",
    )
    g.add_argument("--default-columns", nargs="+", default=None, metavar="COL", help=Key.COLS_DEFAULT)
    g.add_argument(
        "--property", action="append", default=[], metavar="KEY=VALUE", help="extra hats.properties entry"
    )
    g.add_argument("--summary", action="store_true", help="write a README.md summary of the catalog")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the partitions, output and scratch size, memory per worker and wall time the "
        "import would take (one map pass, nothing written) and stop",
    )
    g.add_argument(
        "--plots",
        action="store_true",
        help="write skymap.png (row density) and partition_info.png (partition orders), as hats-import",
    )


def _reader_options(args: argparse.Namespace) -> dict:
    options = {}
    if getattr(args, "hdf5_group", None):
        options["group"] = args.hdf5_group
    if getattr(args, "fits_hdu", None) is not None:
        options["hdu"] = args.fits_hdu
    return options


def _info(args: argparse.Namespace) -> int:
    """describe a HATS catalog or collection"""
    from healforge.catalog.check.info import catalog_info

    print(catalog_info(args.path, **storage_kwargs(args)))
    return 0


def _validate(args: argparse.Namespace) -> int:
    """strict hats validation plus data checks (a collection member by member, a margin against its primary's exact rows, an index against its primary)"""
    from healforge.catalog.check.validate import validate_catalog

    report = validate_catalog(args.catalog, id_column=args.id_column, **storage_kwargs(args))
    print(report, file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1

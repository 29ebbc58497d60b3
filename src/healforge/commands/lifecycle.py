"""Catalog lifecycle subcommands: ``margin`` and ``nest``."""

from __future__ import annotations

import argparse

from healforge.commands import add_engine_args, add_storage_args, engine_kwargs, storage_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "margin",
        help="build the margin cache of a HATS catalog",
        description="Write a margin catalog: for every partition, the rows of other partitions closer "
        "than RADIUS arcseconds to its boundary (exact angular distance).",
    )
    p.add_argument("catalog", help="primary HATS catalog directory")
    p.add_argument("-o", "--output", required=True, help="margin catalog directory to create")
    p.add_argument("--radius", type=float, required=True, help="margin threshold in arcseconds")
    p.add_argument("--name", default=None, help="margin catalog name (default CATALOG_<radius>arcs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_storage_args(p)
    add_engine_args(p)
    p.set_defaults(func=_margin)

    p = subparsers.add_parser(
        "nest",
        help="nest a source catalog into an object catalog",
        description="Write the object catalog with a nested column holding each object's sources "
        "(matched by key over the whole sky), sorted by --sort-by inside each object.",
    )
    p.add_argument("objects", help="object HATS catalog")
    p.add_argument("sources", help="source HATS catalog")
    p.add_argument("-o", "--output", required=True, help="nested catalog directory to create")
    p.add_argument("--on", required=True, help="key column shared by objects and sources")
    p.add_argument("--as", dest="as_name", required=True, help="name of the nested column")
    p.add_argument("--sort-by", default=None, help="source column ordering sources inside an object")
    p.add_argument("--name", default=None, help="catalog name (default: output directory name)")
    p.add_argument(
        "--drop-unmatched", action="store_true", help="leave out sources with no object instead of failing"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_storage_args(p)
    add_engine_args(p)
    p.set_defaults(func=_nest)


def _margin(args: argparse.Namespace) -> int:
    from healforge.catalog.margin import margin

    result = margin(
        args.catalog,
        args.output,
        args.radius,
        name=args.name,
        overwrite=args.overwrite,
        **storage_kwargs(args),
        **engine_kwargs(args),
    )
    print(result)
    return 0


def _nest(args: argparse.Namespace) -> int:
    from healforge.catalog.nest import nest

    result = nest(
        args.objects,
        args.sources,
        args.output,
        on=args.on,
        as_name=args.as_name,
        sort_by=args.sort_by,
        name=args.name,
        on_unmatched="drop" if args.drop_unmatched else "error",
        overwrite=args.overwrite,
        **storage_kwargs(args),
        **engine_kwargs(args),
    )
    print(result)
    return 0

"""Catalog lifecycle subcommands: ``margin`` and ``nest``."""

from __future__ import annotations

import argparse

from healforge.commands import add_engine_args, engine_kwargs


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
    add_engine_args(p)
    p.set_defaults(func=_margin)


def _margin(args: argparse.Namespace) -> int:
    from healforge.catalog.margin import margin

    result = margin(
        args.catalog,
        args.output,
        args.radius,
        name=args.name,
        overwrite=args.overwrite,
        **engine_kwargs(args),
    )
    print(result)
    return 0

"""Catalog lifecycle subcommands: ``margin``, ``index`` and ``nest``."""

from __future__ import annotations

import argparse

from healforge.commands import add_command, call_api, storage_kwargs


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, _margin, "margin", run={"tmp_dir": True})
    _member_args(p, "margin", "margin directory to create (default in a collection: <name>_<R>arcs)")
    p.add_argument("--radius", type=float, required=True, help="margin threshold in arcseconds")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the margin's rows, size, memory per worker and wall time (from the catalog's "
        "metadata; nothing read or written) and stop",
    )

    p = add_command(subparsers, _index, "index", run={"tmp_dir": True})
    _member_args(
        p, "index", "index directory (default: <name>_<col> in a collection, else CATALOG_<col>_index)"
    )
    p.add_argument("--column", required=True, help="column to index")
    p.add_argument("--include-columns", nargs="*", default=[], metavar="COL", help="extra columns to copy")
    p.add_argument("--rows-per-file", type=int, default=2_000_000, help="rows per index data file")

    p = add_command(subparsers, _nest, "nest", run={"tmp_dir": True})
    p.add_argument("objects", help="object HATS catalog")
    p.add_argument("sources", help="source HATS catalog")
    p.add_argument("-o", "--output", required=True, help="nested catalog directory to create")
    p.add_argument(
        "--on",
        required=True,
        help="key column shared by objects and sources, or OBJ_KEY=SRC_KEY (e.g. objectId=diaObjectId)",
    )
    p.add_argument("--as", dest="as_name", required=True, help="name of the nested column")
    p.add_argument("--sort-by", default=None, help="source column ordering sources inside an object")
    p.add_argument("--name", default=None, help="catalog name (default: output directory name)")
    p.add_argument(
        "--drop-unmatched", action="store_true", help="leave out sources with no object instead of failing"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _member_args(p: argparse.ArgumentParser, kind: str, output_help: str) -> None:
    """The options of a command that adds a member (margin, index) to a catalog or collection."""
    p.add_argument("catalog", help="primary HATS catalog or collection directory")
    p.add_argument("-o", "--output", default=None, help=output_help)
    p.add_argument("--name", default=None, help=f"{kind} catalog name (default: the directory name)")
    p.add_argument("--default", action="store_true", help=f"make it the collection's default {kind}")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")


def _margin(args: argparse.Namespace) -> int:
    """build the margin cache of a HATS catalog

    Write a margin catalog: for every partition, the rows of other partitions closer than RADIUS
    arcseconds to its boundary (exact angular distance).
    """
    if args.plan:
        from healforge.catalog.derived.margin_plan import estimate_margin

        plan = estimate_margin(
            args.catalog, args.radius, args.workers, storage_kwargs(args).get("storage_options")
        )
        print("\n".join(plan.lines()))
        return 0
    print(call_api(args, "healforge.catalog.derived.margin:margin", radius_arcsec=args.radius))
    return 0


def _index(args: argparse.Namespace) -> int:
    """build an index catalog (id -> partitions) for lsdb's id_search

    Write a HATS index catalog on COLUMN: sorted by it, mapping each value to the primary
    partitions holding it. Duplicate values are reported.
    """
    print(call_api(args, "healforge.catalog.derived.index:index_catalog"))
    return 0


def _nest(args: argparse.Namespace) -> int:
    """nest a source catalog into an object catalog

    Write the object catalog with a nested column holding each object's sources (matched by key
    over the whole sky), sorted by --sort-by inside each object.
    """
    unmatched = "drop" if args.drop_unmatched else "error"
    print(call_api(args, "healforge.catalog.derived.nest:nest", on_unmatched=unmatched))
    return 0

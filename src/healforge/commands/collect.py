"""``healforge collection``: make a catalog and its margins and indexes a HATS collection."""

from __future__ import annotations

import argparse

from healforge.commands import add_command, call_api


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_command(subparsers, _collection, "collection", run={"engine": False})
    p.add_argument("catalog", help="stand-alone HATS catalog")
    p.add_argument("--margin", action="append", default=[], metavar="DIR", help="margin catalog (repeatable)")
    p.add_argument("--index", action="append", default=[], metavar="DIR", help="index catalog (repeatable)")
    p.add_argument(
        "-o", "--output", default=None, help="collection directory (default: the catalog's own path)"
    )
    p.add_argument("--name", default=None, help="collection name (default: the catalog's obs_collection)")
    p.add_argument(
        "--default-margin", default=None, metavar="DIR", help="margin lsdb attaches (default: the first)"
    )


def _collection(args: argparse.Namespace) -> int:
    """make a catalog and its margins/indexes a HATS collection (lsdb then finds the margin)

    Move a stand-alone catalog, its margins and its indexes (healforge's or hats-import's; those
    recorded by 'healforge margin'/'index' are always included) into a HATS collection:
    CATALOG/<name>, CATALOG/<name>_<R>arcs, CATALOG/<name>_<column> and collection.properties.
    lsdb.open_catalog(CATALOG) then attaches the default margin. With -o the collection is made
    there instead of at CATALOG's path.
    """
    target = "healforge.catalog.derived.make_collection:make_collection"
    print(call_api(args, target, margins=args.margin, indexes=args.index))
    return 0

"""CLI: ``increment`` (nightly nested batches) and ``delete`` (withdrawals)."""

from __future__ import annotations

import argparse

from healforge.commands import add_command, call_api


def _name_files(values: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for value in values:
        name, sep, files = value.partition("=")
        if not sep or not name or not files:
            from healforge.errors import OptionError

            raise OptionError(f"--nested expects NAME=FILES, got {value!r}")
        out.setdefault(name, []).extend(f for f in files.split(",") if f)
    return out


def _sort_option(values: list[str]) -> str | dict[str, str] | None:
    if not values:
        return None
    if len(values) == 1 and "=" not in values[0]:
        return values[0]
    return dict(v.split("=", 1) for v in values)


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, _increment, "increment", run={"tmp_dir": True})
    p.add_argument("catalog")
    p.add_argument("--objects", nargs="+", required=True, metavar="FILE", help="object files of the batch")
    p.add_argument(
        "--nested",
        action="append",
        default=[],
        metavar="NAME=FILES",
        help="source files (comma separated) for nested column NAME; repeat for several",
    )
    p.add_argument(
        "--on",
        required=True,
        metavar="ID",
        help="object key column, or OBJ_KEY=SRC_KEY when the sources name it differently",
    )
    p.add_argument("--latest-by", default=None, metavar="COL", help="object version column (latest wins)")
    p.add_argument(
        "--sort-nested-by",
        action="append",
        default=[],
        metavar="[NAME=]COL",
        help="column ordering the nested lists (default: recorded when nesting)",
    )
    p.add_argument("--batch", default=None, help="batch label (default: UTC time)")
    p.add_argument("--on-orphans", choices=["error", "quarantine"], default="error")
    p.add_argument("--cast", choices=["safe", "none"], default="safe", help="cast value-keeping type changes")
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")
    p.add_argument(
        "--index",
        default=None,
        metavar="COL",
        help="build an index on COL if the catalog has none (lsdb's id_search reads it)",
    )

    p = add_command(sub, _delete, "delete", run={"tmp_dir": True})
    p.add_argument("catalog")
    p.add_argument("--ids", default=None, metavar="FILE", help="text file one id per line, or parquet/csv")
    p.add_argument("--on", default=None, metavar="ID", help="object id column")
    p.add_argument("--nested", default=None, metavar="NAME", help="nested column to delete sources from")
    p.add_argument("--nested-ids", default=None, metavar="FILE")
    p.add_argument("--nested-on", default=None, metavar="SRC_ID", help="source id field")
    p.add_argument("--margin", default=None, help="margin catalog to rebuild (default: the recorded ones)")


def _increment(args: argparse.Namespace) -> int:
    """add a nightly batch of objects with their new sources nested

    Keep each object's latest version, nest every source set into its objects and add them to
    the nested catalog as one transaction (Npix=P/<batch>.parquet; new sky, new pixels).
    """
    nested, sort_by = _name_files(args.nested), _sort_option(args.sort_nested_by)
    print(
        call_api(args, "healforge.catalog.change.increment:increment", nested=nested, sort_nested_by=sort_by)
    )
    return 0


def _delete(args: argparse.Namespace) -> int:
    """withdraw objects, or single nested sources, by id"""
    from healforge.errors import OptionError

    if args.ids is None and args.nested_ids is None:
        raise OptionError("give --ids FILE --on ID and/or --nested NAME --nested-ids FILE --nested-on SRC_ID")
    print(call_api(args, "healforge.catalog.change.delete:delete"))
    return 0

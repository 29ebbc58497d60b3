"""What the ``margin`` and ``index`` commands share: adding a member to a catalog.

Under the catalog's writer lock (a concurrent change would otherwise commit without rebuilding
the new member), after finishing any committed change: a rerun of a finished command answers
from its record; else the member is built (as the next version of a member of that name in a
collection, which is never written over), then listed in the collection or recorded beside a
stand-alone catalog, so that every later change keeps it current.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

from healforge.catalog.change import transaction as txn
from healforge.catalog.change import versions
from healforge.catalog.derived import members
from healforge.catalog.derived.collection import (
    Collection,
    add_member,
    collection_of,
    is_collection,
    open_collection,
)
from healforge.errors import CatalogError, OptionError
from healforge.hats import layout
from healforge.io.storage import AnyPath
from healforge.names import check_name
from healforge.options import RunOptions

Result = TypeVar("Result")


def member_place(
    catalog: str | os.PathLike,
    output: str | os.PathLike | None,
    run: RunOptions,
    name_in_collection: Callable[[str], str],
    beside: Callable[[AnyPath], AnyPath] | None = None,
) -> tuple[AnyPath, Collection | None, AnyPath]:
    """Where a new member of ``catalog`` (a catalog or a collection) goes: its primary catalog,
    collection (``None`` for a stand-alone catalog) and output directory.

    Without ``output`` it is ``name_in_collection(primary's base name)`` inside the collection,
    or ``beside(primary)`` for a stand-alone catalog (an error when ``beside`` is ``None``).
    """
    catalog = run.path(catalog)
    coll = open_collection(catalog) if is_collection(catalog) else collection_of(catalog)
    primary = layout.require_catalog(coll.primary if coll else catalog)
    if output is None:
        if coll is not None:
            output = coll.path / name_in_collection(versions.split_version(primary.name)[0])
        elif beside is None:
            raise OptionError(f"{catalog} is not a collection: give the output directory")
        else:
            output = beside(primary)
    output = run.path(output)
    if coll is not None and str(output.parent) == str(coll.path):
        check_name(output.name, "collection member name")
    return primary, coll, output


def add_member_command(
    member: members.Member,
    primary: AnyPath,
    coll: Collection | None,
    args: dict,
    run: RunOptions,
    build: Callable[..., Result],
    complete: Callable[[dict], Result],
    *,
    overwrite: bool,
    default: bool,
) -> Result:
    """Build ``member`` (its ``path`` is the output asked for) of ``primary`` and list it.

    Parameters
    ----------
    member
        The margin or index to add.
    primary, coll
        The primary catalog and its collection (``None`` for a stand-alone catalog).
    args
        The command's arguments, recorded in the member: a rerun with them finds it finished.
        ``args["name"]`` is the member's ``obs_collection`` (``None``: its directory name).
    run
        How it runs (the engine of the build and its scratch directory).
    build
        ``build(directory, name=, overwrite=, tmp_dir=, engine=, record=)`` builds the member at
        the directory given (which may be a new version of ``member.path``) and returns the
        command's result.
    complete
        The command's result from the record of a finished run.
    overwrite, default
        Replace an existing member; make it the collection's default of its kind.
    """
    kind, output = member.kind, member.path
    with txn.CatalogLock(primary, kind):
        txn.recover(primary)
        target, replaced = versions.member_version(coll.path, output) if coll else (output, None)
        in_collection = coll is not None and str(output.parent) == str(coll.path)
        done = txn.finished_command(coll.path / replaced if replaced else output, kind, args, overwrite)
        if done is not None:  # a rerun of a finished command (perhaps killed before it was listed)
            if in_collection and not replaced:
                current = open_collection(coll.path)
                listed = current.margins if kind == "margin" else current.indexes
                if output.name not in {p.name for p in listed.values()}:
                    add_member(coll.path, output, kind, column=member.column, default=default)
            elif coll is None:
                members.register(primary, member)
            return complete(done)
        if replaced and not overwrite:
            raise CatalogError(f"output {output} exists and is not empty; use --overwrite to replace it")
        with run.engine_scope() as eng:
            result = build(
                target,
                name=args["name"],
                overwrite=overwrite,
                tmp_dir=run.scratch(target),
                engine=eng,
                record=args,
            )
        if replaced:
            versions.replace_member(coll.path, replaced, target)
        elif in_collection:
            add_member(coll.path, output, kind, column=member.column, default=default)
        else:
            members.register(primary, member)
    return result


__all__ = ["add_member_command"]

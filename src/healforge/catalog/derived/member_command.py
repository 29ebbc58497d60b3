"""What the ``margin`` and ``index`` commands share: adding a member to a catalog.

Under the catalog's writer lock (a concurrent change would otherwise commit without rebuilding
the new member), after finishing any committed change: a rerun of a finished command answers
from its record; else the member is built (as the next version of a member of that name in a
collection, which is never written over), then listed in the collection or recorded beside a
stand-alone catalog, so that every later change keeps it current.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from healforge.catalog.change import transaction as txn
from healforge.catalog.change import versions
from healforge.catalog.derived import members
from healforge.catalog.derived.collection import Collection, add_member, open_collection
from healforge.errors import CatalogError
from healforge.io.storage import AnyPath

Result = TypeVar("Result")


def add_member_command(
    member: members.Member,
    primary: AnyPath,
    coll: Collection | None,
    args: dict,
    *,
    overwrite: bool,
    default: bool,
    build: Callable[[AnyPath], Result],
    complete: Callable[[dict], Result],
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
    overwrite, default
        Replace an existing member; make it the collection's default of its kind.
    build
        Builds the member at the directory given (which may be a new version of ``member.path``)
        and returns the command's result.
    complete
        The command's result from the record of a finished run.
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
        result = build(target)
        if replaced:
            versions.replace_member(coll.path, replaced, target)
        elif in_collection:
            add_member(coll.path, output, kind, column=member.column, default=default)
        else:
            members.register(primary, member)
    return result


__all__ = ["add_member_command"]

"""``collection``: make an existing catalog and its margins and indexes into a HATS collection.

``lsdb.open_catalog(path)`` attaches a collection's default margin (and ``id_search`` finds its
indexes) without the user naming them. The members become sub-directories of the collection,
named as hats-import and ``healforge import --collection`` name them (``<name>``,
``<name>_<R>arcs``, ``<name>_<column>``). Without an output the collection takes the catalog's
own place, so every path that named the catalog now opens the collection (every healforge
command accepts one and changes its primary, keeping the members current).

Members are moved, not copied (a rename on local disk, a copy then a delete on object stores).
The move is planned in ``.healforge-collection.json`` inside the collection directory before
anything moves; a run that stops part-way is finished by running the command again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from healforge.catalog.change import transaction as txn
from healforge.catalog.derived.collection import (
    COLLECTION_FILE,
    Collection,
    collection_of,
    index_name,
    is_collection,
    margin_name,
    open_collection,
    write_collection,
)
from healforge.errors import CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

PLAN_FILE = ".healforge-collection.json"
REGISTRIES = ("margins.json", "indexes.json")
# left where they are when the catalog's own directory becomes the collection
_STAY = {PLAN_FILE, txn.LOCK_FILE, COLLECTION_FILE}


@dataclass
class CollectionResult:
    """What :func:`make_collection` did."""

    collection: Collection
    moved: list[tuple[str, str]]

    def __str__(self) -> str:
        coll = self.collection
        lines = [f"made {coll.path} a HATS collection: primary {coll.primary.name}"]
        for name in coll.margins:
            lines.append(f"  margin {name}" + (" (default)" if name == coll.default_margin else ""))
        for column, path in coll.indexes.items():
            lines.append(
                f"  index {path.name} on {column}" + (" (default)" if column == coll.default_index else "")
            )
        lines.append(f"lsdb.open_catalog({str(coll.path)!r}) now attaches the default margin")
        return "\n".join(lines)


def make_collection(
    catalog: str | os.PathLike,
    margins: list[str | os.PathLike] = (),
    indexes: list[str | os.PathLike] = (),
    output: str | os.PathLike | None = None,
    *,
    name: str | None = None,
    default_margin: str | os.PathLike | None = None,
    storage_options: dict | None = None,
) -> CollectionResult:
    """Make ``catalog`` and its margins and indexes a HATS collection.

    Parameters
    ----------
    catalog
        A stand-alone HATS catalog (healforge's or hats-import's).
    margins, indexes
        Margin and index catalog directories of ``catalog`` (healforge's or hats-import's). The
        members recorded beside a healforge catalog (by ``healforge margin`` / ``index``) are
        always included.
    output
        Directory of the collection (must not exist or be empty); default: ``catalog``'s own
        path, the catalog moving into ``catalog/<name>``.
    name
        Collection and primary directory name (default: the catalog's ``obs_collection``).
    default_margin
        Which margin lsdb attaches (default: the first one).
    storage_options
        fsspec options for URL paths.

    Raises
    ------
    CatalogError
        When ``catalog`` is not a catalog or already in a collection, a member is not a margin
        or index of the expected kind, or two members would get the same directory name.
    """
    root = as_path(catalog, storage_options)
    out = as_path(output, storage_options) if output is not None else root
    plan_path = out / PLAN_FILE
    if not plan_path.exists():
        if is_collection(root):
            raise CatalogError(f"{root} is already a HATS collection")
        layout.require_catalog(root)  # before the lock, which would create the directory
    with txn.CatalogLock(root, "collection"):
        if plan_path.exists():
            plan = json.loads(plan_path.read_text())
        else:
            txn.recover(root)
            plan = _plan(root, out, margins, indexes, name, default_margin, storage_options)
            layout.atomic_write_text(plan_path, json.dumps(plan, indent=1))
        _execute(root, out, plan, storage_options)
        write_collection(
            out,
            plan["name"],
            plan["name"],
            plan["margins"] or None,
            plan["default_margin"],
            plan["indexes"] or None,
            next(iter(plan["indexes"]), None),
        )
        for registry in REGISTRIES:
            storage.rmtree(out / plan["name"] / txn.STATE_DIR / registry)
        storage.rmtree(plan_path)
    if not plan["in_place"] and root.exists() and storage.is_empty_dir(root):
        storage.rmtree(root)
    return CollectionResult(open_collection(out), [tuple(m) for m in plan["moves"]])


def _plan(root, out, margins, indexes, name, default_margin, storage_options) -> dict:
    """Check the inputs and decide where every member goes."""
    from healforge.catalog.derived.members import members_of

    if is_collection(root):
        raise CatalogError(f"{root} is already a HATS collection")
    layout.require_catalog(root)
    if collection_of(root) is not None:
        raise CatalogError(f"{root} is already the primary catalog of the collection {root.parent}")
    if str(out).startswith(str(root).rstrip("/") + "/"):
        raise OptionError(
            f"the collection {out} cannot be inside the catalog {root}; omit -o to make it in place"
        )
    if str(out) != str(root) and out.exists() and not storage.is_empty_dir(out):
        raise CatalogError(f"output {out} exists and is not empty")
    props = layout.read_properties(root)
    if props.get("dataproduct_type") not in (None, "object", "source"):
        raise CatalogError(
            f"{root} is a {props['dataproduct_type']} catalog, not an object or source catalog"
        )
    name = name or props.get("obs_collection") or root.name
    if not name or "/" in name or name.startswith("."):
        raise OptionError(f"--name must be a plain directory name, got {name!r}")

    given: dict[str, tuple[str, AnyPath]] = {}
    for member in members_of(root):
        given[str(member.path)] = (member.kind, member.path)
    for kind, paths in (("margin", margins), ("index", indexes)):
        for p in paths:
            path = as_path(p, storage_options)
            given[str(path)] = (kind, path)

    moves = [[str(root), name]]
    margin_dirs: list[str] = []
    index_dirs: dict[str, str] = {}
    chosen_default = None
    for kind, path in given.values():
        if not layout.properties_file(path).exists() and not (path / layout.LEGACY_PROPERTIES_FILE).exists():
            raise CatalogError(f"{kind} {path} is not a HATS catalog (no hats.properties)")
        mprops = layout.read_properties(path)
        if mprops.get("dataproduct_type") != kind:
            raise CatalogError(
                f"{path} is a {mprops.get('dataproduct_type', 'catalog of unknown type')}, not {'an' if kind == 'index' else 'a'} {kind} "
                f"(pass it with --{'index' if mprops.get('dataproduct_type') == 'index' else 'margin'})"
            )
        if kind == "margin":
            rel = margin_name(name, float(mprops[Key.MARGIN_THRESHOLD]))
            margin_dirs.append(rel)
            if default_margin is not None and str(as_path(default_margin, storage_options)) == str(path):
                chosen_default = rel
        else:
            column = mprops[Key.INDEX_COLUMN]
            rel = index_name(name, column)
            if column in index_dirs:
                raise CatalogError(f"two indexes on column {column!r}: keep one")
            index_dirs[column] = rel
        if rel in {r for _, r in moves}:
            raise CatalogError(f"two members would both be {out / rel}: keep one (or rename one with --name)")
        moves.append([str(path), rel])
    if str(out) == str(root):
        taken = [rel for _, rel in moves if (root / rel).exists()]
        if taken:
            raise OptionError(
                f"the catalog already holds an entry named {taken[0]!r}; choose another --name (or use -o)"
            )
    if default_margin is not None and chosen_default is None:
        raise OptionError(f"--default-margin {default_margin} is not one of the margins")
    return {
        "name": name,
        "in_place": str(out) == str(root),
        "moves": moves,
        "margins": margin_dirs,
        "default_margin": chosen_default or (margin_dirs[0] if margin_dirs else None),
        "indexes": index_dirs,
    }


def _execute(root: AnyPath, out: AnyPath, plan: dict, storage_options: dict | None) -> None:
    """Move every member into place (skipping what an earlier run moved already). The catalog's
    entries move one by one into ``out/<name>``, so that its lock stays where it is."""
    targets = {rel for _, rel in plan["moves"]}
    for src, rel in plan["moves"][1:]:
        source = as_path(src, storage_options)
        if source.exists() and not (out / rel).exists():
            storage.replace(source, out / rel)
    primary = out / plan["name"]
    if not root.exists():
        return
    for child in list(root.iterdir()):
        if child.name in _STAY or (plan["in_place"] and child.name in targets):
            continue
        storage.replace(child, primary / child.name)


__all__ = ["CollectionResult", "make_collection"]

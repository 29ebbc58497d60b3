"""The derived catalogs of a catalog (margins, indexes) and their upkeep inside a transaction.

A catalog's members are those its collection lists (when the catalog is a collection's primary)
and those recorded beside a stand-alone catalog in ``.healforge/margins.json`` and
``.healforge/indexes.json``. Any change made through :mod:`healforge.catalog.transaction`
(append, compact, and whatever else commits a manifest) calls :func:`stage_members` just before
its commit: every member is rebuilt from the catalog-to-be into the transaction's staging area,
and the manifest's ``members`` phase swaps the new members in. A crash before the commit leaves
the old catalog and members; after it, the next writer finishes the swap.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from healforge.catalog import format as fmt
from healforge.catalog.collection import collection_of
from healforge.catalog.snapshot import CatalogSnapshot
from healforge.engine import Engine
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

STATE_DIR = ".healforge"
REGISTRIES = {"margin": "margins.json", "index": "indexes.json"}


@dataclass
class Member:
    """A margin or index of a catalog."""

    kind: str
    path: AnyPath
    radius_arcsec: float | None = None
    column: str | None = None
    include_columns: list[str] = field(default_factory=list)

    def describe(self) -> str:
        if self.kind == "margin":
            return f"margin {self.path.name} ({self.radius_arcsec:g} arcsec)"
        return f"index {self.path.name} (on {self.column})"


def _from_properties(kind: str, path: AnyPath) -> Member:
    props = fmt.read_properties(path)
    if kind == "margin":
        return Member("margin", path, radius_arcsec=float(props["hats_margin_threshold"]))
    extra = [c for c in props.get("hats_index_extra_column", "").replace(",", " ").split() if c]
    return Member("index", path, column=props["hats_index_column"], include_columns=extra)


def members_of(catalog: str | os.PathLike) -> list[Member]:
    """Members of ``catalog``: its collection's margins and indexes, then the registered ones."""
    catalog = as_path(catalog)
    options = None if storage.is_local(catalog) else dict(catalog.storage_options)
    found: dict[str, Member] = {}
    coll = collection_of(catalog)
    if coll is not None:
        for path in coll.margins.values():
            if (path / "hats.properties").exists():
                found[str(path)] = _from_properties("margin", path)
        for path in coll.indexes.values():
            if (path / "hats.properties").exists():
                found[str(path)] = _from_properties("index", path)
    for kind, name in REGISTRIES.items():
        registry = catalog / STATE_DIR / name
        for entry in json.loads(registry.read_text()) if registry.exists() else []:
            # recorded without storage options: a member in an object store gets the catalog's
            path = as_path(entry["path"], options if storage.protocol_of(entry["path"]) else None)
            if str(path) in found:
                continue
            if kind == "margin":
                found[str(path)] = Member("margin", path, radius_arcsec=float(entry["radius_arcsec"]))
            else:
                found[str(path)] = Member(
                    "index", path, column=entry["column"], include_columns=list(entry.get("include", []))
                )
    return list(found.values())


def register(catalog: str | os.PathLike, member: Member) -> None:
    """Record a member of a stand-alone catalog so that changes keep it current."""
    path = as_path(catalog) / STATE_DIR / REGISTRIES[member.kind]
    entries = json.loads(path.read_text()) if path.exists() else []
    out = str(as_path(member.path))
    entry = {"path": out}
    if member.kind == "margin":
        entry["radius_arcsec"] = float(member.radius_arcsec)
    else:
        entry |= {"column": member.column, "include": list(member.include_columns)}
    entries = [e for e in entries if e["path"] != out] + [entry]
    fmt.atomic_write_text(path, json.dumps(entries, indent=1))


def build_member(
    member: Member,
    source: CatalogSnapshot,
    output: AnyPath,
    engine: Engine,
    tmp_dir: str | os.PathLike | None = None,
) -> object:
    """Build ``member`` from ``source`` at ``output`` (which must not exist yet); intermediate
    files in ``tmp_dir`` (see :func:`healforge.io.storage.scratch_dir`)."""
    name = fmt.read_properties(member.path).get("obs_collection") if member.path.exists() else None
    name = name or member.path.name
    if member.kind == "margin":
        from healforge.catalog.margin import build_margin

        return build_margin(
            source.root,
            output,
            member.radius_arcsec,
            name=name,
            tmp_dir=tmp_dir,
            engine=engine,
            source=source,
        )
    from healforge.catalog.index import build_index

    return build_index(
        source, output, member.column, member.include_columns, name=name, tmp_dir=tmp_dir, engine=engine
    )


def stage_members(
    root: str | os.PathLike,
    manifest: dict,
    engine: Engine,
    extra: list[Member] = (),
    tmp_dir: str | os.PathLike | None = None,
) -> list[Member]:
    """Rebuild every member of ``root`` (and ``extra``) for the change in ``manifest``, into the
    transaction's staging area, and list them in ``manifest["members"]`` for the commit."""
    from healforge.catalog import transaction as txn

    root = as_path(root)
    members = members_of(root)
    known = {str(m.path) for m in members}
    members += [m for m in extra if str(m.path) not in known]
    if not members:
        return []
    source = CatalogSnapshot.after(root, manifest, txn.staging_dir(root))
    base = txn.members_dir(root)
    storage.rmtree(base)
    swaps = []
    for i, member in enumerate(members):
        build_member(member, source, base / str(i), engine, tmp_dir)
        swaps.append([str(i), _relpath(member.path, root)])
    manifest["members"] = swaps
    return members


def _relpath(path: AnyPath, root: AnyPath) -> str:
    """``path`` relative to ``root`` (``..`` where needed), on any one filesystem."""
    if storage.is_local(root):
        return os.path.relpath(path, root)
    if storage.protocol_of(path) != storage.protocol_of(root):
        raise ValueError(f"member {path} is not on the same filesystem as its catalog {root}")
    import posixpath

    return posixpath.relpath("/" + path.path, "/" + root.path)


__all__ = ["Member", "build_member", "members_of", "register", "stage_members"]

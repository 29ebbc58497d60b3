"""The derived catalogs of a catalog (margins, indexes): which they are, and their registry.

A catalog's members are those its collection lists (when the catalog is a collection's primary)
and those recorded beside a stand-alone catalog in ``.healforge/margins.json`` and
``.healforge/indexes.json`` (paths relative to the catalog, so that a copied or moved catalog
keeps its own). Every change rebuilds them before its commit
(:func:`healforge.catalog.change.writer.stage_members`). This module sits below the margin and
index builders and the writer spine: it imports none of them.
"""

from __future__ import annotations

import json
import os
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

from upath import UPath

from healforge.catalog.derived.collection import collection_of
from healforge.hats import Key, layout
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
    props = layout.read_properties(path)
    if kind == "margin":
        return Member("margin", path, radius_arcsec=float(props[Key.MARGIN_THRESHOLD]))
    extra = [c for c in props.get(Key.INDEX_EXTRA_COLUMN, "").replace(",", " ").split() if c]
    return Member("index", path, column=props[Key.INDEX_COLUMN], include_columns=extra)


def members_of(catalog: str | os.PathLike) -> list[Member]:
    """Members of ``catalog``: its collection's margins and indexes, then the registered ones."""
    catalog = as_path(catalog)
    options = None if storage.is_local(catalog) else dict(catalog.storage_options)
    found: dict[str, Member] = {}
    coll = collection_of(catalog)
    if coll is not None:
        for path in coll.margins.values():
            if layout.properties_file(path).exists():
                found[str(path)] = _from_properties("margin", path)
        for path in coll.indexes.values():
            if layout.properties_file(path).exists():
                found[str(path)] = _from_properties("index", path)
    for kind, name in REGISTRIES.items():
        registry = catalog / STATE_DIR / name
        for entry in json.loads(registry.read_text()) if registry.exists() else []:
            path = registered_path(catalog, entry["path"], options)
            if str(path) in found:
                continue
            if kind == "margin":
                found[str(path)] = Member("margin", path, radius_arcsec=float(entry["radius_arcsec"]))
            else:
                found[str(path)] = Member(
                    "index", path, column=entry["column"], include_columns=list(entry.get("include", []))
                )
    return list(found.values())


def registered_path(catalog: AnyPath, recorded: str, options: dict | None = None) -> AnyPath:
    """A registry's member path: relative to the catalog (as recorded now), absolute, or a URL
    (recorded without storage options: a member in an object store gets the catalog's)."""
    if storage.protocol_of(recorded):
        return as_path(recorded, options)
    if os.path.isabs(recorded) and storage.is_local(catalog):
        return as_path(recorded)
    return member_path(catalog, recorded)


def register(catalog: str | os.PathLike, member: Member) -> None:
    """Record a member of a stand-alone catalog so that changes keep it current (its path
    relative to the catalog when both are on one filesystem)."""
    catalog = as_path(catalog)
    path = catalog / STATE_DIR / REGISTRIES[member.kind]
    entries = json.loads(path.read_text()) if path.exists() else []
    try:
        out = _relpath(as_path(member.path), catalog)
    except ValueError:
        out = str(as_path(member.path))
    entry = {"path": out}
    if member.kind == "margin":
        entry["radius_arcsec"] = float(member.radius_arcsec)
    else:
        entry |= {"column": member.column, "include": list(member.include_columns)}
    options = None if storage.is_local(catalog) else dict(catalog.storage_options)
    same = str(registered_path(catalog, out, options))
    entries = [e for e in entries if str(registered_path(catalog, e["path"], options)) != same] + [entry]
    layout.atomic_write_text(path, json.dumps(entries, indent=1))


def unregister(catalog: AnyPath, base: AnyPath, paths: set[str]) -> None:
    """Drop the registry entries of ``catalog`` naming ``paths`` (relative entries read against
    ``base``, the catalog version they were recorded in): members that its collection lists now."""
    options = None if storage.is_local(catalog) else dict(catalog.storage_options)
    for name in REGISTRIES.values():
        registry = catalog / STATE_DIR / name
        if not registry.exists():
            continue
        entries = json.loads(registry.read_text())
        kept = [e for e in entries if str(registered_path(base, e["path"], options)) not in paths]
        if len(kept) != len(entries):
            layout.atomic_write_text(registry, json.dumps(kept, indent=1))


def member_path(root: AnyPath, rel: str) -> AnyPath:
    """The member at ``rel`` (relative to the catalog, ``..`` resolved lexically, as a URL too)."""
    if storage.is_local(root):
        return Path(os.path.normpath(Path(root) / rel))
    return UPath(f"{root.protocol}://{posixpath.normpath(root.path + '/' + rel)}", **root.storage_options)


def _relpath(path: AnyPath, root: AnyPath) -> str:
    """``path`` relative to ``root`` (``..`` where needed), on any one filesystem."""
    if storage.is_local(root):
        return os.path.relpath(path, root)
    if storage.protocol_of(path) != storage.protocol_of(root):
        raise ValueError(f"member {path} is not on the same filesystem as its catalog {root}")
    return posixpath.relpath("/" + path.path, "/" + root.path)


__all__ = [
    "Member",
    "member_path",
    "members_of",
    "register",
    "registered_path",
    "unregister",
]

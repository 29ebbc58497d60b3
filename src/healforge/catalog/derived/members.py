"""The derived catalogs of a catalog (margins, indexes) and their upkeep inside a transaction.

A catalog's members are those its collection lists (when the catalog is a collection's primary)
and those recorded beside a stand-alone catalog in ``.healforge/margins.json`` and
``.healforge/indexes.json`` (paths relative to the catalog, so that a copied or moved catalog
keeps its own). Any change made through :mod:`healforge.catalog.change.transaction` (append, compact,
and whatever else commits) calls :func:`stage_members` just before its commit: every member is
rebuilt from the catalog-to-be as the next version of that member, a new directory in the
catalog's home (``<member>.v<N>``, see :mod:`healforge.catalog.change.versions`), which the commit lists
in ``collection.properties`` together with the new primary. A crash before the commit leaves
the old catalog and members (the next writer removes the unreferenced new versions).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from healforge.catalog import format as fmt
from healforge.catalog.change.snapshot import CatalogSnapshot
from healforge.catalog.derived.collection import collection_of
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
    from healforge.catalog.change.transaction import member_path

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
    fmt.atomic_write_text(path, json.dumps(entries, indent=1))


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
            fmt.atomic_write_text(registry, json.dumps(kept, indent=1))


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
        from healforge.catalog.derived.margin import build_margin

        return build_margin(
            source.root,
            output,
            member.radius_arcsec,
            name=name,
            tmp_dir=tmp_dir,
            engine=engine,
            source=source,
        )
    from healforge.catalog.derived.index import build_index

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
    """Rebuild every member of ``root`` (and ``extra``) for the change in ``manifest`` as its
    next version in the catalog's home, and list them in ``manifest["members"]`` for the commit
    (``[old path, new name, kind, column]``)."""
    from healforge.catalog.change import transaction as txn
    from healforge.catalog.change import versions

    root = as_path(root)
    members = members_of(root)
    known = {str(m.path) for m in members}
    members += [m for m in extra if str(m.path) not in known]
    home = versions.home_of(root)
    version = manifest.setdefault("version", versions.next_version(home))
    if not members:
        return []
    source = CatalogSnapshot.after(root, manifest, txn.staging_dir(root))
    swaps, names = [], set()
    for member in members:
        base = versions.split_version(member.path.name)[0]
        name, k = versions.versioned(base, version), 1
        while name in names:  # two members of one name (from different places)
            k += 1
            name = versions.versioned(f"{base}-{k}", version)
        names.add(name)
        place = versions.build_dir(root)
        storage.rmtree(place / name)  # never committed (the version is new)
        build_member(member, source, place / name, engine, tmp_dir)
        swaps.append([str(member.path), name, member.kind, member.column])
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


__all__ = [
    "Member",
    "build_member",
    "members_of",
    "register",
    "registered_path",
    "stage_members",
    "unregister",
]

"""Versioned snapshots of a catalog behind ``collection.properties``.

A change never modifies a file that committed metadata lists. It builds the next version of the
primary catalog (and of every member it rebuilds) as a complete new catalog directory inside the
catalog's *home* (its collection directory; a stand-alone catalog is its own home), named
``<base>.v<N>``: unchanged data files are hard-linked (copied on object stores), new files are
moved in, the metadata is written for the new version alone. The commit is one atomic replace
of ``HOME/collection.properties`` (``os.replace`` locally, one put on object stores), which
points readers at the new versions. A stand-alone catalog becomes a collection at its first
change: ``collection.properties`` is written beside its ``hats.properties``, then the root's
``properties`` and ``hats.properties`` are removed (hats prefers a root ``hats.properties``, so
removing it is the switch); its old files stay until retired.

Superseded versions are retired by a later writer once they are older than the grace period
(``HEALFORGE_SNAPSHOT_GRACE`` seconds, default 600), always keeping the previous version, so a
reader that opened an older version keeps working. Versions a killed writer left half-built are
not referenced by ``collection.properties`` and are removed by the next writer at once.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

from healforge.catalog.build import ancillary
from healforge.catalog.derived.collection import (
    COLLECTION_FILE,
    collection_of,
    is_collection,
    open_collection,
    split_version,
    write_collection,
)
from healforge.catalog.derived.members import unregister
from healforge.engine import failpoint
from healforge.errors import CatalogError
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

LOG_FILE = ".healforge-versions.json"
STATE_DIR = ".healforge"  # healforge's state inside a catalog version (batches, registries)
GRACE_ENV = "HEALFORGE_SNAPSHOT_GRACE"
DEFAULT_GRACE_S = 600.0
ROOT_PROPERTIES = (layout.LEGACY_PROPERTIES_FILE, layout.PROPERTIES_FILE)
_VERSIONED = re.compile(r"^(?P<base>.+)\.v(?P<n>[0-9]+)$")


def versioned(base: str, n: int) -> str:
    """Directory name of version ``n`` of ``base`` (version 1 keeps the plain name)."""
    return base if n == 1 else f"{base}.v{n}"


def grace_seconds() -> float:
    """How long a superseded version stays (``HEALFORGE_SNAPSHOT_GRACE``, seconds)."""
    value = os.environ.get(GRACE_ENV)
    return DEFAULT_GRACE_S if value in (None, "") else max(0.0, float(value))


def home_of(root: str | os.PathLike) -> AnyPath:
    """The directory holding ``root``'s versions, lock and collection: the parent collection when
    ``root`` is (a version of) its primary catalog, else ``root`` itself."""
    root = as_path(root)
    coll = collection_of(root)
    return coll.path if coll is not None else root


def build_dir(root: AnyPath) -> AnyPath:
    """Where a change builds the next versions: the home, except for a stand-alone catalog's
    first change, which builds beside it (hats' strict validation counts every
    ``Norder*/Dir*/Npix*`` path below a catalog) and moves them in just before the switch."""
    home = home_of(root)
    return home.with_name(f".{home.name}.healforge-next") if str(root) == str(home) else home


def _log(home: AnyPath) -> dict:
    path = home / LOG_FILE
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _save_log(home: AnyPath, log: dict) -> None:
    storage.atomic_write_text(home / LOG_FILE, json.dumps(log, indent=1))


def _converted(home: AnyPath) -> bool:
    """Whether ``home`` is a stand-alone catalog turned into a collection by a change."""
    return is_collection(home) and split_version(open_collection(home).primary.name)[0] == home.name


def references(home: AnyPath) -> dict[str, int]:
    """Names (inside ``home``) of the catalogs the committed state refers to, with their version."""
    if not is_collection(home):
        return {home.name: 1}
    coll = open_collection(home)
    refs = [coll.primary, *coll.margins.values(), *coll.indexes.values()]
    out = {}
    for path in refs:
        if str(path.parent) == str(home):
            out[path.name] = split_version(path.name)[1]
    return out


def next_version(home: AnyPath) -> int:
    """The version number of the next change: above every committed or present version."""
    refs = references(home)
    bases = {split_version(n)[0] for n in refs}
    found = [n for n in refs.values()] + [int(k) for k in _log(home).get("committed", {})]
    for entry in _entries(home):
        base, n = split_version(entry.name)
        if base in bases:
            found.append(n)
    return max(found, default=1) + 1


def _entries(home: AnyPath) -> list[AnyPath]:
    if storage.is_local(home):
        return sorted(Path(home).iterdir()) if Path(home).is_dir() else []
    fs, target = storage.filesystem_of(home)
    try:
        names = fs.ls(target, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return [home / posix.rstrip("/").rsplit("/", 1)[-1] for posix in names]


def _files_under(entry: AnyPath) -> list[AnyPath]:
    found = [p for p, _ in storage.list_files(entry)]
    return found or ([entry] if entry.is_file() else [])


def _state_entry(name: str) -> bool:
    """Top-level entries of a home that belong to no catalog version."""
    return name in (COLLECTION_FILE, LOG_FILE) or (name.startswith(".") and name != STATE_DIR)


def catalog_entries(root: AnyPath, home: AnyPath) -> list[AnyPath]:
    """Top-level entries of the catalog version at ``root`` (for a stand-alone home: what is not
    the home's own state, another version or a member catalog)."""
    if str(root) != str(home):
        return _entries(root)
    refs = references(home)
    bases = {split_version(n)[0] for n in refs} | {home.name}
    out = []
    for entry in _entries(home):
        if _state_entry(entry.name) or (split_version(entry.name)[0] in bases and entry.name != home.name):
            continue
        if _VERSIONED.match(entry.name) or layout.properties_file(entry).exists():
            continue
        out.append(entry)
    return out


def build(root: AnyPath, manifest: dict, staging: AnyPath, histogram: np.ndarray) -> AnyPath:
    """Build the version the change in ``manifest`` leads to, beside ``root``, with the row-count
    map ``histogram``; nothing that committed metadata lists is modified. Returns the new
    version's directory."""
    root = as_path(root)
    home = home_of(root)
    base = split_version(root.name)[0] if str(root) != str(home) else home.name
    final = home / versioned(base, int(manifest["version"]))
    new = build_dir(root) / final.name
    storage.rmtree(new)
    if str(root) == str(home):
        log = _log(home)
        log["legacy"] = sorted({e.name for e in catalog_entries(root, home)} | {layout.DATASET_DIR})
        _save_log(home, log)
    retired = [r.rstrip("/") for r in manifest.get("retire", [])]
    convert = {tuple(p) for p in manifest.get("convert", [])}
    local = storage.is_local(root)
    for entry in catalog_entries(root, home):
        for src in _files_under(entry):
            rel = "/".join(src.parts[len(root.parts) :])
            if any(part.startswith(".") and part != STATE_DIR for part in rel.split("/")):
                continue  # temporary files of a killed writer
            data = rel.startswith(layout.DATASET_DIR + "/") and layout.is_data_file(
                rel[len(layout.DATASET_DIR) + 1 :]
            )
            if data and any(rel == r or rel.startswith(r + "/") for r in retired):
                continue
            if data and rel.count("/") == 3 and layout.pixel_of_path(rel) in convert:
                rel = rel[: -len(".parquet")] + "/" + src.name
            dst = new.joinpath(*rel.split("/"))
            if data and local:
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
            else:
                storage.copy_file(src, dst)
    failpoint("Apply", 1)
    for name, rel in manifest.get("move", []):
        storage.replace(staging / name, new.joinpath(*str(rel).split("/")))
    failpoint("Apply", 2)
    layout.write_partition_info(new, [tuple(p) for p in manifest["pixels"]])
    total = layout.write_dataset_metadata(new)
    if total != int(manifest["properties"][Key.NROWS]):
        raise CatalogError(
            f"after the change the data files hold {total} rows, expected {manifest['properties'][Key.NROWS]}"
        )
    if layout.has_multi_file_pixels(new):
        # hats 0.11 counts every file listed in _metadata as one partition, so a pixel with several
        # files makes strict validation fail; like the HATS incremental layout, drop the file
        # until compaction leaves one file per pixel.
        storage.rmtree(layout.metadata_file(new))
    layout.write_skymaps(new, histogram)
    layout.write_properties(new, **manifest["properties"])
    ancillary.refresh(new, histogram)
    failpoint("Apply", 3)
    state = new / STATE_DIR
    for name, content in manifest.get("state", {}).items():
        storage.atomic_write_text(state / name, json.dumps(content, indent=1))
    rebuilt = {m[0] for m in manifest.get("members", [])}
    if rebuilt:
        unregister(new, root, rebuilt)
    failpoint("Apply", 4)
    return final


def switch(root: AnyPath, new: AnyPath, manifest: dict) -> None:
    """The commit: one atomic replace of ``collection.properties`` pointing at ``new`` and the
    rebuilt members (for a stand-alone catalog, then the removal of its root properties)."""
    home = home_of(root)
    rebuilt = {old: (kind, name, column) for old, name, kind, column in manifest.get("members", [])}
    place = build_dir(root)
    if str(place) != str(home):  # a stand-alone catalog's first change: move the versions in
        for name in [new.name, *(member for _, member, _ in rebuilt.values())]:
            storage.replace(place / name, home / name)
        storage.rmtree(place)
    if is_collection(home):
        coll = open_collection(home)
        name = coll.name
        margins = {str(p): m for m, p in coll.margins.items()}
        indexes = {col: str(p) for col, p in coll.indexes.items()}
        default_margin, default_index = coll.default_margin, coll.default_index
    else:
        name = layout.read_properties(root).get("obs_collection") or home.name
        margins, indexes, default_margin, default_index = {}, {}, None, None

    def rel(path: str) -> str:
        prefix = str(home).rstrip("/") + "/"
        return path[len(prefix) :] if path.startswith(prefix) else path

    out_margins = dict(margins)  # path -> name in collection.properties
    out_indexes = {col: rel(p) for col, p in indexes.items()}
    for old, (kind, member, column) in rebuilt.items():
        if kind == "margin":
            was = out_margins.get(old)
            out_margins[old] = member
            if default_margin is None or default_margin == was:
                default_margin = member
        else:
            out_indexes[column] = member
            default_index = default_index or column
    write_collection(
        home,
        name,
        new.name,
        [rel(m) for m in out_margins.values()] or None,
        default_margin,
        out_indexes or None,
        default_index,
    )
    finish_switch(home)
    _note_left_behind(home, rebuilt)
    log = _log(home)
    log.setdefault("committed", {})[str(manifest["version"])] = time.time()
    _save_log(home, log)


def _note_left_behind(home: AnyPath, rebuilt: dict) -> None:
    """Tell the user that a member recorded beside a stand-alone catalog now lives in its home
    (the original directory is never written again, so reading it gives stale answers)."""
    prefix = str(home).rstrip("/") + "/"
    for old, (kind, member, _) in rebuilt.items():
        if not old.startswith(prefix):
            print(
                f"note: the {kind} {old} is no longer kept current; its current version is "
                f"{home / member} (lsdb.open_catalog({str(home)!r}) attaches it)",
                file=sys.stderr,
            )


def member_version(home: AnyPath, output: AnyPath) -> tuple[AnyPath, str | None]:
    """Where to build a member asked for at ``output``: when ``output`` is in the collection
    ``home`` and a current member has its name (in any version), that member's next version and
    the name it replaces (a rebuild never writes over a committed member); else ``output``."""
    if str(output.parent) != str(home) or not is_collection(home):
        return output, None
    coll = open_collection(home)
    base = split_version(output.name)[0]
    for path in [*coll.margins.values(), *coll.indexes.values()]:
        if str(path.parent) == str(home) and split_version(path.name)[0] == base:
            return home / versioned(base, next_version(home)), path.name
    return output, None


def replace_member(home: AnyPath, old: str, new: AnyPath) -> None:
    """Commit a rebuilt member: one atomic replace of ``collection.properties`` naming ``new``
    where it named ``old`` (which is retired like any superseded version)."""
    coll = open_collection(home)

    def swap(path: AnyPath, raw: str) -> str:
        return new.name if str(path.parent) == str(home) and path.name == old else raw

    margins = [swap(p, m) for m, p in coll.margins.items()]
    default_margin = coll.default_margin
    if default_margin in coll.margins:
        default_margin = swap(coll.margins[default_margin], default_margin)
    prefix = str(home).rstrip("/") + "/"
    indexes = {
        c: swap(p, str(p)[len(prefix) :] if str(p).startswith(prefix) else str(p))
        for c, p in coll.indexes.items()
    }
    primary = str(coll.primary)[len(prefix) :] if str(coll.primary).startswith(prefix) else str(coll.primary)
    write_collection(
        home, coll.name, primary, margins or None, default_margin, indexes or None, coll.default_index
    )
    log = _log(home)
    log.setdefault("committed", {})[str(split_version(new.name)[1])] = time.time()
    _save_log(home, log)


def finish_switch(home: AnyPath) -> None:
    """Remove a converted stand-alone catalog's root properties (which hats would read first)."""
    if is_collection(home) and any((home / n).exists() for n in ROOT_PROPERTIES):
        if _converted(home):
            storage.remove_files([home / n for n in ROOT_PROPERTIES])


def cleanup(root: str | os.PathLike, now: float | None = None) -> list[str]:
    """Remove what no committed state refers to (the caller holds the writer lock): versions a
    killed writer left half-built, at once; superseded versions past the grace period, keeping
    the previous one of each catalog. Returns the names removed."""
    home = home_of(as_path(root))
    finish_switch(home)
    storage.rmtree(home.with_name(f".{home.name}.healforge-next"))
    now = time.time() if now is None else now
    grace = grace_seconds()
    refs = references(home)
    current = max(refs.values())
    bases = {split_version(n)[0]: v for n, v in refs.items()}
    log = _log(home)
    committed = log.setdefault("committed", {})
    changed = False
    if str(current) not in committed and current > 1:
        committed[str(current)] = now
        changed = True
    removed = []
    present: dict[str, dict[int, list[AnyPath]]] = {}
    for entry in _entries(home):
        if entry.name.startswith(".") and (
            ".building-" in entry.name or ".old-" in entry.name or entry.name.endswith(".tmp")
        ):
            storage.rmtree(entry)  # a member build or a temporary file a killed writer left
            removed.append(entry.name)
            continue
        base, n = split_version(entry.name)
        if entry.name in refs or (base not in bases and not _VERSIONED.match(entry.name)):
            continue
        if n > current:
            storage.rmtree(entry)  # half-built by a killed writer: never committed
            removed.append(entry.name)
        elif base in bases:
            present.setdefault(base, {}).setdefault(n, []).append(entry)
    if _converted(home) and log.get("legacy"):
        legacy = [home / n for n in log["legacy"] if (home / n).exists()]
        if legacy:
            present.setdefault(home.name, {}).setdefault(1, []).extend(legacy)
        else:
            del log["legacy"]
            changed = True
    for base, versions in present.items():
        order = sorted(versions)
        after = order + [bases[base]]
        for i, n in enumerate(order[:-1]):  # the previous version (the last) always stays
            nxt = str(after[i + 1])
            if nxt not in committed:
                committed[nxt] = now
                changed = True
            elif now - float(committed[nxt]) >= grace:
                for entry in versions[n]:
                    storage.rmtree(entry)
                    removed.append(entry.name)
    if changed or removed:
        _save_log(home, log)
    return removed


__all__ = [
    "build",
    "cleanup",
    "grace_seconds",
    "home_of",
    "next_version",
    "split_version",
    "switch",
    "versioned",
]

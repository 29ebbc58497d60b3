"""HATS collections: ``collection.properties`` and the sub-catalogs it lists.

A collection directory holds a primary catalog, any number of margins and indexes (each a
sub-catalog directory, named as hats-import names them: ``<name>``, ``<name>_<R>arcs``,
``<name>_<column>``) and ``collection.properties``, read by hats as
:class:`hats.catalog.dataset.collection_properties.CollectionProperties`.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from healforge import __version__
from healforge.errors import CatalogError
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

COLLECTION_FILE = "collection.properties"
_VERSIONED = re.compile(r"^(?P<base>.+)\.v(?P<n>[0-9]+)$")


def split_version(name: str) -> tuple[str, int]:
    """``("cat", 3)`` for a catalog version directory ``cat.v3``; a plain name is version 1
    (see :mod:`healforge.catalog.change.versions`)."""
    m = _VERSIONED.match(name)
    return (m["base"], int(m["n"])) if m else (name, 1)


@dataclass
class Collection:
    """A collection on disk or in an object store: its primary catalog and members (absolute
    paths or UPaths carrying the collection's storage options)."""

    path: AnyPath
    name: str
    primary: AnyPath
    margins: dict[str, AnyPath] = field(default_factory=dict)
    default_margin: str | None = None
    indexes: dict[str, AnyPath] = field(default_factory=dict)
    default_index: str | None = None

    def __str__(self) -> str:
        return (
            f"collection {self.name} at {self.path}: primary {self.primary.name}, "
            f"{len(self.margins)} margin(s), {len(self.indexes)} index(es)"
        )


def is_collection(path: str | os.PathLike, storage_options: dict | None = None) -> bool:
    """Whether ``path`` (local or URL) is a directory holding ``collection.properties``."""
    return (as_path(path, storage_options) / COLLECTION_FILE).is_file()


def _options(root: AnyPath) -> dict | None:
    return None if storage.is_local(root) else dict(root.storage_options)


def _inner(root: AnyPath, value: str) -> AnyPath:
    """A member path of the properties file: relative to the collection, absolute, or a URL."""
    if storage.protocol_of(value) or Path(value).is_absolute():
        return as_path(value, _options(root))
    return root.joinpath(*value.split("/"))


def open_collection(path: str | os.PathLike, storage_options: dict | None = None) -> Collection:
    """Read ``collection.properties`` (the fields and checks of hats' ``CollectionProperties``,
    without importing hats) and resolve its members."""
    root = as_path(path, storage_options)
    if not is_collection(root):
        raise CatalogError(f"{root} is not a HATS collection (no {COLLECTION_FILE})")
    try:
        props = parse_collection((root / COLLECTION_FILE).read_text())
    except (ValueError, KeyError) as exc:
        raise CatalogError(f"{root / COLLECTION_FILE} is invalid: {exc}") from exc
    return Collection(
        path=root,
        name=props["name"],
        primary=_inner(root, props["primary"]),
        margins={m: _inner(root, m) for m in props["margins"]},
        default_margin=props["default_margin"],
        indexes={col: _inner(root, d) for col, d in props["indexes"].items()},
        default_index=props["default_index"],
    )


def _words(value: str | None) -> list[str]:
    return [w for w in re.split(r"[; ,\n]", value or "") if w]


def parse_collection(text: str) -> dict:
    """The fields of a ``collection.properties`` text as hats reads them: lists split on spaces,
    commas or semicolons, indexes as pairs of column and path, defaults among the listed."""
    raw = layout.parse_properties(text)
    for key in ("obs_collection", "hats_primary_table_url"):
        if not raw.get(key):
            raise ValueError(f"{key} is missing")
    words = _words(raw.get("all_indexes"))
    if len(words) % 2:
        raise ValueError("all_indexes should contain pairs of name and path")
    out = {
        "name": raw["obs_collection"],
        "primary": raw["hats_primary_table_url"],
        "margins": _words(raw.get("all_margins")),
        "default_margin": raw.get("default_margin") or None,
        "indexes": dict(zip(words[::2], words[1::2], strict=True)),
        "default_index": raw.get("default_index") or None,
    }
    if out["default_margin"] is not None and out["default_margin"] not in out["margins"]:
        raise ValueError(f"default_margin `{out['default_margin']}` not found in all_margins")
    if out["default_index"] is not None and out["default_index"] not in out["indexes"]:
        raise ValueError(f"default_index `{out['default_index']}` not found in all_indexes")
    return out


def resolve_catalog(path: str | os.PathLike, storage_options: dict | None = None) -> AnyPath:
    """The primary catalog of a collection (also given one of its primary's versions, current
    or superseded), or ``path`` itself when it is not a collection."""
    path = as_path(path, storage_options)
    if is_collection(path):
        return open_collection(path).primary
    coll = collection_of(path)
    return coll.primary if coll is not None else path


def collection_of(catalog: str | os.PathLike, storage_options: dict | None = None) -> Collection | None:
    """The collection whose primary catalog ``catalog`` is, if any (its parent directory); a
    version of the primary (``<name>.v<N>``, current or superseded) counts as the primary."""
    catalog = as_path(catalog, storage_options)
    parent = catalog.parent
    if str(parent) == str(catalog) or not is_collection(parent):
        return None
    coll = open_collection(parent)
    same = split_version(coll.primary.name)[0] == split_version(catalog.name)[0]
    return coll if same and str(coll.primary.parent).rstrip("/") == str(parent).rstrip("/") else None


def pretty_angle(arcsec: float) -> str:
    """hats-import's suffix for a margin radius (``10arcs``, ``5arcmin``, ``1deg``, ``500msec``)."""
    if arcsec >= 3600:
        return f"{int(arcsec / 3600)}deg"
    if arcsec >= 60:
        return f"{int(arcsec / 60)}arcmin"
    if arcsec >= 1:
        return f"{int(arcsec)}arcs"
    return f"{int(arcsec * 1000)}msec"


def margin_name(catalog_name: str, radius_arcsec: float) -> str:
    """Directory name hats-import gives a margin of ``catalog_name``."""
    return f"{catalog_name}_{pretty_angle(radius_arcsec)}"


def index_name(catalog_name: str, column: str) -> str:
    """Directory name hats-import gives an index of ``catalog_name`` on ``column``."""
    return f"{catalog_name}_{column}"


def write_collection(
    path: str | os.PathLike,
    name: str,
    primary: str,
    margins: list[str] | None = None,
    default_margin: str | None = None,
    indexes: dict[str, str] | None = None,
    default_index: str | None = None,
) -> None:
    """Write ``collection.properties`` (members relative to the collection, as hats-import does),
    in the format and with the provenance of hats' ``CollectionProperties``."""
    from healforge.hats.layout import atomic_write_text, dir_size

    root = as_path(path)
    lists = {
        "all_margins": list(margins or []),
        "all_indexes": [w for pair in (indexes or {}).items() for w in pair],
    }
    for word in [name, primary, *lists["all_margins"], *lists["all_indexes"]]:
        if not word or re.search(r"[\s,;=]", str(word)):
            raise CatalogError(
                f"invalid collection properties for {root}: {word!r} cannot be listed in "
                f"{COLLECTION_FILE} (empty, or holds a space, comma, semicolon or '=')"
            )
    info = {
        "obs_collection": name,
        Key.PRIMARY_TABLE_URL: primary,
        "all_margins": " ".join(lists["all_margins"]) or None,
        "default_margin": default_margin,
        "all_indexes": " ".join(lists["all_indexes"]) or None,
        "default_index": default_index,
        Key.BUILDER: f"healforge v{__version__}, hats v{_hats_version()}",
        Key.CREATION_DATE: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M%Z"),
        Key.ESTSIZE: int(math.ceil(dir_size(root) / 1024)) if root.exists() else 0,
        "hats_release_date": HATS_RELEASE_DATE,
        Key.VERSION: "v1.0",
    }
    text = "#HATS Collection\n" + "".join(f"{k}={v}\n" for k, v in info.items() if v is not None)
    try:
        parse_collection(text)
    except ValueError as exc:
        raise CatalogError(f"invalid collection properties for {root}: {exc}") from exc
    atomic_write_text(root / COLLECTION_FILE, text)


#: The HATS format release hats 0.11 writes in ``hats_release_date``.
HATS_RELEASE_DATE = "2025-08-22"


def _hats_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hats")
    except PackageNotFoundError:
        return "unknown"


def _relative(root: AnyPath, member: str | os.PathLike) -> str:
    """``member`` relative to the collection when inside it, else its absolute path or URL."""
    base, text = str(root).rstrip("/") + "/", str(as_path(member, _options(root)))
    return text[len(base) :] if text.startswith(base) else text


def add_member(
    collection: str | os.PathLike,
    member: str | os.PathLike,
    kind: str,
    column: str | None = None,
    default: bool = False,
) -> Collection:
    """List a margin (``kind="margin"``) or index (``kind="index"``, on ``column``) in the
    collection; it becomes the default when ``default`` or when it is the first of its kind."""
    coll = open_collection(collection)
    rel = _relative(coll.path, member)
    margins = {m: _relative(coll.path, p) for m, p in coll.margins.items()}
    indexes = {c: _relative(coll.path, p) for c, p in coll.indexes.items()}
    default_margin, default_index = coll.default_margin, coll.default_index
    if kind == "margin":
        margins[rel] = rel
        if default or default_margin is None:
            default_margin = rel
    elif kind == "index":
        if not column:
            raise ValueError("an index member needs its column")
        indexes[column] = rel
        if default or default_index is None:
            default_index = column
    else:
        raise ValueError(f"member kind must be 'margin' or 'index', got {kind!r}")
    write_collection(
        coll.path,
        coll.name,
        _relative(coll.path, coll.primary),
        list(margins),
        default_margin,
        indexes,
        default_index,
    )
    return open_collection(coll.path)


__all__ = [
    "Collection",
    "add_member",
    "collection_of",
    "index_name",
    "is_collection",
    "margin_name",
    "open_collection",
    "resolve_catalog",
    "split_version",
    "write_collection",
]

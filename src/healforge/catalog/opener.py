"""One opener: what a path or URL names, local and remote alike.

Every command that accepts "a catalog or input files" (aggregate, re-import, validate, info) asks
:func:`open_path` instead of testing for files itself, so that ``/data/cat``, ``file:///data/cat``
and ``s3://bucket/cat`` are recognised the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from healforge.io.storage import AnyPath, as_path

#: Kinds of :class:`Opened`: a HATS collection; a HATS table of the given ``dataproduct_type``
#: (object and source tables are ``catalog``); a directory of input files; one input file; a glob.
KINDS = ("collection", "catalog", "margin", "index", "association", "directory", "file", "glob", "missing")
_TABLE_KINDS = {"object": "catalog", "source": "catalog", "margin": "margin", "index": "index"}


@dataclass(frozen=True)
class Opened:
    """What :func:`open_path` found.

    Attributes
    ----------
    kind
        One of :data:`KINDS`.
    path
        The path as given (a ``UPath`` carrying the storage options for a URL).
    table
        The HATS table to read: the path itself, or a collection's primary catalog.
    properties
        ``hats.properties`` of ``table`` (empty for plain files).
    """

    kind: str
    path: AnyPath
    table: AnyPath | None = None
    properties: dict[str, str] = field(default_factory=dict)

    @property
    def is_hats(self) -> bool:
        """Whether a HATS table (catalog, margin, index, or a collection's primary) was found."""
        return self.table is not None


def open_path(path: str | os.PathLike | AnyPath, storage_options: dict | None = None) -> Opened:
    """Classify ``path`` (local path, ``file://`` or any fsspec URL).

    A collection resolves to its primary catalog; a directory holding ``hats.properties`` is a
    HATS table whose kind is its ``dataproduct_type``.
    """
    from healforge.catalog.derived.collection import COLLECTION_FILE, resolve_catalog
    from healforge.hats import layout

    if isinstance(path, str) and any(ch in path for ch in "*?["):
        return Opened("glob", as_path(path, storage_options))
    p = as_path(path, storage_options)
    if (p / COLLECTION_FILE).is_file():
        primary = resolve_catalog(p)
        return Opened("collection", p, primary, _properties(primary, layout))
    if layout.properties_file(p).is_file():
        props = layout.read_properties(p)
        return Opened(_TABLE_KINDS.get(props.get("dataproduct_type", ""), "association"), p, p, props)
    if p.is_dir():
        return Opened("directory", p)
    if p.is_file():
        return Opened("file", p)
    return Opened("missing", p)


def _properties(table: AnyPath, layout) -> dict[str, str]:
    return layout.read_properties(table) if layout.properties_file(table).is_file() else {}


__all__ = ["KINDS", "Opened", "open_path"]

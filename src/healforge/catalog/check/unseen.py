"""Files in a catalog's ``dataset/`` that readers would not see as data (or would see but
healforge would not): hidden names, non-parquet files, subdirectories of pixel directories.

pyarrow (and so lsdb) skips every path component starting with ``.`` or ``_`` and reads every
other file below a ``Npix=P/`` directory, subdirectories included. Rows in a file that one side
reads and the other does not are silently lost or counted twice, so writers and ``validate``
refuse such files instead of skipping them.
"""

from __future__ import annotations

import re

from healforge.errors import CatalogError
from healforge.hats import layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

_METADATA = (layout.METADATA_FILE, layout.COMMON_METADATA_FILE)
_PIXEL = re.compile(r"^Norder=\d+/Dir=\d+/Npix=\d+")
_SINGLE = re.compile(r"^Norder=\d+/Dir=\d+/Npix=\d+\.parquet$")
_IN_DIR = re.compile(r"^Norder=\d+/Dir=\d+/Npix=\d+/[^/]+\.parquet$")


def unseen_reason(rel: str) -> str | None:
    """Why the file ``rel`` (relative to ``dataset/``) is not a data file that readers and
    healforge both read, or ``None`` when it is one (or a metadata file)."""
    parts = rel.split("/")
    if rel in _METADATA:
        return None
    hidden = [p for p in parts if p[:1] in (".", "_")]
    if hidden:
        return f"readers skip it (the name {hidden[0]!r} starts with {hidden[0][0]!r})"
    if _SINGLE.match(rel) or _IN_DIR.match(rel):
        return None
    if _PIXEL.match(rel) and len(parts) > 4 and parts[2].startswith("Npix="):
        return "it lies in a subdirectory of a pixel directory"
    if _PIXEL.match(rel) and len(parts) == 4:
        return "it is not a .parquet file"
    return "it is not part of the HATS layout"


def unseen_files(root: str | AnyPath, pixel_dirs_only: bool = False) -> list[tuple[str, str]]:
    """``(path relative to dataset/, reason)`` for every file of the catalog's ``dataset/``
    that :func:`unseen_reason` refuses (with ``pixel_dirs_only``: only those inside
    ``Npix=P/`` directories)."""
    base = as_path(root) / layout.DATASET_DIR
    out = []
    for path, _ in storage.list_files(base):
        rel = "/".join(path.parts[len(base.parts) :])
        parts = rel.split("/")
        if pixel_dirs_only and not (len(parts) >= 4 and _PIXEL.match(rel) and parts[2].startswith("Npix=")):
            continue
        reason = unseen_reason(rel)
        if reason:
            out.append((rel, reason))
    return out


def check_pixel_dirs(root: str | AnyPath, command: str) -> None:
    """A one-line :class:`CatalogError` naming the first file inside a pixel directory that
    readers would not see as data (hidden, not parquet, in a subdirectory)."""
    found = unseen_files(root, pixel_dirs_only=True)
    if found:
        rel, reason = found[0]
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise CatalogError(
            f"{command} stopped: {as_path(root) / layout.DATASET_DIR / rel}: {reason}{more}; "
            "move it out of the catalog (its rows would be lost or counted twice)"
        )


__all__ = ["check_pixel_dirs", "unseen_files", "unseen_reason"]

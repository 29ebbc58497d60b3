"""Writer lock and commit protocol for changing an existing catalog (append, compact, ...).

A change stages its new files under ``HOME/.healforge-txn/`` (flat names, outside any directory
a reader lists), where ``HOME`` is the catalog's collection directory, or the catalog itself when
it stands alone (see :mod:`healforge.catalog.change.versions`). The commit builds the catalog's next
version as a new directory (unchanged data files hard-linked, new files moved in, members rebuilt
beside it) and switches ``HOME/collection.properties`` to it in one atomic replace. A kill before
that replace leaves the old catalog, untouched (the next writer removes the half-built version
and the staging area); after it, the new one. Readers never see a mixture: no file that committed
metadata lists is changed, moved or removed in place, and superseded versions are retired only
after a grace period.

On object stores (any fsspec URL, through :mod:`healforge.io.storage`) unchanged files are
copied into the new version and the commit is one put of ``collection.properties``. The
change's intermediate files (``work``) are always local.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import shutil
import socket
import time
import uuid
from pathlib import Path

from upath import UPath

from healforge.catalog import format as fmt
from healforge.errors import CatalogError
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

TXN_DIR = ".healforge-txn"
LOCK_FILE = ".healforge.lock"
STATE_DIR = ".healforge"


class CatalogLock:
    """Exclusive writer lock on a catalog (``CATALOG/.healforge.lock``).

    A second writer is refused with a message naming the holder. A lock left by a process that
    no longer runs on this host is taken over.

    On object stores the lock is a conditional put (write-if-absent) where the backend supports
    it (AWS S3, moto, recent S3-compatible servers); elsewhere "check, then write", which two
    writers starting at the same instant can both pass (see :func:`storage.create_exclusive`).
    """

    def __init__(self, root: str | AnyPath, purpose: str):
        from healforge.catalog.change.versions import home_of

        self.path = home_of(as_path(root)) / LOCK_FILE
        self.purpose = purpose

    def __enter__(self) -> CatalogLock:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.time(),
        }
        for _ in range(2):
            if not storage.create_exclusive(self.path, json.dumps(info).encode()):
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
                    raise CatalogError(
                        f"catalog {self.path.parent} is being changed by another writer "
                        f"({holder.get('purpose')}, pid {holder.get('pid')} on {holder.get('host')} since {since}); "
                        f"wait for it to finish (if no such process runs, delete {self.path})"
                    ) from None
                storage.rmtree(self.path)
                continue
            return self
        raise CatalogError(f"could not take the writer lock {self.path}")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    @staticmethod
    def _stale(holder: dict) -> bool:
        if holder.get("host") != socket.gethostname():
            return False
        pid = int(holder.get("pid", 0))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def __exit__(self, *exc) -> None:
        storage.rmtree(self.path)


def txn_dir(root: str | AnyPath) -> AnyPath:
    """The change's staging area, in the catalog's home (stable across versions)."""
    from healforge.catalog.change.versions import home_of

    return home_of(as_path(root)) / TXN_DIR


def staging_dir(root: str | AnyPath) -> AnyPath:
    """Where a change writes its new files before the commit (flat names: nothing in it may look
    like a ``Norder=/Dir=/Npix=`` path, which hats' validation would count as a partition)."""
    return txn_dir(root) / "staged"


def begin(root: str | AnyPath, tmp_dir: str | os.PathLike | None = None):
    """Start a change (caller holds the lock): recover any earlier one, return a clean local work
    dir (``TXN/work`` for a local catalog without ``tmp_dir``, else in ``tmp_dir`` or the system
    temp dir)."""
    recover(root)
    work = storage.scratch_dir(txn_dir(root), "work", tmp_dir)
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    staging_dir(root).mkdir(parents=True, exist_ok=True)
    return work


def save_array(path: AnyPath, array) -> None:
    """``np.save`` to a local path or URL, atomically."""
    import numpy as np

    buf = io.BytesIO()
    np.save(buf, array)
    storage.atomic_write_bytes(as_path(path), buf.getvalue())


def load_array(path: AnyPath):
    """``np.load`` from a local path or URL."""
    import numpy as np

    with as_path(path).open("rb") as f:
        return np.load(io.BytesIO(f.read()))


def recover(root: str | AnyPath) -> str | None:
    """Clean what an earlier (killed) change left: its staging area, half-built versions,
    an unfinished switch of a stand-alone catalog, and superseded versions past the grace period
    (the caller holds the writer lock). Returns what was done, or ``None``."""
    from healforge.catalog.change import versions

    tdir = txn_dir(root)
    had = tdir.exists()
    storage.rmtree(tdir)
    removed = versions.cleanup(root)
    return "rolled back" if had or removed else None


def commit(root: str | AnyPath, manifest: dict) -> AnyPath:
    """Build the catalog's next version from the staged change and switch readers to it.

    ``manifest``: ``pixels`` (the new partition list), ``properties``, ``retire`` (pixel files
    or directories, relative to ``root``, that the change drops), ``convert`` (single-file
    pixels that become directories), ``move`` (``[staged name, destination relative to the
    catalog]``), ``members`` (set by :func:`healforge.catalog.derived.members.stage_members`), ``state``
    (``.healforge/<name>`` JSON files), ``batch_id`` and ``label``. Returns the new version's
    directory (the primary catalog from now on).
    """
    from healforge.catalog.change import versions
    from healforge.engine import failpoint

    root = as_path(root)
    tdir = txn_dir(root)
    manifest.setdefault("version", versions.next_version(versions.home_of(root)))
    new = versions.build(root, manifest, staging_dir(root), tdir / "point_map.npy")
    versions.switch(root, new, manifest)
    failpoint("Commit", 1)
    storage.rmtree(tdir)
    versions.cleanup(new)
    return new


def member_path(root: AnyPath, rel: str) -> AnyPath:
    """The member at ``rel`` (relative to the catalog, ``..`` resolved lexically, as a URL too)."""
    if storage.is_local(root):
        return Path(os.path.normpath(Path(root) / rel))
    return UPath(f"{root.protocol}://{posixpath.normpath(root.path + '/' + rel)}", **root.storage_options)


def applied_batches(root: str | AnyPath) -> dict:
    path = as_path(root) / STATE_DIR / "batches.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_batch(root: str | AnyPath, batch_id: str, label: str | None) -> None:
    batches = applied_batches(root)
    batches[batch_id] = {"label": label, "applied": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    fmt.atomic_write_text(as_path(root) / STATE_DIR / "batches.json", json.dumps(batches, indent=1))


def new_txn_id() -> str:
    return uuid.uuid4().hex[:12]

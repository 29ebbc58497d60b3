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

Commands that write a new catalog directory (margin, index, nest) build it aside and move it in
with :func:`swap_into_place`, recording their arguments in it (:func:`write_command_record`) so
that a rerun answers "already complete" (:func:`finished_command`). This module sits below the
margin and index builders and :mod:`healforge.catalog.change.writer`; it imports only
:mod:`healforge.catalog.change.versions` of the catalog modules.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import time
import uuid

from healforge.catalog.change import versions
from healforge.catalog.change.versions import home_of
from healforge.engine import failpoint
from healforge.errors import CatalogError
from healforge.hats import layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath, as_path

TXN_DIR = ".healforge-txn"
LOCK_FILE = ".healforge.lock"
STATE_DIR = versions.STATE_DIR
BATCHES_FILE = "batches.json"


class CatalogLock:
    """Exclusive writer lock on a catalog (``CATALOG/.healforge.lock``).

    A second writer is refused with a message naming the holder. A lock left by a process that
    no longer runs on this host is taken over.

    On object stores the lock is a conditional put (write-if-absent) where the backend supports
    it (AWS S3, moto, recent S3-compatible servers); elsewhere "check, then write", which two
    writers starting at the same instant can both pass (see :func:`storage.create_exclusive`).
    """

    def __init__(self, root: str | AnyPath, purpose: str):
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
    return home_of(as_path(root)) / TXN_DIR


def staging_dir(root: str | AnyPath) -> AnyPath:
    """Where a change writes its new files before the commit (flat names: nothing in it may look
    like a ``Norder=/Dir=/Npix=`` path, which hats' validation would count as a partition)."""
    return txn_dir(root) / "staged"


def begin(root: str | AnyPath, tmp_dir: str | os.PathLike | None = None):
    """Start a change (caller holds the lock): recover any earlier one, return a clean work dir
    (``TXN/work`` for a local catalog without ``tmp_dir``, else in ``tmp_dir``, local or a URL,
    or the system temp dir)."""
    recover(root)
    return fresh_scratch(txn_dir(root), "work", tmp_dir, staging=staging_dir(root))


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
    root = as_path(root)
    tdir = txn_dir(root)
    manifest.setdefault("version", versions.next_version(versions.home_of(root)))
    if manifest.get("batch_id"):
        batches = applied_batches(root)
        applied = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        batches[manifest["batch_id"]] = {"label": manifest.get("label"), "applied": applied}
        manifest.setdefault("state", {})[BATCHES_FILE] = batches
    new = versions.build(root, manifest, staging_dir(root), load_array(tdir / "point_map.npy"))
    versions.switch(root, new, manifest)
    failpoint("Commit", 1)
    storage.rmtree(tdir)
    versions.cleanup(new)
    return new


def applied_batches(root: str | AnyPath) -> dict:
    """The batches (append, increment) applied to the catalog at ``root``: id -> label, time."""
    path = as_path(root) / STATE_DIR / BATCHES_FILE
    return json.loads(path.read_text() or "{}") if path.exists() else {}


def finished_command(output: AnyPath, command: str, args: dict, overwrite: bool) -> dict | None:
    """The results a finished ``command`` (margin, index, nest) recorded in ``output`` when its
    arguments were ``args`` (then a rerun has nothing to do); ``None`` when ``output`` holds no
    finished run of it or ``overwrite``. Other recorded arguments are refused (``--overwrite``)."""
    path = output / STATE_DIR / f"{command}.json"
    if overwrite or not path.exists():
        return None
    if not any((output / n).exists() for n in (layout.PROPERTIES_FILE, "collection.properties")):
        return None  # copied into place on an object store, its properties not yet
    record = json.loads(path.read_text())
    if record["args"] != args:
        diff = sorted(k for k in args if record["args"].get(k) != args[k])
        raise CatalogError(
            f"{output} holds a finished {command} with other arguments ({', '.join(diff)}); "
            "use --overwrite to replace it"
        )
    return record["result"]


def write_command_record(output: AnyPath, command: str, args: dict, result: dict) -> None:
    """Record in ``output`` (before it is moved into place) that ``command`` finished with
    ``args`` and produced ``result`` (what :func:`finished_command` returns to a rerun)."""
    record = {"args": args, "result": result}
    layout.atomic_write_text(output / STATE_DIR / f"{command}.json", json.dumps(record, indent=1))


def building_dir(final: AnyPath, overwrite: bool) -> AnyPath:
    """A new hidden sibling ``.NAME.building-*`` directory to build ``final`` in, to be moved
    into place by :func:`swap_into_place`; those left by killed runs are removed.

    Raises
    ------
    CatalogError
        When ``final`` exists, is not empty and ``overwrite`` is not set.
    """
    if not overwrite and not storage.is_empty_dir(final):
        raise CatalogError(f"output {final} exists and is not empty; use --overwrite to replace it")
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.building-*"):
        storage.rmtree(stale)
    return final.parent / f".{final.name}.building-{uuid.uuid4().hex[:12]}"


def fresh_scratch(
    place: AnyPath, name: str, tmp_dir: str | os.PathLike | AnyPath | None, staging: AnyPath | None = None
) -> AnyPath:
    """An empty scratch directory for the intermediate files of a build at ``place`` (see
    :func:`healforge.io.workfiles.scratch_dir`); ``staging``: a directory to create too."""
    work = workfiles.scratch_dir(place, name, tmp_dir)
    storage.rmtree(work)
    workfiles.make_dir(work)
    if staging is not None:
        staging.mkdir(parents=True, exist_ok=True)
    return work


def swap_into_place(built: AnyPath, final: AnyPath) -> None:
    """Replace ``final`` by ``built`` with renames; the old content is deleted afterwards.

    On object stores (no renames) ``final`` is emptied and the files of ``built`` are copied in,
    the catalog-level metadata last, so a reader never sees properties without their data."""
    if not storage.is_local(final):
        storage.rmtree(final)
        files = [p for p, _ in storage.list_files(built)]
        depth = len(built.parts)
        last = (layout.PARTITION_INFO_FILE, layout.LEGACY_PROPERTIES_FILE, layout.PROPERTIES_FILE)
        files.sort(
            key=lambda p: (
                len(p.parts) == depth + 1,
                p.name in last,
                last.index(p.name) if p.name in last else 0,
            )
        )
        for f in files:
            storage.copy_file(f, final.joinpath(*f.parts[depth:]))
        storage.rmtree(built)
        return
    if final.exists():
        old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:12]}"
        os.replace(final, old)
        os.replace(built, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(built, final)

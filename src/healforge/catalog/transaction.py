"""Writer lock and commit protocol for changing an existing catalog (append, compact).

A change stages every new file under ``CATALOG/.healforge-txn/`` and then commits by renaming a
small manifest into place. Before that rename the catalog on disk is untouched (a crash leaves it
as it was, and the next writer rolls the staging area back); after it, the change is applied in
phases (convert layout, retire replaced files, move new files in, rewrite metadata, swap in the
rebuilt margins and indexes, record), each idempotent and marked done, so the next writer rolls a
half-applied change forward. Members are built before the commit (see
:mod:`healforge.catalog.members`), so a crash never leaves a new catalog with old members.

On object stores (any fsspec URL, through :mod:`healforge.io.storage`) there are no renames:
the manifest is written last in one put (the commit), and each phase copies then deletes, which
rerunning repeats harmlessly. The change's intermediate files (``work``) are always local.
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
from collections.abc import Callable
from pathlib import Path

from upath import UPath

from healforge.catalog import ancillary
from healforge.catalog import format as fmt
from healforge.errors import CatalogError
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

TXN_DIR = ".healforge-txn"
LOCK_FILE = ".healforge.lock"
STATE_DIR = ".healforge"
PHASES = ("convert", "retire", "move", "metadata", "members", "record")


class CatalogLock:
    """Exclusive writer lock on a catalog (``CATALOG/.healforge.lock``).

    A second writer is refused with a message naming the holder. A lock left by a process that
    no longer runs on this host is taken over.

    On object stores the lock is a conditional put (write-if-absent) where the backend supports
    it (AWS S3, moto, recent S3-compatible servers); elsewhere "check, then write", which two
    writers starting at the same instant can both pass (see :func:`storage.create_exclusive`).
    """

    def __init__(self, root: str | AnyPath, purpose: str):
        self.path = as_path(root) / LOCK_FILE
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
    return as_path(root) / TXN_DIR


def staging_dir(root: str | AnyPath) -> AnyPath:
    """Where a change writes its new files before the commit (flat names: nothing in it may look
    like a ``Norder=/Dir=/Npix=`` path, which hats' validation would count as a partition)."""
    return txn_dir(root) / "staged"


def members_dir(root: str | AnyPath) -> AnyPath:
    """Where a change builds the catalog's new margins and indexes before the commit: beside the
    catalog, since hats' strict validation counts every ``Norder*/Dir*/Npix*`` path below it."""
    root = as_path(root)
    return root.parent / f".{root.name}.healforge-members"


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


def recover(root: str | AnyPath, apply_metadata: Callable | None = None) -> str | None:
    """Finish a committed change or roll back an uncommitted one; returns what was done."""
    tdir = txn_dir(root)
    if not tdir.exists():
        storage.rmtree(members_dir(root))
        return None
    manifest = tdir / "manifest.json"
    if manifest.exists():
        apply(root)
        return "rolled forward"
    storage.rmtree(tdir)
    storage.rmtree(members_dir(root))
    return "rolled back"


def commit(root: str | AnyPath, manifest: dict) -> None:
    """The point of no return: write the manifest atomically, then apply it."""
    from healforge.engine import failpoint

    tdir = txn_dir(root)
    fmt.atomic_write_text(tdir / "manifest.json", json.dumps(manifest))
    failpoint("Commit", 1)
    apply(root)


def apply(root: str | AnyPath) -> None:
    """Apply the committed manifest phase by phase (idempotent; safe to rerun after a crash)."""
    from healforge.engine import failpoint

    root = as_path(root)
    tdir = txn_dir(root)
    m = json.loads((tdir / "manifest.json").read_text())
    for n, phase in enumerate(PHASES, start=1):
        marker = tdir / f"done-{phase}"
        if marker.exists():
            continue
        globals()[f"_phase_{phase}"](root, tdir, m)
        storage.atomic_write_text(marker, "")
        failpoint("Apply", n)
    storage.rmtree(tdir)
    storage.rmtree(members_dir(root))


def _phase_convert(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    """Single-file pixels become directories holding that file."""
    for order, pixel in m.get("convert", []):
        single = fmt.pixel_file(root, order, pixel, ".parquet")
        folder = fmt.pixel_file(root, order, pixel, "/")
        if single.exists():
            folder.mkdir(parents=True, exist_ok=True)
            storage.replace(single, folder / single.name)


def _phase_retire(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    """Replaced pixel files and directories move to the transaction's trash (on object stores,
    where a move is a copy, they are deleted at once)."""
    if not storage.is_local(root):
        for rel in m.get("retire", []):
            storage.rmtree(root / rel)
        return
    trash = tdir / "trash"
    trash.mkdir(exist_ok=True)
    for i, rel in enumerate(m.get("retire", [])):
        path = root / rel
        if path.exists():
            os.replace(path, trash / f"{i}")
    # prune empty Dir=/Norder= folders left behind
    for folder in sorted((root / fmt.DATASET_DIR).glob("Norder=*/Dir=*"), reverse=True):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    for folder in (root / fmt.DATASET_DIR).glob("Norder=*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _phase_move(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    staged = tdir / "staged"
    for name, rel in m.get("move", []):
        src = staged / name
        if src.exists():
            storage.replace(src, root / rel)


def _phase_metadata(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    fmt.write_partition_info(root, [tuple(p) for p in m["pixels"]])
    total = fmt.write_dataset_metadata(root)
    if total != m["properties"]["hats_nrows"]:
        raise CatalogError(
            f"after the change the data files hold {total} rows, expected {m['properties']['hats_nrows']}"
        )
    if fmt.has_multi_file_pixels(root):
        # hats 0.11 counts every file listed in _metadata as one partition, so a pixel with several
        # files makes strict validation fail; like the HATS incremental layout, drop the stale file
        # until compaction leaves one file per pixel.
        storage.rmtree(root / fmt.DATASET_DIR / "_metadata")
    histogram = load_array(tdir / "point_map.npy")
    fmt.write_skymaps(root, histogram)
    fmt.write_properties(root, **m["properties"])
    ancillary.refresh(root, histogram)


def _phase_members(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    """Rebuilt members (staged in :func:`members_dir`) replace the old ones (moved to its trash)."""
    trash = members_dir(root) / "trash"
    for staged, rel in m.get("members", []):
        src = members_dir(root) / staged
        if not src.exists():
            continue
        dst = member_path(root, rel)
        if dst.exists():
            storage.replace(dst, trash / f"member-{staged}")
        storage.replace(src, dst)


def member_path(root: AnyPath, rel: str) -> AnyPath:
    """The member at ``rel`` (relative to the catalog, ``..`` resolved lexically, as a URL too)."""
    if storage.is_local(root):
        return Path(os.path.normpath(Path(root) / rel))
    return UPath(f"{root.protocol}://{posixpath.normpath(root.path + '/' + rel)}", **root.storage_options)


def _phase_record(root: AnyPath, tdir: AnyPath, m: dict) -> None:
    for name, content in m.get("state", {}).items():
        storage.atomic_write_text(as_path(root) / STATE_DIR / name, json.dumps(content, indent=1))
    if m.get("batch_id"):
        record_batch(root, m["batch_id"], m.get("label"))


def applied_batches(root: str | AnyPath) -> dict:
    path = as_path(root) / STATE_DIR / "batches.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_batch(root: str | AnyPath, batch_id: str, label: str | None) -> None:
    batches = applied_batches(root)
    batches[batch_id] = {"label": label, "applied": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    fmt.atomic_write_text(as_path(root) / STATE_DIR / "batches.json", json.dumps(batches, indent=1))


def new_txn_id() -> str:
    return uuid.uuid4().hex[:12]

"""Writer lock and commit protocol for changing an existing catalog (append, compact).

A change stages every new file under ``CATALOG/.healforge-txn/`` and then commits by renaming a
small manifest into place. Before that rename the catalog on disk is untouched (a crash leaves it
as it was, and the next writer rolls the staging area back); after it, the change is applied in
phases (convert layout, retire replaced files, move new files in, rewrite metadata, swap in the
rebuilt margins and indexes, record), each idempotent and marked done, so the next writer rolls a
half-applied change forward. Members are built before the commit (see
:mod:`healforge.catalog.members`), so a crash never leaves a new catalog with old members.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from healforge.catalog import format as fmt
from healforge.errors import CatalogError

TXN_DIR = ".healforge-txn"
LOCK_FILE = ".healforge.lock"
STATE_DIR = ".healforge"
PHASES = ("convert", "retire", "move", "metadata", "members", "record")


class CatalogLock:
    """Exclusive writer lock on a catalog (``CATALOG/.healforge.lock``).

    A second writer is refused with a message naming the holder. A lock left by a process that
    no longer runs on this host is taken over.
    """

    def __init__(self, root: str | Path, purpose: str):
        self.path = Path(root) / LOCK_FILE
        self.purpose = purpose

    def __enter__(self) -> CatalogLock:
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "purpose": self.purpose,
            "since": time.time(),
        }
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and not self._stale(holder):
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
                    raise CatalogError(
                        f"catalog {self.path.parent} is being changed by another writer "
                        f"({holder.get('purpose')}, pid {holder.get('pid')} on {holder.get('host')} since {since}); "
                        f"wait for it to finish (if no such process runs, delete {self.path})"
                    ) from None
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
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
        self.path.unlink(missing_ok=True)


def txn_dir(root: str | Path) -> Path:
    return Path(root) / TXN_DIR


def staging_dir(root: str | Path) -> Path:
    """Where a change writes its new files before the commit (flat names: nothing in it may look
    like a ``Norder=/Dir=/Npix=`` path, which hats' validation would count as a partition)."""
    return txn_dir(root) / "staged"


def members_dir(root: str | Path) -> Path:
    """Where a change builds the catalog's new margins and indexes before the commit: beside the
    catalog, since hats' strict validation counts every ``Norder*/Dir*/Npix*`` path below it."""
    root = Path(root).absolute()
    return root.parent / f".{root.name}.healforge-members"


def begin(root: str | Path) -> Path:
    """Start a change (caller holds the lock): recover any earlier one, return a clean work dir."""
    recover(root)
    work = txn_dir(root) / "work"
    work.mkdir(parents=True, exist_ok=True)
    staging_dir(root).mkdir(parents=True, exist_ok=True)
    return work


def recover(root: str | Path, apply_metadata: Callable | None = None) -> str | None:
    """Finish a committed change or roll back an uncommitted one; returns what was done."""
    tdir = txn_dir(root)
    if not tdir.exists():
        shutil.rmtree(members_dir(root), ignore_errors=True)
        return None
    manifest = tdir / "manifest.json"
    if manifest.exists():
        apply(root)
        return "rolled forward"
    shutil.rmtree(tdir, ignore_errors=True)
    shutil.rmtree(members_dir(root), ignore_errors=True)
    return "rolled back"


def commit(root: str | Path, manifest: dict) -> None:
    """The point of no return: write the manifest atomically, then apply it."""
    from healforge.engine import _failpoint

    tdir = txn_dir(root)
    fmt.atomic_write_text(tdir / "manifest.json", json.dumps(manifest))
    _failpoint("Commit", 1)
    apply(root)


def apply(root: str | Path) -> None:
    """Apply the committed manifest phase by phase (idempotent; safe to rerun after a crash)."""
    from healforge.engine import _failpoint

    root = Path(root)
    tdir = txn_dir(root)
    m = json.loads((tdir / "manifest.json").read_text())
    for n, phase in enumerate(PHASES, start=1):
        marker = tdir / f"done-{phase}"
        if marker.exists():
            continue
        globals()[f"_phase_{phase}"](root, tdir, m)
        marker.touch()
        _failpoint("Apply", n)
    shutil.rmtree(tdir, ignore_errors=True)
    shutil.rmtree(members_dir(root), ignore_errors=True)


def _phase_convert(root: Path, tdir: Path, m: dict) -> None:
    """Single-file pixels become directories holding that file."""
    for order, pixel in m.get("convert", []):
        single = fmt.pixel_file(root, order, pixel, ".parquet")
        folder = fmt.pixel_file(root, order, pixel, "/")
        if single.exists():
            folder.mkdir(parents=True, exist_ok=True)
            os.replace(single, folder / single.name)


def _phase_retire(root: Path, tdir: Path, m: dict) -> None:
    """Replaced pixel files and directories move to the transaction's trash."""
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


def _phase_move(root: Path, tdir: Path, m: dict) -> None:
    staged = tdir / "staged"
    for name, rel in m.get("move", []):
        src = staged / name
        if src.exists():
            dst = root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)


def _phase_metadata(root: Path, tdir: Path, m: dict) -> None:
    import numpy as np

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
        (root / fmt.DATASET_DIR / "_metadata").unlink(missing_ok=True)
    fmt.write_skymaps(root, np.load(tdir / "point_map.npy"))
    fmt.write_properties(root, **m["properties"])


def _phase_members(root: Path, tdir: Path, m: dict) -> None:
    """Rebuilt members (staged in :func:`members_dir`) replace the old ones (moved to its trash)."""
    trash = members_dir(root) / "trash"
    trash.mkdir(parents=True, exist_ok=True)
    for staged, rel in m.get("members", []):
        src = members_dir(root) / staged
        if not src.exists():
            continue
        dst = Path(os.path.normpath(root / rel))
        if dst.exists():
            os.replace(dst, trash / f"member-{staged}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _phase_record(root: Path, tdir: Path, m: dict) -> None:
    if m.get("batch_id"):
        record_batch(root, m["batch_id"], m.get("label"))


def applied_batches(root: str | Path) -> dict:
    path = Path(root) / STATE_DIR / "batches.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_batch(root: str | Path, batch_id: str, label: str | None) -> None:
    batches = applied_batches(root)
    batches[batch_id] = {"label": label, "applied": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    fmt.atomic_write_text(Path(root) / STATE_DIR / "batches.json", json.dumps(batches, indent=1))


def new_txn_id() -> str:
    return uuid.uuid4().hex[:12]

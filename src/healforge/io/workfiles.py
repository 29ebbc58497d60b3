"""Intermediate files of a run (histograms, shards, markers) on any storage.

A run's scratch directory may be local or any fsspec URL (``--tmp-dir s3://bucket/scratch``), so
that Dask workers on hosts without a shared filesystem hand files to each other and to the
client through the object store. Every intermediate file a task writes and another process reads
goes through these helpers: each write appears whole or not at all (a killed task leaves no
half file that a resumed run would take for done), and a local file is read the fast way
(memory map), a remote one through its filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

from healforge.io import storage
from healforge.io.storage import AnyPath, as_path, is_local

# Default scratch beside a remote output when the run uses an existing Dask scheduler.
SCRATCH_BESIDE = ".healforge-scratch"


def scratch_base(
    output: str | os.PathLike,
    tmp_dir: str | os.PathLike | None,
    distributed: bool,
    storage_options: dict | None = None,
) -> AnyPath | None:
    """Where a run's scratch directories go (``None``: the default of :func:`scratch_dir`).

    ``tmp_dir`` when given (a local directory or any fsspec URL, with ``storage_options``);
    otherwise, for a run on an existing scheduler writing a remote ``output``, a hidden
    ``.healforge-scratch`` directory beside the output, which the workers and the client all
    reach; otherwise ``None`` (the output's own folder for a local output, local temp else).
    """
    if tmp_dir is not None:
        return as_path(tmp_dir, storage_options if not is_local(tmp_dir) else None)
    output = as_path(output, storage_options)
    if distributed and not is_local(output):
        return output.parent / SCRATCH_BESIDE
    return None


def scratch_dir(output: AnyPath, name: str, tmp_dir: str | os.PathLike | AnyPath | None = None) -> AnyPath:
    """A run's directory for intermediate files.

    ``output/name`` for a local output without ``tmp_dir``; otherwise a directory in ``tmp_dir``
    (local or a URL; default: the system temp dir for a remote output) named after ``name`` and a
    hash of the output, so that a rerun with the same output finds it again and resumes.
    """
    output = as_path(output)
    if tmp_dir is None and is_local(output):
        return Path(output) / name
    base = as_path(tmp_dir) if tmp_dir is not None else storage.local_scratch() / "healforge"
    digest = hashlib.sha256(str(output).encode()).hexdigest()[:16]
    return base / f"{name.lstrip('.')}-{digest}"


def write_npz(path: AnyPath, **arrays) -> None:
    """Store ``arrays`` as an ``.npz`` at ``path``, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    storage.atomic_write_bytes(path, buf.getvalue())


def read_npz(path: AnyPath) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` written by :func:`write_npz`."""
    path = as_path(path)
    if is_local(path):
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    with np.load(io.BytesIO(path.read_bytes())) as z:
        return {k: z[k] for k in z.files}


@contextlib.contextmanager
def ipc_writer(
    path: AnyPath, schema: pa.Schema, options: pa.ipc.IpcWriteOptions | None = None
) -> Iterator[pa.ipc.RecordBatchFileWriter]:
    """An Arrow IPC file writer whose file appears at ``path`` only when the block ends."""
    with (
        storage.atomic_output(path) as tmp,
        pa.OSFile(tmp, "wb") as sink,
        pa.ipc.new_file(sink, schema, options=options) as writer,
    ):
        yield writer


def open_ipc(path: AnyPath, fields: list[int] | None = None) -> pa.ipc.RecordBatchFileReader:
    """A reader of an Arrow IPC file: memory-mapped locally, random access remotely. With
    ``fields`` (column positions) its batches hold those columns alone, and only their bytes
    are read."""
    path = as_path(path)
    options = pa.ipc.IpcReadOptions(included_fields=fields) if fields else None
    if is_local(path):
        return pa.ipc.open_file(pa.memory_map(str(path), "r"), options=options)
    fs, target = storage.arrow_filesystem(path)
    return pa.ipc.open_file(fs.open_input_file(target), options=options)


def make_dir(path: AnyPath) -> None:
    """Create a local directory (and its parents); object stores need none."""
    if is_local(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def remove_dir(path: AnyPath) -> None:
    """Delete a scratch directory, locally renamed aside first so that a kill while deleting
    never leaves a half-deleted directory that looks like a run to resume."""
    path = as_path(path)
    if not is_local(path):
        storage.rmtree(path)
        return
    if not path.exists():
        return
    trash = path.with_name(f"{path.name}.trash-{uuid.uuid4().hex}")
    os.replace(path, trash)
    storage.rmtree(trash)


def remove_trash(path: AnyPath) -> None:
    """What a kill during :func:`remove_dir` of ``path`` left (local only)."""
    path = as_path(path)
    if is_local(path) and path.parent.is_dir():
        for old in path.parent.glob(f"{path.name}.trash-*"):
            storage.rmtree(old)


__all__ = [
    "SCRATCH_BESIDE",
    "ipc_writer",
    "make_dir",
    "open_ipc",
    "read_npz",
    "remove_dir",
    "remove_trash",
    "scratch_base",
    "scratch_dir",
    "write_npz",
]

"""One storage layer for every catalog path: local disk or any fsspec URL.

:func:`as_path` turns a local path or a URL (with fsspec storage options) into a path object with
the ``pathlib`` interface: a :class:`pathlib.Path` for local paths, a ``upath.UPath`` (which
carries its storage options, also through pickling to Dask workers) for URLs. Code written with
pathlib methods (``/``, ``exists``, ``glob``, ``read_text``, ``mkdir``...) works on both; the
helpers here cover what pathlib alone does not do the same way on object stores:

- :func:`atomic_output`, :func:`atomic_write_bytes`, :func:`atomic_write_text`: a file appears
  complete or not at all. Locally a temporary sibling is renamed; remotely the file is written to
  local scratch and uploaded in one put (object stores publish an object only when its upload
  completes).
- :func:`replace` (``os.replace`` locally; copy then delete on object stores, where renames are
  not atomic), :func:`rmtree`, :func:`copy_file`, :func:`list_files` (one recursive listing).
- :func:`arrow_filesystem`: a pyarrow filesystem and path for pyarrow's readers and writers.
- :func:`create_exclusive`: write-if-absent (the writer lock).

A URL that fsspec cannot handle (unknown protocol, or a missing backend such as s3fs for
``s3://``) is a :class:`StorageError`, never a local path named ``s3:``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.registry import known_implementations
from upath import UPath

from healforge.errors import StorageError

AnyPath = Path | UPath
# "s3:/bucket/key", "s3:bucket": a known protocol with a missing slash would become a local
# directory "s3:"
_BROKEN_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):(?!//)")
LOCAL_PROTOCOLS = ("", "file", "local")


def protocol_of(path: str | os.PathLike) -> str:
    """``"s3"`` for ``s3://b/k``, ``""`` for a local path (``file://`` counts as local)."""
    if isinstance(path, UPath):
        return "" if path.protocol in LOCAL_PROTOCOLS else path.protocol
    if isinstance(path, Path):
        return ""
    text = os.fspath(path)
    if "://" not in text:
        return ""
    protocol = text.split("://", 1)[0].split("::")[0]
    return "" if protocol in LOCAL_PROTOCOLS else protocol


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on the local filesystem."""
    return protocol_of(path) == ""


def as_path(path: str | os.PathLike, storage_options: dict | None = None) -> AnyPath:
    """A path object for a local path or an fsspec URL.

    Parameters
    ----------
    path
        Local path (made absolute), ``file://`` URL, fsspec URL (``s3://bucket/key``,
        ``gs://...``, ``memory://...``) or an existing path object (returned as is unless new
        ``storage_options`` are given).
    storage_options
        fsspec options for a URL (credentials, ``client_kwargs={"endpoint_url": ...}``);
        ignored for local paths.

    Raises
    ------
    StorageError
        When fsspec does not know the protocol or its backend is not installed.
    """
    protocol = protocol_of(path)
    if not protocol:
        if isinstance(path, UPath):
            return Path(path.path).absolute()
        text = os.fspath(path)
        broken = _BROKEN_URL.match(text)
        if not isinstance(path, Path) and broken and broken.group(1) in known_implementations:
            raise StorageError(
                f"cannot use {text!r}: it looks like a URL without '//' (write {text.split(':', 1)[0]}://...)"
            )
        if text.startswith("file://"):
            text = text[len("file://") :]
        elif text.startswith("local://"):
            text = text[len("local://") :]
        return Path(text).absolute()
    if isinstance(path, UPath) and not storage_options:
        return path
    try:
        fsspec.get_filesystem_class(protocol)
    except (ImportError, ValueError) as exc:
        raise StorageError(f"cannot use {str(path)!r}: {exc}") from None
    if isinstance(path, UPath):
        return UPath(path, **{**path.storage_options, **storage_options})
    return UPath(os.fspath(path), **(storage_options or {}))


def filesystem_of(path: AnyPath) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem of ``path`` and the path in that filesystem's terms."""
    if isinstance(path, UPath) and not is_local(path):
        return path.fs, path.path
    return LocalFileSystem(), str(Path(path).absolute())


def arrow_filesystem(path: AnyPath):
    """``(pyarrow filesystem, path)`` for pyarrow readers and writers (``filesystem=`` argument)."""
    import pyarrow.fs as pafs

    if isinstance(path, UPath) and not is_local(path):
        return pafs.PyFileSystem(pafs.FSSpecHandler(path.fs)), path.path
    return pafs.LocalFileSystem(), str(Path(path).absolute())


def local_scratch() -> Path:
    """This host's temp directory."""
    return Path(tempfile.gettempdir())


# Temporaries of a catalog's data files live here, at the catalog root beside ``dataset/``: never
# where a reader of the catalog (hats, lsdb, pyarrow, our own finish stage) lists files.
STAGING_DIR = ".healforge-tmp"
TMP_SUFFIX = ".tmp"


def staging_dir(path: AnyPath) -> Path | None:
    """``ROOT/.healforge-tmp`` for a local file below ``ROOT/dataset/Norder=K/``, else ``None``."""
    parts = Path(path).parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] == "dataset" and parts[i + 1].startswith("Norder="):
            return Path(*parts[:i]) / STAGING_DIR
    return None


def local_tmp_name(path: Path) -> Path:
    """A fresh temporary name for writing ``path`` locally: in the catalog's staging directory for
    a catalog data file, else a hidden sibling (``.NAME.<uuid>.tmp``)."""
    stage = staging_dir(path)
    if stage is not None:
        own = stage / uuid.uuid4().hex  # one directory per write: removed with its file
        for _ in range(10):  # another writer may remove the (empty) staging directory meanwhile
            try:
                own.mkdir(parents=True)
                break
            except FileNotFoundError:
                continue
        return own / f"{path.name}{TMP_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_siblings(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex}{TMP_SUFFIX}")


_STALE_TMP = re.compile(r"^\..+\.(\d+-)?[0-9a-f]{32}\.tmp$|^.+\.tmp-\d+$")
_PID_TMP = re.compile(r"\.(\d+)-[0-9a-f]{32}\.tmp$|\.tmp-(\d+)$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_siblings(path: Path) -> None:
    """Remove temporaries of ``path`` (``.NAME.<pid>-<uuid>.tmp``, ``NAME.tmp-<pid>``) whose
    writer process no longer runs on this host: what a killed writer of the same file left."""
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for e in entries:
        if not (e.name.startswith(f".{path.name}.") or e.name.startswith(f"{path.name}.tmp-")):
            continue
        m = _PID_TMP.search(e.name)
        if m is None or _alive(int(m.group(1) or m.group(2))):
            continue
        if e.is_dir(follow_symlinks=False):
            shutil.rmtree(e.path, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                os.unlink(e.path)


def is_stale_tmp(name: str) -> bool:
    """Whether a file name is one of our temporaries (``.NAME.<uuid>.tmp``, ``NAME.tmp-<pid>``)."""
    return bool(_STALE_TMP.match(name))


def clean_leftovers(root: AnyPath, below: str | None = None) -> int:
    """Remove what killed writers left in a local catalog ``root``: its staging directory and our
    temporary files below ``root/below`` (e.g. ``dataset``). Returns the number of files removed.

    Only for a writer that owns ``root`` (an import, or one holding the writer lock)."""
    root = as_path(root)
    if not is_local(root):
        return 0
    removed = 0
    stage = root / STAGING_DIR
    if stage.is_dir():
        removed += sum(1 for p in stage.rglob("*") if p.is_file())
        shutil.rmtree(stage, ignore_errors=True)
    base = root / below if below else None
    if base is not None and base.is_dir():
        for dirpath, _, names in os.walk(base):
            for n in names:
                if is_stale_tmp(n):
                    (Path(dirpath) / n).unlink(missing_ok=True)
                    removed += 1
    return removed


@contextlib.contextmanager
def atomic_output(path: AnyPath) -> Iterator[str]:
    """Yield a local file name to write; on success its content appears at ``path`` at once.

    Locally the file is written under a temporary name and renamed into place: a catalog data
    file (below ``dataset/Norder=K/``) in the catalog's staging directory ``.healforge-tmp`` (so
    that no reader ever lists a half-written file, even after a kill), any other file as a
    hidden sibling. For a URL it is a file in local scratch, uploaded in one put at the end
    (creating parent directories is implied there). On an exception nothing appears at ``path``.
    """
    path = as_path(path)
    if is_local(path):
        tmp = local_tmp_name(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    else:
        tmp = local_scratch() / f"healforge-upload-{uuid.uuid4().hex}-{path.name}"
    try:
        yield str(tmp)
        if is_local(path):
            os.replace(tmp, path)
        else:
            fs, target = filesystem_of(path)
            fs.put_file(str(tmp), target)
    finally:
        if tmp.exists():
            tmp.unlink()
        if is_local(path) and tmp.parent.parent.name == STAGING_DIR:
            for d in (tmp.parent, tmp.parent.parent):  # ours, then the staging dir if now empty
                with contextlib.suppress(OSError):
                    d.rmdir()


def atomic_write_bytes(path: AnyPath, data: bytes) -> None:
    """Write ``data`` to ``path``; readers see the old file or the whole new one."""
    with atomic_output(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def atomic_write_text(path: AnyPath, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def create_exclusive(path: AnyPath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` only if it does not exist; ``False`` if it does.

    Locally this is ``O_CREAT | O_EXCL``. On object stores it is a conditional put
    (``If-None-Match: *``, fsspec mode ``"xb"``) where the backend supports it (s3fs on AWS S3
    and recent S3-compatible servers); a backend without exclusive writes falls back to "check,
    then write", which two writers starting in the same instant can both pass.
    """
    path = as_path(path)
    if is_local(path):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return True
    fs, target = filesystem_of(path)
    try:
        with fs.open(target, "xb") as f:
            f.write(data)
        return True
    except FileExistsError:
        return False
    except (ValueError, NotImplementedError, TypeError):
        pass
    except OSError as exc:  # a refused precondition surfaces as an OSError subclass on some backends
        if "precondition" in str(exc).lower() or "exist" in str(exc).lower():
            return False
        raise
    if fs.exists(target):
        return False
    with fs.open(target, "wb") as f:
        f.write(data)
    return True


def replace(src: AnyPath, dst: AnyPath) -> None:
    """Move a file or directory ``src`` to ``dst`` (replacing a file ``dst``).

    ``os.replace`` locally. On object stores a copy then a delete of the source: not atomic, but
    idempotent (rerunning after a crash copies again and deletes), which is what the transaction
    phases need.
    """
    src, dst = as_path(src), as_path(dst)
    if is_local(src) and is_local(dst):
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
        return
    fs, s = filesystem_of(src)
    _, d = filesystem_of(dst)
    if fs.isdir(s):
        for f in fs.find(s):
            fs.copy(f, d + "/" + f[len(s) :].lstrip("/"))
        fs.rm(s, recursive=True)
    else:
        fs.copy(s, d)
        fs.rm(s)


def copy_file(src: AnyPath, dst: AnyPath) -> None:
    """Copy one file (between any two filesystems); the copy appears atomically."""
    src, dst = as_path(src), as_path(dst)
    if is_local(src) and is_local(dst):
        with atomic_output(dst) as tmp:
            shutil.copyfile(src, tmp)
        return
    if not is_local(src) and not is_local(dst) and src.fs is dst.fs:
        src.fs.copy(src.path, dst.path)
        return
    with atomic_output(dst) as tmp, src.open("rb") as fin, open(tmp, "wb") as fout:
        shutil.copyfileobj(fin, fout, 16 * 2**20)


def link_file(src: AnyPath, dst: AnyPath) -> None:
    """``dst`` as a second name of the file ``src`` (a hard link, appearing atomically) on one
    local filesystem, else a copy. Only for files replaced whole, never written in place."""
    src, dst = as_path(src), as_path(dst)
    if is_local(src) and is_local(dst):
        try:
            with atomic_output(dst) as tmp:
                os.link(src, tmp)
            return
        except OSError:
            pass  # another device, or no hard links there
    copy_file(src, dst)


def remove_files(paths: list[AnyPath]) -> None:
    """Delete files that may not exist; on an object store in one request, so that a reader
    never sees some of them gone and the others still there for longer than that request."""
    paths = [as_path(p) for p in paths]
    remote = [p for p in paths if not is_local(p)]
    for p in paths:
        if is_local(p):
            Path(p).unlink(missing_ok=True)
    if remote:
        fs, _ = filesystem_of(remote[0])
        targets = [filesystem_of(p)[1] for p in remote]
        try:
            fs.rm(targets)
        except FileNotFoundError:
            pass
        fs.invalidate_cache()


def rmtree(path: AnyPath, missing_ok: bool = True) -> None:
    """Delete a directory tree (or a single file) at ``path``."""
    path = as_path(path)
    if is_local(path):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=missing_ok)
        elif path.exists() or path.is_symlink():
            path.unlink()
        elif not missing_ok:
            raise FileNotFoundError(path)
        return
    fs, target = filesystem_of(path)
    try:
        fs.rm(target, recursive=True)
    except FileNotFoundError:
        if not missing_ok:
            raise
    fs.invalidate_cache()


def list_files(root: AnyPath) -> list[tuple[AnyPath, int]]:
    """Every file below ``root`` (recursively, one listing on object stores) with its size."""
    root = as_path(root)
    if is_local(root):
        if not root.is_dir():
            return []
        out = []
        for dirpath, _, names in os.walk(root):
            for n in names:
                p = Path(dirpath) / n
                out.append((p, p.stat().st_size))
        return sorted(out, key=lambda t: str(t[0]))
    fs, base = filesystem_of(root)
    try:
        found = fs.find(base, detail=True)
    except FileNotFoundError:
        return []
    base = base.rstrip("/")
    out = []
    for name, info in found.items():
        if info.get("type") == "directory":
            continue
        rel = name[len(base) :].lstrip("/") if name.startswith(base) else name
        out.append((root.joinpath(*PurePosixPath(rel).parts), int(info.get("size") or 0)))
    return sorted(out, key=lambda t: str(t[0]))


def is_empty_dir(path: AnyPath) -> bool:
    """Whether ``path`` does not exist or holds nothing."""
    path = as_path(path)
    if not path.exists():
        return True
    if is_local(path):
        return path.is_file() is False and not any(path.iterdir())
    fs, target = filesystem_of(path)
    if fs.isfile(target):
        return False
    return not fs.find(target, maxdepth=None, withdirs=False)


__all__ = [
    "AnyPath",
    "StorageError",
    "arrow_filesystem",
    "as_path",
    "atomic_output",
    "atomic_write_bytes",
    "atomic_write_text",
    "clean_leftovers",
    "copy_file",
    "link_file",
    "remove_files",
    "create_exclusive",
    "filesystem_of",
    "is_empty_dir",
    "is_local",
    "list_files",
    "parquet_file",
    "protocol_of",
    "read_parquet_metadata",
    "read_parquet_schema",
    "read_parquet_table",
    "remove_dead_siblings",
    "replace",
    "rmtree",
    "staging_dir",
    "write_parquet_table",
]


def parquet_file(path: AnyPath):
    """A ``pyarrow.parquet.ParquetFile`` for a local path or URL."""
    import pyarrow.parquet as pq

    fs, p = arrow_filesystem(as_path(path))
    return pq.ParquetFile(p, filesystem=fs)


def read_parquet_schema(path: AnyPath):
    """Arrow schema of a parquet file (``_common_metadata`` included), local or URL."""
    import pyarrow.parquet as pq

    fs, p = arrow_filesystem(as_path(path))
    return pq.read_schema(p, filesystem=fs)


def read_parquet_metadata(path: AnyPath):
    """Parquet footer (``FileMetaData``) of a file, local or URL."""
    import pyarrow.parquet as pq

    fs, p = arrow_filesystem(as_path(path))
    return pq.read_metadata(p, filesystem=fs)


def read_parquet_table(path: AnyPath, columns: list[str] | None = None):
    """A whole parquet file as an Arrow table, local or URL (a remote file is fetched in one
    request and decoded in memory: no Arrow thread ever calls back into the Python filesystem)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = as_path(path)
    if is_local(path):
        return pq.read_table(str(path), columns=columns)
    fs, p = filesystem_of(path)
    return pq.read_table(pa.BufferReader(fs.cat_file(p)), columns=columns)


def write_parquet_table(
    table, path: str | os.PathLike | AnyPath, storage_options: dict | None = None, **kwargs
) -> str:
    """Write an Arrow table to one parquet file atomically, local or URL; ``kwargs`` go to
    ``pyarrow.parquet.write_table``. Returns ``path`` as a string."""
    import pyarrow.parquet as pq

    target = as_path(path, storage_options)
    with atomic_output(target) as tmp:
        pq.write_table(table, tmp, **kwargs)
    return str(target)

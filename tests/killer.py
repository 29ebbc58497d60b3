"""Fault injection with real SIGKILLs: run a healforge command in its own process group and kill
the whole group at a chosen moment (when a file matching a pattern appears under a directory,
i.e. mid-write) or after a delay; then the caller reruns the command and checks the content.

Used by ``tests/test_kill.py`` and ``benchmarks/kill_storm.py``.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class Outcome:
    """What became of one command run under the killer."""

    killed: bool  # the group got SIGKILL before the command ended
    returncode: int
    seconds: float  # from start to kill or exit
    trigger: str | None = None  # the file whose appearance fired the kill
    stdout: str = ""
    stderr: str = ""


def healforge_command(*args) -> list[str]:
    """``python -m healforge ARGS`` with the interpreter running the tests."""
    return [sys.executable, "-m", "healforge", *map(str, args)]


def find_match(watch: list[Path], patterns: list[str]) -> str | None:
    """The first file below one of ``watch`` whose path relative to it matches a glob pattern."""
    for base in watch:
        if not base.exists():
            continue
        for dirpath, _, names in os.walk(base):
            rel_dir = os.path.relpath(dirpath, base)
            for n in names:
                rel = n if rel_dir == "." else f"{rel_dir}/{n}"
                if any(fnmatch.fnmatch(rel, p) for p in patterns):
                    return str(Path(dirpath) / n)
    return None


def run_killed(
    args: list,
    *,
    watch: Path | list[Path] | None = None,
    patterns: str | list[str] = (),
    delay: float | None = None,
    timeout: float = 300,
    env: dict | None = None,
    poll: float = 0.002,
) -> Outcome:
    """Run ``healforge ARGS`` in a new session and SIGKILL its process group.

    Parameters
    ----------
    watch, patterns
        Kill as soon as a file matching one of the glob ``patterns`` (relative paths, ``*``
        crosses ``/``) exists below one of the ``watch`` directories.
    delay
        Kill after this many seconds (when no pattern fired first).
    timeout
        Kill and fail (``AssertionError``) when the command runs longer than this.

    Returns
    -------
    Outcome
        ``killed`` is ``False`` when the command ended before any trigger.
    """
    watch_dirs = (
        [] if watch is None else [Path(w) for w in ([watch] if isinstance(watch, str | Path) else watch)]
    )
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    out_file = tempfile.TemporaryFile()
    err_file = tempfile.TemporaryFile()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        healforge_command(*args),
        stdout=out_file,
        stderr=err_file,
        env=dict(os.environ, **(env or {})),
        start_new_session=True,
    )
    trigger = None
    killed = False
    try:
        while proc.poll() is None:
            elapsed = time.monotonic() - t0
            if patterns and watch_dirs:
                trigger = find_match(watch_dirs, patterns)
            if trigger is not None or (delay is not None and elapsed >= delay):
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                break
            if elapsed > timeout:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f"healforge {' '.join(map(str, args))} ran over {timeout} s")
            time.sleep(poll)
    finally:
        rc = proc.wait()
        seconds = time.monotonic() - t0
        if killed:  # reap children that may have been started in the group too
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    out_file.seek(0)
    err_file.seek(0)
    return Outcome(
        killed,
        rc,
        seconds,
        trigger,
        out_file.read().decode(errors="replace"),
        err_file.read().decode(errors="replace"),
    )


def random_delay(rng: np.random.Generator, low: float, high: float) -> float:
    """A kill moment drawn uniformly in ``[low, high)`` seconds."""
    return float(rng.uniform(low, high))


def catalog_ids(path: Path, id_column: str = "id") -> np.ndarray:
    """Every value of ``id_column`` in a catalog as lsdb reads it, plus checks that hats reads the
    catalog and that its ``hats_nrows`` equals the rows lsdb reads (sorted ids)."""
    import hats
    import lsdb

    cat = hats.read_hats(str(path))
    df = lsdb.open_catalog(str(path), columns=[id_column]).compute()
    nrows = getattr(getattr(cat, "catalog_info", None), "total_rows", None)
    if nrows is None and hasattr(cat, "main_catalog"):
        nrows = cat.main_catalog.catalog_info.total_rows
    if nrows is not None and int(nrows) != len(df):
        raise AssertionError(f"{path}: hats_nrows {nrows} but lsdb reads {len(df)} rows")
    return np.sort(df[id_column].to_numpy())


def stray_temporaries(root: Path) -> list[str]:
    """Temporary files of ours under a catalog's ``dataset/`` (where readers list files)."""
    base = Path(root) / "dataset"
    if not base.exists():
        return []
    return [str(p) for p in base.rglob("*") if p.is_file() and (".tmp" in p.name or p.name.startswith("."))]

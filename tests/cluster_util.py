"""A real Dask cluster whose workers cannot see the client's /tmp ("no shared filesystem" runs).

Each worker runs in its own mount namespace (``unshare -m``) with an empty /tmp mounted over the
real one, so files under pytest's tmp_path (/tmp/pytest-of-...) do not exist for it; the network
namespace is shared, so workers reach the scheduler and a local S3 (moto) server. Workers run this
interpreter with the environment unchanged (PYTHONPATH included), so they import the same healforge
as long as that code lives outside /tmp.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

DASK = [sys.executable, "-m", "dask"]
MOUNTS = ("mount -t tmpfs tmpfs /tmp", "mount --bind {empty} /tmp")


def private_tmp_command(workdir: Path) -> tuple[list[str] | None, str]:
    """The ``unshare ... sh -c 'MOUNT && exec'`` prefix that hides /tmp, or None and why not.

    Probes each way of mounting in turn and keeps the first one under which a file the client
    just wrote in /tmp is invisible."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None, "unshare not found"
    empty = Path(tempfile.mkdtemp(prefix="empty-", dir=workdir))
    errors = []
    with tempfile.NamedTemporaryFile(dir="/tmp") as marker:
        for mount in MOUNTS:
            mount = mount.format(empty=empty)
            private = [unshare, "-m", "--propagation", "private", "sh", "-c"]
            probe = [*private, f"{mount} && test ! -e {marker.name}"]
            try:
                proc = subprocess.run(probe, capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                errors.append(f"{mount}: {exc}")
                continue
            if proc.returncode == 0:
                return [*private, f'{mount} && exec "$@"', "sh"], ""
            errors.append(f"{mount}: rc={proc.returncode} {proc.stderr.strip()}")
    return None, "cannot give workers a private /tmp (" + "; ".join(errors) + ")"


def _tail(path: Path, n: int = 20) -> str:
    lines = path.read_text(errors="replace").splitlines() if path.exists() else []
    return f"--- {path.name} ---\n" + "\n".join(lines[-n:])


def _start(cmd: list[str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen], grace: float = 10) -> None:
    """SIGTERM every process group, wait up to ``grace`` seconds, then SIGKILL the groups (a
    leader that exited may leave children behind)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))


@contextlib.contextmanager
def private_tmp_cluster(workdir: Path, prefix: list[str], n_workers: int = 2) -> Iterator[str]:
    """Scheduler plus ``n_workers`` one-thread workers, each under ``prefix`` (from
    ``private_tmp_command``); yields ``tcp://127.0.0.1:PORT``. Scheduler file and logs go in
    ``workdir``, which the client sees; everything is killed on exit."""
    from distributed import Client

    sched_file = workdir / "scheduler.json"
    sched_log = workdir / "scheduler.log"
    procs = [
        _start(
            [*DASK, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
            + ["--scheduler-file", str(sched_file)],
            sched_log,
        )
    ]
    logs = [sched_log]
    try:
        address, deadline = None, time.monotonic() + 60
        while address is None:
            with contextlib.suppress(OSError, ValueError, KeyError):  # not there yet, or half written
                address = json.loads(sched_file.read_text())["address"]
            if address is None and (procs[0].poll() is not None or time.monotonic() > deadline):
                raise RuntimeError("dask scheduler did not start\n" + _tail(sched_log))
            time.sleep(0.1)
        worker = [*DASK, "worker", address, "--nworkers", "1", "--nthreads", "1", "--no-dashboard"]
        for i in range(n_workers):
            logs.append(workdir / f"worker{i}.log")
            procs.append(_start([*prefix, *worker, "--local-directory", "/tmp/dw"], logs[-1]))
        try:
            with Client(address) as client:
                client.wait_for_workers(n_workers, timeout=60)
        except Exception as exc:
            raise RuntimeError(
                f"{n_workers} workers did not connect to {address}: {exc}\n" + "\n".join(map(_tail, logs))
            ) from exc
        yield address
    finally:
        _stop(procs)


def run_cli_on(address: str, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m healforge ARGS --scheduler ADDRESS`` with this interpreter and environment."""
    return subprocess.run(
        [sys.executable, "-m", "healforge", *map(str, args), "--scheduler", address],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def put_inputs(local_files, url_prefix: str, storage_options: dict) -> list[str]:
    """Upload ``local_files`` to ``url_prefix/NAME`` with fsspec; returns the URLs."""
    import fsspec

    fs, _ = fsspec.core.url_to_fs(url_prefix, **storage_options)
    urls = []
    for path in map(Path, local_files):
        url = f"{url_prefix.rstrip('/')}/{path.name}"
        fs.put_file(str(path), url)
        urls.append(url)
    fs.invalidate_cache()
    return urls

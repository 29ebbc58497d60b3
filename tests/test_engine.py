"""The engine on real Dask processes: a local cluster and an external scheduler + worker."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import healforge
from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.engine import Engine, TaskError, owned_engine


def _square(x):
    return x * x


def _fail(x):
    raise ZeroDivisionError("boom")


def test_local_cluster_map_keeps_order_and_names_failures():
    assert Engine(synchronous=True).parallelism == 1
    with Engine(workers=2, quiet=True) as eng:
        assert eng.parallelism == 2
        assert eng.map(_square, list(range(20)), "Squaring") == [x * x for x in range(20)]
        with pytest.raises(TaskError, match="Failing failed for item-3: ZeroDivisionError: boom"):
            eng.map(_fail, [3], "Failing", labels=["item-3"])


def _pid(_):
    return os.getpid()


def test_local_workers_are_threads_unless_processes_are_asked_for(tmp_path):
    with Engine(workers=2, quiet=True) as eng:
        assert set(eng.map(_pid, range(4), "Pids")) == {os.getpid()}
        # no memory limit: dask would weigh the shared process against each thread's share and pause
        workers = eng.client.scheduler_info(n_workers=-1)["workers"].values()
        assert [w["memory_limit"] for w in workers] == [0, 0]
    with Engine(workers=2, quiet=True, processes=True) as eng:
        pids = set(eng.map(_pid, range(4), "Pids"))
        assert os.getpid() not in pids and eng.parallelism == 2
    # the CLI options reach the engine of every command
    from healforge.cli import build_parser
    from healforge.commands import engine_kwargs

    for argv in (
        ["import", "x.parquet", "-o", "c"],
        ["run", "p.yaml"],
        ["aggregate", "x", "-o", "m", "--columns", "v"],
    ):
        args = build_parser().parse_args([*argv, "--processes", "--wait-workers", "5"])
        assert engine_kwargs(args) | {"processes": True, "wait_workers": 5.0} == engine_kwargs(args)
        assert Engine(**engine_kwargs(args)).processes is True


def test_small_stage_runs_here_without_starting_a_cluster():
    eng = Engine(workers=2, quiet=True)
    assert eng.map(_square, [1, 2, 3], "Squaring", small=True) == [1, 4, 9]
    assert eng.client is None
    with pytest.raises(TaskError, match="Failing failed for item-3"):
        eng.map(_fail, [3, 4], "Failing", labels=["item-3", "item-4"], small=True)
    eng.close()


def test_owned_engine_closes_only_the_engine_it_made(monkeypatch):
    closed = []
    monkeypatch.setattr(Engine, "close", lambda self: closed.append(self))
    given = Engine(synchronous=True, quiet=True)
    with owned_engine(given, workers=3) as eng:
        assert eng is given
    assert closed == []
    with pytest.raises(ZeroDivisionError), owned_engine(None, 3, None, True, True) as eng:
        assert (eng.workers, eng.synchronous, eng.quiet) == (3, True, True)
        _fail(0)
    assert closed == [eng]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dask_cluster(tmp_path):
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    sched = subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    worker = subprocess.Popen(
        [
            str(bindir / "dask"),
            "worker",
            address,
            "--nworkers",
            "2",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--local-directory",
            str(tmp_path / "dask"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from distributed import Client

    deadline = time.time() + 60
    while True:
        try:
            with Client(address, timeout=5) as c:
                if len(c.scheduler_info()["workers"]) >= 2:
                    break
        except OSError:
            pass
        if time.time() > deadline:
            raise RuntimeError("dask cluster did not start")
        time.sleep(0.5)
    yield address
    worker.terminate()
    sched.terminate()
    worker.wait(30)
    sched.wait(30)


@pytest.mark.slow
def test_import_through_external_scheduler(tmp_path, dask_cluster):
    ra, dec = make_points("clustered", 20_000, seed=12)
    table = survey_table(ra, dec)
    write_parquet_files(tmp_path / "in", table, 4)
    out = tmp_path / "cat"
    proc = run_cli(
        "import",
        tmp_path / "in",
        "-o",
        out,
        "--threshold",
        "2000",
        "--highest-order",
        "7",
        "--scheduler",
        dask_cluster,
        "--quiet",
    )
    assert "20000 rows" in proc.stdout
    report = healforge.validate_catalog(out, id_column="id")
    assert report.ok, str(report)
    # the same import in-process gives the same partitions
    healforge.import_catalog(
        tmp_path / "in", tmp_path / "ref", threshold=2000, highest_order=7, synchronous=True, quiet=True
    )
    assert (out / "partition_info.csv").read_text() == (tmp_path / "ref" / "partition_info.csv").read_text()


def _scheduler(port: int) -> subprocess.Popen:
    dask = str(Path(sys.executable).parent / "dask")
    cmd = [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from distributed import Client

    deadline = time.time() + 60
    while True:
        try:
            with Client(f"tcp://127.0.0.1:{port}", timeout=5):
                return proc
        except OSError:
            if time.time() > deadline:
                raise
            time.sleep(0.3)


@pytest.mark.slow
def test_a_scheduler_without_workers_is_a_one_line_error_not_a_hang(tmp_path):
    ra, dec = make_points("uniform", 2_000, seed=4)
    files = write_parquet_files(tmp_path / "in", survey_table(ra, dec, 0, 4), 2)
    port = _free_port()
    sched = _scheduler(port)
    try:
        t0 = time.monotonic()
        proc = run_cli(
            "import",
            *files,
            "-o",
            tmp_path / "cat",
            "--scheduler",
            f"tcp://127.0.0.1:{port}",
            "--wait-workers",
            "3",
            "-q",
            check=False,
            timeout=120,
        )
        assert time.monotonic() - t0 < 60
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "has had no workers for 3 s" in lines[0] and "--wait-workers" in lines[0]
        assert not (tmp_path / "cat" / "hats.properties").exists()
    finally:
        sched.terminate()
        sched.wait(30)


@pytest.mark.slow
def test_losing_every_worker_mid_stage_stops_with_an_error(tmp_path):
    import threading

    from healforge.engine import NoWorkersError

    port = _free_port()
    sched = _scheduler(port)
    dask = str(Path(sys.executable).parent / "dask")
    worker = subprocess.Popen(
        [
            dask,
            "worker",
            f"tcp://127.0.0.1:{port}",
            "--nthreads",
            "1",
            "--no-dashboard",
            "--local-directory",
            str(tmp_path / "dask"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        with Engine(scheduler=f"tcp://127.0.0.1:{port}", quiet=True, wait_workers=3) as eng:
            eng.start()
            assert eng.parallelism == 1
            threading.Timer(2.0, worker.kill).start()
            t0 = time.monotonic()
            with pytest.raises(NoWorkersError, match="no workers for 3 s"):
                eng.map(time.sleep, [0.3] * 200, "Sleeping")  # importable by the worker
            assert time.monotonic() - t0 < 45
    finally:
        worker.kill()
        sched.terminate()
        sched.wait(30)

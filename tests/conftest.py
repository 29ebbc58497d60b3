"""Shared fixtures: synthetic inputs and a CLI runner."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from healforge.demo import write_inputs

BUCKET = "healforge-test"
SRC = str(Path(__file__).resolve().parents[1] / "src")
os.environ["PYTHONPATH"] = SRC + os.pathsep + os.environ.get("PYTHONPATH", "")


def pytest_collection_modifyitems(config, items):
    """Measurement runs (``@pytest.mark.long``) only when asked for: ``-m long`` or
    ``HEALFORGE_LONG_TESTS=1``."""
    if "long" in (config.getoption("-m") or "") or os.environ.get("HEALFORGE_LONG_TESTS"):
        return
    keep = [item for item in items if item.get_closest_marker("long") is None]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if i.get_closest_marker("long")])
        items[:] = keep


def run_cli(*args: str, check: bool = True, env: dict | None = None, timeout: float = 300, cwd=None):
    """Run ``python -m healforge ARGS`` (in ``cwd``); returns the CompletedProcess."""
    full_env = dict(os.environ, **(env or {}))
    proc = subprocess.run(
        [sys.executable, "-m", "healforge", *map(str, args)],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"healforge {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def make_points(kind: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ra, dec (degrees) of ``n`` points: uniform, clustered, polar, seam."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    if kind == "clustered":
        k = n // 2
        ra_u, dec_u = make_points("uniform", n - k, seed + 1)
        ra_c = np.mod(200 + rng.normal(0, 0.5, k), 360)
        dec_c = np.clip(-20 + rng.normal(0, 0.5, k), -90, 90)
        return np.r_[ra_u, ra_c], np.r_[dec_u, dec_c]
    if kind == "polar":
        dec = np.r_[90 - np.abs(rng.normal(0, 1.0, n // 2)), -90 + np.abs(rng.normal(0, 1.0, n - n // 2))]
        dec[:3] = [90.0, -90.0, 89.9999999]
        return rng.uniform(0, 360, n), dec
    if kind == "seam":
        ra = np.mod(rng.normal(0, 0.3, n), 360)
        ra[:4] = [0.0, 359.9999999, 1e-12, 360 - 1e-9]
        return ra, rng.uniform(-2, 2, n)
    if kind == "negative_ra":
        ra, dec = make_points("uniform", n, seed)
        return ra - 180.0, dec
    raise ValueError(kind)


def survey_table(ra: np.ndarray, dec: np.ndarray, start_id: int = 0, seed: int = 0) -> pa.Table:
    """A table with the usual column types around the given positions."""
    rng = np.random.default_rng(seed + 7)
    n = len(ra)
    return pa.table(
        {
            "id": np.arange(start_id, start_id + n, dtype=np.int64),
            "ra": np.asarray(ra, dtype=np.float64),
            "dec": np.asarray(dec, dtype=np.float64),
            "mag": rng.normal(20, 1, n).astype(np.float32),
            "flag": rng.integers(0, 5, n).astype(np.int16),
            "name": pa.array([f"obj{i:07d}" for i in range(start_id, start_id + n)]),
        }
    )


def write_parquet_files(folder: Path, table: pa.Table, n_files: int) -> list[str]:
    """``table`` split into ``n_files`` files ``part00.parquet``... in ``folder``."""
    return write_inputs(table, folder, n_files, prefix="part")


@pytest.fixture
def points():
    return make_points


@pytest.fixture(scope="session")
def s3_options():
    """Start moto's standalone S3 server on 127.0.0.1; yield s3fs storage options for it."""
    pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # its own process: in a thread of this one it would share the GIL with the in-process runs
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _wait_for_port(port, server)
    mp = pytest.MonkeyPatch()
    for var, val in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        mp.setenv(var, val)
    options = {
        "key": "testing",
        "secret": "testing",
        "client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"},
    }
    fs = s3fs.S3FileSystem(**options)
    fs.mkdir(BUCKET)
    try:
        yield options
    finally:
        s3fs.S3FileSystem.clear_instance_cache()
        mp.undo()
        server.terminate()
        server.wait(30)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until something listens on ``port`` (the S3 server started), or fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError("the S3 server did not start")

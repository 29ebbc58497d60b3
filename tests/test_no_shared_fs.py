"""A Dask cluster whose workers cannot see the client's /tmp: the fixture for "no shared
filesystem" runs, and a check that the isolation holds and S3 is the shared medium."""

from __future__ import annotations

import os
import uuid

import pytest

import healforge
from cluster_util import private_tmp_cluster as start_cluster
from cluster_util import private_tmp_command, put_inputs
from conftest import BUCKET


@pytest.fixture(scope="module")
def private_tmp_cluster(request, tmp_path_factory):
    """Scheduler address of a running cluster of 2 workers, each with its own empty /tmp.

    Workers cannot import test modules (tests/ is not on their path): the requesting module's
    functions are registered to travel by value, which works for ``client.run(f, workers=[w])``
    (``f`` pickled on its own) but not inside a ``client.submit`` task graph."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(request.module)
    workdir = tmp_path_factory.mktemp("cluster")
    prefix, reason = private_tmp_command(workdir)
    if prefix is None:
        pytest.skip(f"no private /tmp for workers: {reason}")
    with start_cluster(workdir, prefix, n_workers=2) as address:
        yield address


def _on(client, worker: str, f, *args):
    """``f(*args)`` run on one worker."""
    return client.run(f, *args, workers=[worker])[worker]


def _healforge_file() -> str:
    import healforge

    return healforge.__file__


def _write(path: str) -> bool:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write("worker")
    return os.path.exists(path)


def _s3_roundtrip(url: str, options: dict, seen: str) -> tuple[str, str]:
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.pipe(url, b"from worker")
    return fs.cat(url).decode(), fs.cat(seen).decode()


@pytest.mark.slow
def test_workers_see_s3_but_not_client_tmp(private_tmp_cluster, tmp_path, s3_options):
    from distributed import Client

    mine = tmp_path / "client.txt"
    mine.write_text("client")
    theirs = str(tmp_path / "sub" / "worker.txt")
    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    [seen] = put_inputs([mine], prefix, s3_options)
    with Client(private_tmp_cluster) as client:
        workers = list(client.scheduler_info()["workers"])
        assert len(workers) == 2
        assert set(client.run(_healforge_file).values()) == {healforge.__file__}  # same code on workers
        for worker in workers:  # each worker in its own namespace: check both
            assert _on(client, worker, _write, theirs)
            assert not os.path.exists(theirs)
            assert not _on(client, worker, os.path.exists, str(mine))
            url = f"{prefix}/{worker.rsplit(':', 1)[1]}.txt"
            assert _on(client, worker, _s3_roundtrip, url, s3_options, seen) == ("from worker", "client")
            assert _client_cat(url, s3_options) == "from worker"


def _client_cat(url: str, options: dict) -> str:
    import s3fs

    fs = s3fs.S3FileSystem(**options)
    fs.invalidate_cache()
    return fs.cat(url).decode()

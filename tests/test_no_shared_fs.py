"""A Dask cluster whose workers cannot see the client's /tmp: the fixture for "no shared
filesystem" runs, and a check that the isolation holds and S3 is the shared medium."""

from __future__ import annotations

import copy
import json
import os
import uuid
from pathlib import Path

import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import s3fs
from upath import UPath

import healforge
from cluster_util import private_tmp_cluster as start_cluster
from cluster_util import private_tmp_command, put_inputs, run_cli_on
from conftest import BUCKET, run_cli
from healforge.io.workfiles import SCRATCH_BESIDE
from healforge.maps import read_map
from test_catalog_s3 import _batch
from test_catalog_s3 import _write as write_table


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


# --- every command on a cluster whose workers share no disk with the client ------------------


def _batches(tmp_path) -> list[Path]:
    """Two batches; the second re-observes 300 objects of the first (mag 99) and adds new rows."""
    a = _batch(tmp_path, "A", 4_000, 0, 1)
    ta = pq.read_table(a)
    again = ta.slice(0, 300).set_column(3, "mag", pa.array(np.full(300, 99.0, np.float32)))
    fresh = pq.read_table(_batch(tmp_path, "Bnew", 1_500, 100_000, 2, kind="uniform"))
    return [a, write_table(tmp_path / "in" / "B.parquet", pa.concat_tables([again, fresh]))]


def _steps(cat: str, inputs: list[str], scratch: str | None) -> list[list[str]]:
    """import, append, compact, increment, margin, index: the CLI calls."""
    tmp = ["--tmp-dir", scratch] if scratch else []
    return [
        ["import", inputs[0], "-o", cat, "--threshold", "1500", "--highest-order", "8", "--id", "id"],
        ["append", cat, inputs[1], "--batch", "night2", *tmp],
        ["compact", cat, "--dedupe-on", "id", *tmp],
        ["increment", cat, "--objects", inputs[1], "--on", "id", "--batch", "night3", *tmp],
        ["margin", cat, "-o", f"{cat}_margin", "--radius", "60", *tmp],
        ["index", cat, "-o", f"{cat}_id", "--column", "id", *tmp],
    ]


def _on_s3(tmp_path, s3_options) -> tuple[str, list[Path], list[str], list[str]]:
    """A fresh S3 prefix, the two local batches, their copies there and the storage options flag."""
    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    local = _batches(tmp_path)
    return (
        prefix,
        local,
        put_inputs(local, f"{prefix}/in", s3_options),
        ["--storage-options", json.dumps(s3_options)],
    )


def _pixel_tables(root, options=None) -> dict:
    """Every partition's rows (the files as lsdb reads them, in order), keyed by pixel."""
    from upath import UPath

    path = UPath(str(healforge.resolve_catalog(root, options)), **(options or {}))
    path.fs.invalidate_cache()
    cat = lsdb.read_hats(path)
    return {
        (p.order, p.pixel): cat.get_partition(p.order, p.pixel).compute().reset_index()
        for p in cat.get_healpix_pixels()
    }


@pytest.mark.slow
def test_catalog_commands_on_a_cluster_without_shared_disk(private_tmp_cluster, tmp_path, s3_options):
    prefix, local, remote_inputs, opts = _on_s3(tmp_path, s3_options)
    # default scratch (beside the output) for the import, a scratch URL for the others
    for args in _steps(f"{prefix}/cat", remote_inputs, f"{prefix}/scratch"):
        proc = run_cli_on(private_tmp_cluster, *args, *opts, "-q")
        assert proc.returncode == 0, f"{args[0]}: {proc.stdout}\n{proc.stderr}"
    for args in _steps(str(tmp_path / "cat"), [str(p) for p in local], None):
        run_cli(*args, "--synchronous", "-q")
    # identical catalogs: the same partitions holding the same rows in the same order
    remote, here = _pixel_tables(f"{prefix}/cat", s3_options), _pixel_tables(tmp_path / "cat")
    assert remote.keys() == here.keys() and len(remote) > 1
    for pixel, table in here.items():
        pd.testing.assert_frame_equal(remote[pixel], table, check_dtype=True)
    total = pd.concat(here.values())
    assert (
        len(total) == 4_000 + 1_500 + 1_800 and (total.set_index("id").loc[range(300), "mag"] == 99.0).all()
    )
    # the margin and the index built on the cluster
    margin = lsdb.read_hats(UPath(f"{prefix}/cat_margin", **s3_options)).compute()
    pd.testing.assert_frame_equal(margin, lsdb.read_hats(tmp_path / "cat_margin").compute())
    index = pd.read_parquet(f"{prefix}/cat_id/dataset", storage_options=s3_options)
    pd.testing.assert_frame_equal(index, pd.read_parquet(tmp_path / "cat_id" / "dataset"))
    assert len(index) == len(total) > 0
    # the scratch beside the output and the one given were emptied
    fs = s3fs.S3FileSystem(**s3_options)
    fs.invalidate_cache()
    left = [p for p in fs.find(f"{prefix}/{SCRATCH_BESIDE}") + fs.find(f"{prefix}/scratch")]
    assert left == []


@pytest.mark.slow
def test_aggregate_on_a_cluster_without_shared_disk(private_tmp_cluster, tmp_path, s3_options):
    prefix, local, remote_inputs, opts = _on_s3(tmp_path, s3_options)
    stats = [
        "--columns",
        "mag",
        "--stats",
        "count",
        "mean",
        "median",
        "--order",
        "5",
        "--lon",
        "ra",
        "--lat",
        "dec",
    ]
    mine = tmp_path / "map.parquet"
    run_cli("aggregate", *local, "-o", mine, *stats, "--synchronous", "-q")  # rows gathered in memory
    # on a scheduler rows are shuffled through OUTPUT.work by default (no row reaches the client),
    # or through a --work-dir, or gathered by the client with --no-shuffle: the same map
    work = f"{prefix}/w"
    for i, how in enumerate(([], ["--shuffle", "--work-dir", work, "--shard-order", "1"], ["--no-shuffle"])):
        out = f"{prefix}/map{i}.parquet"
        proc = run_cli_on(
            private_tmp_cluster, "aggregate", *remote_inputs, "-o", out, *stats, *how, *opts, "-q"
        )
        assert proc.returncode == 0, proc.stderr
        assert read_map(out, storage_options=s3_options).equals(read_map(mine)), how
    fs = s3fs.S3FileSystem(**s3_options)
    fs.invalidate_cache()
    assert not fs.exists(f"{prefix}/map0.parquet.work") and not fs.exists(work)  # removed when done


@pytest.mark.slow
def test_pipeline_on_a_cluster_without_shared_disk(private_tmp_cluster, tmp_path, s3_options):
    from test_pipeline import PIPELINE, assert_same, make_granules, write_config

    prefix = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    make_granules(tmp_path / "granules")
    put_inputs(sorted((tmp_path / "granules").glob("*.h5")), f"{prefix}/granules", s3_options)
    for exact in (False, True):  # the streaming states, and rows shuffled through OUTPUT.work on S3
        cfg = copy.deepcopy(PIPELINE)
        cfg["exact"] = {"shard_order": 2} if exact else None
        cfg["outputs"] = {"parquet": {"path": f"out{int(exact)}/map.parquet", "orders": [4, 2]}}
        local = write_config(tmp_path, cfg, f"local{int(exact)}.yaml")
        run_cli("run", local, "--synchronous", "-q")
        cfg["inputs"][0]["paths"] = [f"{prefix}/granules/*.h5"]
        cfg["inputs"][0]["storage_options"] = s3_options
        out = f"{prefix}/out{int(exact)}/map.parquet"
        cfg["outputs"] = {"parquet": {"path": out, "orders": [4, 2]}, "storage_options": s3_options}
        proc = run_cli_on(
            private_tmp_cluster, "run", write_config(tmp_path, cfg, f"s3{int(exact)}.yaml"), "-q"
        )
        assert proc.returncode == 0, proc.stderr
        for k in (4, 2):
            assert_same(
                read_map(out, k, storage_options=s3_options),
                read_map(tmp_path / f"out{int(exact)}" / "map.parquet", k),
            )

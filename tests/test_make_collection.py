"""``healforge collection``: a catalog and its margin (healforge's or hats-import's) become a
collection that lsdb opens with the margin attached; a crossmatch across a partition boundary
finds the pair only through it."""

from __future__ import annotations

import lsdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

from conftest import run_cli
from lsdb_conformance import ID, Kind, boundary_probes, check_crossmatch, check_id_search, probe_inputs


def _inputs(tmp_path) -> tuple[str, pd.DataFrame]:
    df = probe_inputs(2_000, 5, boundary=4)
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return str(path), df


def _pairs(left: pd.DataFrame, right) -> set[tuple[int, int]]:
    probes = lsdb.from_dataframe(left, ra_column="ra", dec_column="dec", catalog_name="probes")
    got = probes.crossmatch(
        right, radius_arcsec=20, n_neighbors=3, suffixes=("_l", "_r"), suffix_method="all_columns"
    ).compute()
    return set(zip(got["pid_l"].astype(int), got["id_r"].astype(int), strict=True))


@pytest.mark.slow
def test_in_place_with_recorded_margin_and_index(tmp_path):
    src, raw = _inputs(tmp_path)
    cat = tmp_path / "cat"
    run_cli(
        "import",
        src,
        "-o",
        cat,
        "--id",
        "id",
        "--threshold",
        300,
        "--highest-order",
        7,
        "--synchronous",
        "-q",
    )
    run_cli("margin", cat, "--radius", 30, "-o", tmp_path / "cat_margin", "--synchronous", "-q")
    run_cli("index", cat, "--column", "id", "-o", tmp_path / "cat_index", "--synchronous", "-q")
    # the probes are placed while cat is still a plain catalog (same partitions afterwards)
    plain = Kind("plain", str(cat), raw, margin=str(tmp_path / "cat_margin"))
    probes = boundary_probes(plain).assign(pid=lambda d: np.arange(len(d)))

    proc = run_cli("collection", cat)
    assert "margin cat_30arcs (default)" in proc.stdout and "index cat_id on id" in proc.stdout, proc.stdout
    assert not (tmp_path / "cat_margin").exists() and not (tmp_path / "cat_index").exists()
    assert (cat / "collection.properties").is_file()
    for member in ("cat", "cat_30arcs", "cat_id"):
        assert is_valid_catalog(str(cat / member), strict=True), member

    coll = lsdb.open_catalog(str(cat))
    assert coll.margin is not None and coll.margin.hc_structure.catalog_info.margin_threshold == 30
    # every probe finds its raw row across the boundary; without the margin none does
    want = {
        (pid, int(raw[ID].to_numpy()[np.argmin((raw["ra"] - r) ** 2 + (raw["dec"] - d) ** 2)]))
        for pid, r, d in probes[["pid", "ra", "dec"]].itertuples(index=False)
    }
    assert _pairs(probes, coll) == want
    assert _pairs(probes, lsdb.open_catalog(str(cat / "cat"))) == set()
    kind = Kind("coll", str(cat), raw)
    check_crossmatch(kind)
    check_id_search(kind)

    # the collection's members are kept current by a later append (validate checks the margin)
    extra = probe_inputs(500, 9, start_id=50_000)
    path = tmp_path / "in" / "b.parquet"
    pq.write_table(pa.Table.from_pandas(extra, preserve_index=False), path)
    run_cli("append", cat, path, "--synchronous", "-q")
    run_cli("validate", cat)
    check_crossmatch(Kind("coll", str(cat), pd.concat([raw, extra], ignore_index=True)))


@pytest.mark.slow
def test_hats_import_margin_into_new_collection(tmp_path):
    from dask.distributed import Client
    from hats_import.margin_cache.margin_cache_arguments import MarginCacheArguments
    from hats_import.pipeline import pipeline_with_client

    src, raw = _inputs(tmp_path)
    cat = tmp_path / "cat"
    run_cli(
        "import",
        src,
        "-o",
        cat,
        "--id",
        "id",
        "--threshold",
        300,
        "--highest-order",
        7,
        "--synchronous",
        "-q",
    )
    args = MarginCacheArguments(
        input_catalog_path=str(cat), output_path=str(tmp_path), output_artifact_name="their_margin",
        margin_threshold=30, progress_bar=False, tmp_dir=str(tmp_path / "tmp"),
    )  # fmt: skip
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        pipeline_with_client(args, client)
    out = tmp_path / "survey"
    proc = run_cli("collection", cat, "--margin", tmp_path / "their_margin", "-o", out, "--name", "survey")
    assert "margin survey_30arcs (default)" in proc.stdout, proc.stdout
    assert not cat.exists() and (out / "survey" / "hats.properties").is_file()
    kind = Kind("survey", str(out), raw)
    check_crossmatch(kind)
    assert lsdb.open_catalog(str(out)).margin is not None


@pytest.mark.slow
def test_errors_name_the_problem(tmp_path):
    src, _ = _inputs(tmp_path)
    cat = tmp_path / "cat"
    run_cli("import", src, "-o", cat, "--threshold", 300, "--highest-order", 7, "--synchronous", "-q")
    run_cli("margin", cat, "--radius", 30, "-o", tmp_path / "m", "--synchronous", "-q")
    proc = run_cli("collection", tmp_path / "nope", check=False)
    assert proc.returncode == 2 and not (tmp_path / "nope").exists(), proc.stderr
    proc = run_cli("collection", cat, "--index", tmp_path / "m", check=False)
    assert proc.returncode == 2 and "is a margin, not an index" in proc.stderr, proc.stderr
    proc = run_cli("collection", cat, "-o", cat / "inner", check=False)
    assert proc.returncode == 2 and "cannot be inside the catalog" in proc.stderr, proc.stderr
    proc = run_cli("collection", cat, "--name", "dataset", check=False)
    assert proc.returncode == 2 and "already holds an entry named 'dataset'" in proc.stderr, proc.stderr
    assert (cat / "hats.properties").is_file() and (tmp_path / "m").is_dir()  # nothing moved
    run_cli("collection", cat)
    proc = run_cli("collection", cat, check=False)
    assert proc.returncode == 2 and "already a HATS collection" in proc.stderr, proc.stderr


def test_interrupted_run_is_finished_by_the_next(tmp_path, monkeypatch):
    """A run that stops after some moves leaves a plan; running the command again finishes it."""
    import healforge
    from healforge.catalog.derived import make_collection as mc

    src, raw = _inputs(tmp_path)
    cat = tmp_path / "cat"
    healforge.import_catalog(
        [src], cat, id_column="id", threshold=300, highest_order=7, synchronous=True, quiet=True
    )
    healforge.margin(cat, tmp_path / "cat_margin", 30, synchronous=True, quiet=True)
    real, calls = mc.storage.replace, []

    def flaky(a, b):
        calls.append(a)
        if len(calls) == 3:
            raise OSError("disk went away")
        real(a, b)

    monkeypatch.setattr(mc.storage, "replace", flaky)
    with pytest.raises(OSError, match="disk went away"):
        healforge.make_collection(cat)
    assert (cat / mc.PLAN_FILE).is_file() and not (cat / "collection.properties").exists()
    monkeypatch.setattr(mc.storage, "replace", real)
    result = healforge.make_collection(cat)
    assert not (cat / mc.PLAN_FILE).exists() and list(result.collection.margins) == ["cat_30arcs"]
    assert sorted(p.name for p in cat.iterdir()) == ["cat", "cat_30arcs", "collection.properties"]
    got = lsdb.open_catalog(str(cat)).compute()
    assert sorted(got["id"]) == sorted(raw["id"])
    assert is_valid_catalog(str(cat / "cat"), strict=True) and is_valid_catalog(
        str(cat / "cat_30arcs"), strict=True
    )

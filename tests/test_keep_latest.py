"""compact's keep-latest: ties go to the most recently appended batch, across pixels; pixels are
split by their row count after de-duplication (the partitioning of a fresh import of the kept rows)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

from conftest import make_points, run_cli, survey_table


def _write(path, table: pa.Table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _versions(tmp_path, name: str, n: int, seed: int, tag: float) -> tuple:
    """``n`` rows with ids 0..n-1 at new random places; ``mag`` holds ``tag`` (the version)."""
    ra, dec = make_points("uniform", n, seed=seed)
    table = survey_table(ra, dec, 0, seed)
    table = table.set_column(
        table.schema.get_field_index("mag"), "mag", pa.array(np.full(n, tag, np.float32))
    )
    return _write(tmp_path / "in" / f"{name}.parquet", table), table


def _rows(path) -> pd.DataFrame:
    import lsdb

    return lsdb.open_catalog(str(path)).compute().sort_values("id").reset_index(drop=True)


def _import(src, out, threshold: int = 2_000):
    run_cli(
        "import",
        src,
        "-o",
        out,
        "--id",
        "id",
        "--threshold",
        threshold,
        "--highest-order",
        6,
        "--synchronous",
        "--quiet",
    )


@pytest.mark.slow
def test_latest_batch_wins_across_pixels_and_partitioning_of_a_fresh_import(tmp_path):
    n = 20_000
    first, _ = _versions(tmp_path, "first", n, 1, 1.0)
    second, second_table = _versions(tmp_path, "second", n, 2, 2.0)
    cat = tmp_path / "cat"
    _import(first, cat)
    run_cli("append", cat, second, "--batch", "second", "--synchronous", "--quiet")
    run_cli("compact", cat, "--dedupe-on", "id", "--synchronous", "--quiet")

    df = _rows(cat)
    assert len(df) == n
    assert int((df["mag"] == 2.0).sum()) == n  # every id keeps the appended version
    want = second_table.to_pandas().sort_values("id").reset_index(drop=True)
    assert np.array_equal(df["ra"].to_numpy(), want["ra"].to_numpy())
    assert is_valid_catalog(str(cat), strict=True)

    fresh = tmp_path / "fresh"
    _import(second, fresh)
    assert (cat / "partition_info.csv").read_text() == (fresh / "partition_info.csv").read_text()


@pytest.mark.slow
def test_keep_latest_by_ties_go_to_the_latest_batch(tmp_path):
    """Three batches with equal ``flag``: the last one wins; a greater ``flag`` beats a later batch."""
    n = 3_000
    a, _ = _versions(tmp_path, "a", n, 11, 1.0)
    b, _ = _versions(tmp_path, "b", n, 12, 2.0)
    c, c_table = _versions(tmp_path, "c", n, 13, 3.0)
    flags = [pa.array(np.zeros(n, np.int16))] * 3
    bump = np.zeros(n, np.int16)
    bump[: n // 3] = 1  # these ids keep batch b's version: its flag is greater
    flags[1] = pa.array(bump)
    paths = []
    for path, flag in zip((a, b, c), flags, strict=True):
        table = pq.read_table(path)
        paths.append(_write(path, table.set_column(table.schema.get_field_index("flag"), "flag", flag)))
    cat = tmp_path / "cat"
    _import(paths[0], cat, threshold=500)
    run_cli("append", cat, paths[1], "--batch", "b", "--synchronous", "--quiet")
    run_cli("append", cat, paths[2], "--batch", "c", "--synchronous", "--quiet")
    run_cli("compact", cat, "--dedupe-on", "id", "--keep-latest-by", "flag", "--synchronous", "--quiet")
    df = _rows(cat)
    assert len(df) == n
    expected = np.where(np.arange(n) < n // 3, 2.0, 3.0)
    assert np.array_equal(df["mag"].to_numpy(), expected)
    assert is_valid_catalog(str(cat), strict=True)


@pytest.mark.slow
def test_compaction_after_a_second_round_keeps_the_newest(tmp_path):
    """After a compaction, a later batch (same label as an earlier one) still wins."""
    n = 2_000
    a, _ = _versions(tmp_path, "a", n, 21, 1.0)
    b, _ = _versions(tmp_path, "b", n, 22, 2.0)
    c, _ = _versions(tmp_path, "c", n, 23, 3.0)
    cat = tmp_path / "cat"
    _import(a, cat, threshold=500)
    run_cli("append", cat, b, "--batch", "night", "--synchronous", "--quiet")
    run_cli("compact", cat, "--dedupe-on", "id", "--synchronous", "--quiet")
    run_cli("append", cat, c, "--batch", "night", "--synchronous", "--quiet")
    run_cli("compact", cat, "--dedupe-on", "id", "--synchronous", "--quiet")
    df = _rows(cat)
    assert len(df) == n and bool((df["mag"] == 3.0).all())


@pytest.mark.parametrize("bucket_rows", [5_000_000, 500])  # one bucket of ids, and 18 buckets
def test_string_ids_dedupe_to_the_latest_version_of_each(tmp_path, monkeypatch, bucket_rows):
    """Ids compared as themselves (no dictionary of every id), shuffled by hash to buckets decided
    apart: string ids, versions spread over three batches and all pixels, each id keeps its
    greatest ``mag``, ties to the later batch."""
    import healforge
    from healforge.catalog.change import dedupe

    monkeypatch.setattr(dedupe, "BUCKET_ROWS", bucket_rows)

    rng = np.random.default_rng(8)
    frames = []
    for batch in range(3):
        n = 3_000
        ra, dec = make_points("uniform", n, seed=20 + batch)
        ids = np.array([f"obj-{i:05d}" for i in rng.integers(0, 2_500, n)])
        mag = rng.integers(0, 4, n).astype(np.float32)  # many ties
        frames.append(pd.DataFrame({"id": ids, "ra": ra, "dec": dec, "mag": mag, "batch": batch}))
        _write(tmp_path / "in" / f"b{batch}.parquet", pa.Table.from_pandas(frames[-1], preserve_index=False))
    out = tmp_path / "cat"
    healforge.import_catalog(
        [tmp_path / "in" / "b0.parquet"], out, threshold=1_000, highest_order=6, synchronous=True, quiet=True
    )
    for batch in (1, 2):
        healforge.append(
            out, [tmp_path / "in" / f"b{batch}.parquet"], f"b{batch}", synchronous=True, quiet=True
        )
    result = healforge.compact(out, dedupe_on="id", keep_latest_by="mag", synchronous=True, quiet=True)
    every = pd.concat(frames, ignore_index=True)
    every["seq"] = np.arange(len(every))  # later batch, then later row, wins a tie
    want = every.sort_values(["id", "mag", "batch", "seq"]).groupby("id").tail(1).sort_values("id")
    got = _rows(out)
    assert result.rows_after == len(want) == len(got)
    assert got["id"].tolist() == want["id"].tolist()
    assert np.array_equal(got["mag"].to_numpy(), want["mag"].to_numpy())
    assert np.array_equal(got["batch"].to_numpy(), want["batch"].to_numpy())

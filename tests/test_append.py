"""Append and compact: transactions, partitioning kept, judged by hats, lsdb and validate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.catalog.derived.collection import resolve_catalog
from healforge.hats import layout


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _batch(tmp_path, name, kind, n, start_id, seed, ra_shift=0.0):
    ra, dec = make_points(kind, n, seed=seed)
    return _write(
        tmp_path / "in" / f"{name}.parquet", survey_table(np.mod(ra + ra_shift, 360), dec, start_id, seed)
    )


def _read_all(path) -> pd.DataFrame:
    import lsdb

    return lsdb.open_catalog(str(path)).compute().reset_index(drop=True)


def _assert_rows(path, tables: list[pa.Table]):
    assert is_valid_catalog(str(path), strict=True)
    report = healforge.validate_catalog(path, id_column="id")
    assert report.ok, str(report)
    df = _read_all(path).sort_values("id")
    want = pa.concat_tables(tables).to_pandas().sort_values("id")
    assert np.array_equal(df["id"].to_numpy(dtype=np.int64), want["id"].to_numpy())
    assert np.array_equal(df["ra"].to_numpy(dtype=np.float64), want["ra"].to_numpy())
    assert int(layout.read_properties(resolve_catalog(path))["hats_nrows"]) == len(want)


@pytest.fixture
def base(tmp_path):
    a = _batch(tmp_path, "A", "clustered", 8_000, 0, 1)
    healforge.import_catalog(
        [a], tmp_path / "cat", threshold=1_000, highest_order=7, synchronous=True, quiet=True
    )
    return tmp_path, a


@pytest.mark.slow
def test_append_b_then_c(base):
    tmp_path, a = base
    root = tmp_path / "cat"
    before = layout.read_partition_info(resolve_catalog(root))
    b = _batch(tmp_path, "B", "clustered", 3_000, 100_000, 2)
    # C lies partly outside the current coverage (new pixels) and partly inside
    c_ra = np.r_[np.full(50, 300.0) + np.linspace(0, 0.1, 50), np.linspace(199.5, 200.5, 50)]
    c_dec = np.r_[np.full(50, -60.0), np.full(50, -20.0)]
    c = _write(tmp_path / "in" / "C.parquet", survey_table(c_ra, c_dec, 200_000, 3))
    res_b = healforge.append(root, [b], "nightB", synchronous=True, quiet=True)
    assert res_b.rows == 3_000
    assert layout.read_properties(resolve_catalog(root))["hats_npix_suffix"] == "/"
    proc = run_cli("append", root, c, "--batch", "nightC", "--synchronous", "-q")
    assert "appended 100 rows" in proc.stdout
    after = layout.read_partition_info(resolve_catalog(root))
    # covered areas keep their partitioning: every old pixel is still there
    assert set(before) <= set(after)
    tables = [pq.read_table(p) for p in (a, b, c)]
    _assert_rows(root, tables)
    # files: Npix=P/Npix=P.parquet for A, nightB.parquet and nightC.parquet for the appends
    names = {f.name for f in layout.list_data_files(resolve_catalog(root))}
    assert {"nightB.parquet", "nightC.parquet"} <= names
    # appending the same batch again is detected
    again = healforge.append(root, [c], "nightC", synchronous=True, quiet=True)
    assert again.skipped
    _assert_rows(root, tables)


def test_schema_mismatch_lists_columns(base):
    tmp_path, _ = base
    ra, dec = make_points("uniform", 100, seed=5)
    t = survey_table(ra, dec, 500_000).drop_columns(["flag"]).append_column("extra", pa.array(np.zeros(100)))
    bad = _write(tmp_path / "in" / "bad.parquet", t)
    with pytest.raises(healforge.BadInputError, match=r"extra: double vs missing; flag: missing vs int16"):
        healforge.append(tmp_path / "cat", [bad], synchronous=True, quiet=True)
    assert healforge.validate_catalog(tmp_path / "cat").ok


def test_second_writer_is_refused(base):
    tmp_path, _ = base
    from healforge.catalog.change.transaction import CatalogLock

    b = _batch(tmp_path, "B", "uniform", 100, 100_000, 2)
    with CatalogLock(tmp_path / "cat", "test holder"):
        proc = run_cli("append", tmp_path / "cat", b, "--synchronous", "-q", check=False)
    assert proc.returncode == 2
    assert "being changed by another writer" in proc.stderr and "test holder" in proc.stderr


@pytest.mark.parametrize("kill_at", ["Mapping:1", "Reducing:2", "Commit:1", "Apply:2"])
@pytest.mark.slow
def test_killed_append_leaves_catalog_readable_and_rerun_completes(base, kill_at):
    tmp_path, a = base
    root = tmp_path / "cat"
    b = _batch(tmp_path, "B", "clustered", 3_000, 100_000, 2)
    c = _batch(tmp_path, "C", "uniform", 2_000, 200_000, 3)
    healforge.append(root, [b], "nightB", synchronous=True, quiet=True)
    ab = [pq.read_table(a), pq.read_table(b)]
    proc = run_cli(
        "append",
        root,
        c,
        "--batch",
        "nightC",
        "--synchronous",
        "-q",
        env={"HEALFORGE_KILL_AFTER": kill_at},
        check=False,
    )
    assert proc.returncode == -9, proc.stderr
    if kill_at in ("Mapping:1", "Reducing:2"):
        # before the commit: the catalog is exactly A+B and valid
        _assert_rows(root, ab)
    run_cli("append", root, c, "--batch", "nightC", "--synchronous", "-q")
    _assert_rows(root, ab + [pq.read_table(c)])
    assert not (root / ".healforge-txn").exists() and not (root / ".healforge.lock").exists()


@pytest.mark.slow
def test_compact_dedupes_keeps_latest_and_obeys_threshold(base):
    tmp_path, a = base
    root = tmp_path / "cat"
    ta = pq.read_table(a)
    # B re-observes 2,000 objects of A with a later mjd (new values), plus 3,000 new objects
    rng = np.random.default_rng(8)
    ids = rng.choice(ta["id"].to_numpy(), 2_000, replace=False)
    old = ta.filter(pa.compute.is_in(ta["id"], pa.array(ids)))
    upd = old.set_column(
        old.schema.get_field_index("mag"), "mag", pa.array(np.full(old.num_rows, 99.0, np.float32))
    )
    ra, dec = make_points("clustered", 3_000, seed=9)
    new = survey_table(ra, dec, 300_000, 9)
    tb = pa.concat_tables([upd, new])
    t_mjd = lambda t, v: t.append_column("mjd", pa.array(np.full(t.num_rows, v)))  # noqa: E731
    # catalogs need a time column: rebuild A with one
    healforge.import_catalog(
        [_write(tmp_path / "in" / "A2.parquet", t_mjd(ta, 1.0))],
        tmp_path / "cat2",
        threshold=1_000,
        highest_order=7,
        synchronous=True,
        quiet=True,
    )
    root = tmp_path / "cat2"
    healforge.append(
        root, [_write(tmp_path / "in" / "B2.parquet", t_mjd(tb, 2.0))], "b", synchronous=True, quiet=True
    )
    assert int(layout.read_properties(resolve_catalog(root))["hats_nrows"]) == ta.num_rows + tb.num_rows
    proc = run_cli(
        "compact",
        root,
        "--dedupe-on",
        "id",
        "--keep-latest-by",
        "mjd",
        "--threshold",
        "800",
        "--synchronous",
        "-q",
    )
    assert "2000 duplicates removed" in proc.stdout
    df = _read_all(root)
    assert df["id"].is_unique and len(df) == ta.num_rows + new.num_rows
    assert (df.set_index("id").loc[ids, "mag"] == 99.0).all()
    for f in layout.list_data_files(resolve_catalog(root)):
        assert pq.read_metadata(f).num_rows <= 800
        assert f.name == "compacted.parquet"
    assert healforge.validate_catalog(root, id_column="id").ok
    assert is_valid_catalog(str(root), strict=True)


def _margin_ids(path) -> list[int]:
    return sorted(
        pq.read_table(f, columns=["id"])["id"].to_pylist()
        for f in layout.list_data_files(resolve_catalog(path))
    )


@pytest.mark.slow
def test_import_margin_kept_current_by_append_and_compact(tmp_path):
    import lsdb

    a = _batch(tmp_path, "A", "clustered", 6_000, 0, 1)
    res = healforge.import_catalog(
        [a], tmp_path / "cat", threshold=800, highest_order=7, margin_arcsec=600, synchronous=True, quiet=True
    )
    margin = tmp_path / "cat_margin"
    assert res.margin is not None and is_valid_catalog(str(margin), strict=True)
    original = _margin_ids(margin)
    b = _batch(tmp_path, "B", "clustered", 2_000, 100_000, 2)
    run_cli("append", tmp_path / "cat", b, "--synchronous", "-q")
    # the recorded margin was rebuilt: it equals a margin made from scratch on A+B
    healforge.margin(tmp_path / "cat", tmp_path / "fresh", 600, synchronous=True, quiet=True)
    # the change made the catalog a collection whose margin is the margin's next version
    coll = healforge.open_collection(tmp_path / "cat")
    assert coll.margins[coll.default_margin] == tmp_path / "cat" / "cat_margin.v2"
    assert _margin_ids(coll.margins[coll.default_margin]) == _margin_ids(tmp_path / "fresh")
    assert len(_margin_ids(coll.margins[coll.default_margin])) > 0
    assert _margin_ids(margin) == original  # the original is untouched
    healforge.compact(tmp_path / "cat", "id", threshold=500, synchronous=True, quiet=True)
    healforge.margin(tmp_path / "cat", tmp_path / "fresh2", 600, synchronous=True, quiet=True)
    coll = healforge.open_collection(tmp_path / "cat")
    margin = coll.margins[coll.default_margin]
    assert _margin_ids(margin) == _margin_ids(tmp_path / "fresh2")
    df = lsdb.open_catalog(str(tmp_path / "cat"), margin_cache=str(margin)).compute()
    assert len(df) == 8_000

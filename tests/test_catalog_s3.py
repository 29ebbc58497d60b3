"""Catalog commands on s3:// URLs (local moto server): import, margin, append, compact, nest,
info, validate; read back by lsdb and hats and compared to the same runs on local disk."""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import BUCKET, make_points, run_cli, survey_table
from healforge.hats import layout
from healforge.io import storage, workfiles

FAST = {"synchronous": True, "quiet": True}


def _url(name: str) -> str:
    return f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/{name}"


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _batch(tmp_path, name, n, start_id, seed, kind="clustered") -> Path:
    ra, dec = make_points(kind, n, seed=seed)
    return _write(tmp_path / "in" / f"{name}.parquet", survey_table(ra, dec, start_id, seed))


def _read(path, options=None, margin=None) -> pd.DataFrame:
    """All rows through lsdb; a URL goes in as a UPath carrying the storage options (given as
    a string, hats would add ``anon=True`` for s3:// unless the options say otherwise)."""
    import lsdb
    from upath import UPath

    if options:
        path = UPath(path, **options)
        path.fs.invalidate_cache()  # s3fs caches listings per process; other processes wrote here
        margin = UPath(margin, **options) if margin else None
    cat = lsdb.open_catalog(path, margin_cache=margin) if margin else lsdb.read_hats(path)
    return cat.compute().sort_values("id").reset_index()


def _same_rows(remote: pd.DataFrame, local: pd.DataFrame) -> None:
    assert len(remote) == len(local) > 0
    for col in ("_healpix_29", "id", "ra", "dec", "mag", "flag", "name"):
        np.testing.assert_array_equal(remote[col].to_numpy(), local[col].to_numpy())


def _strict_valid(url: str, options: dict) -> bool:
    import hats
    from hats.io.validation import is_valid_catalog
    from upath import UPath

    path = UPath(str(healforge.resolve_catalog(url, options)), **options)  # a changed catalog's version
    assert hats.read_hats(path).catalog_info.total_rows > 0
    return is_valid_catalog(path, strict=True) and is_valid_catalog(UPath(url, **options), strict=True)


def _no_local_s3_dirs(*folders) -> None:
    for folder in (Path.cwd(), Path(tempfile.gettempdir()), *folders):
        assert not (Path(folder) / "s3:").exists(), folder


@pytest.mark.slow
def test_cli_import_with_margin_to_s3_matches_local(tmp_path, s3_options):
    files = [_batch(tmp_path, f"p{i}", 2_500, i * 10_000, i) for i in range(2)]
    opts = json.dumps(s3_options)
    url = _url("cat")
    common = ["--threshold", "1500", "--highest-order", "8", "--margin", "60", "--synchronous", "-q"]
    scratch = tmp_path / "scratch"
    proc = run_cli(
        "import", *files, "-o", url, *common, "--storage-options", opts, "--tmp-dir", scratch, "--id", "id"
    )
    assert "5000 rows" in proc.stdout and f"{url}_margin" in proc.stdout
    healforge.import_catalog(
        files, tmp_path / "local", threshold=1500, highest_order=8, margin_arcsec=60, id_column="id", **FAST
    )
    # the intermediate files went to --tmp-dir and were removed; nothing local is named s3:
    assert scratch.exists() and not any(scratch.iterdir())
    _no_local_s3_dirs(tmp_path)
    # same partitioning and rows as the local import, read by lsdb through the storage options
    assert layout.read_partition_info(storage.as_path(url, s3_options)) == layout.read_partition_info(
        tmp_path / "local"
    )
    _same_rows(_read(url, s3_options), _read(str(tmp_path / "local")))
    remote_margin = _read(f"{url}_margin", s3_options)
    _same_rows(remote_margin, _read(str(tmp_path / "local_margin")))
    # hats' strict validation and ours hold on the S3 catalog
    assert _strict_valid(url, s3_options) and _strict_valid(f"{url}_margin", s3_options)
    proc = run_cli("validate", url, "--id", "id", "--storage-options", opts)
    assert "valid catalog (5000 rows" in proc.stdout
    info = run_cli("info", url, "--storage-options", opts).stdout
    assert "rows      5,000" in info and url in info
    # lsdb attaches the S3 margin like a local one; a URL string with storage options works too
    import lsdb

    assert len(_read(url, s3_options, margin=f"{url}_margin")) == 5_000
    cat = lsdb.open_catalog(url, storage_options={**s3_options, "anon": False})
    assert len(cat.compute()) == 5_000
    # margin and compact through the CLI on the URL: same rows as the local margin, valid after
    run_cli(
        "margin", url, "-o", f"{url}_m2", "--radius", "60", "--storage-options", opts, "--synchronous", "-q"
    )
    _same_rows(_read(f"{url}_m2", s3_options), _read(str(tmp_path / "local_margin")))
    proc = run_cli("compact", url, "--dedupe-on", "id", "--storage-options", opts, "--synchronous", "-q")
    assert "rows in 5000, rows out 5000" in proc.stdout
    _same_rows(_read(url, s3_options), _read(str(tmp_path / "local")))
    assert _strict_valid(url, s3_options)
    _no_local_s3_dirs(tmp_path)


@pytest.mark.slow
def test_api_margin_append_compact_on_s3_match_local(tmp_path, s3_options):
    a = _batch(tmp_path, "A", 3_000, 0, 1)
    ta = pq.read_table(a)
    # B re-observes 500 objects of A (later mjd), plus new rows
    rng = np.random.default_rng(3)
    re_ids = rng.choice(ta["id"].to_numpy(), 500, replace=False)
    again = ta.filter(pa.compute.is_in(ta["id"], pa.array(re_ids)))
    again = again.set_column(3, "mag", pa.array(np.full(500, 99.0, np.float32)))
    fresh = pq.read_table(_batch(tmp_path, "Bnew", 1_500, 100_000, 2, kind="uniform"))
    b = _write(tmp_path / "in" / "B.parquet", pa.concat_tables([again, fresh]))
    url = _url("cat")
    roots = {"local": tmp_path / "cat", "s3": url}
    for kind, root in roots.items():
        so = s3_options if kind == "s3" else None
        healforge.import_catalog(
            [a], root, threshold=1_200, highest_order=8, storage_options=so, **FAST, id_column="id"
        )
        # without --tmp-dir the intermediate files of a URL output went to the local temp dir
        assert not workfiles.scratch_dir(storage.as_path(root, so), ".healforge-import").exists()
        margin_path = f"{url}_margin" if kind == "s3" else tmp_path / "cat_margin"
        m = healforge.margin(root, margin_path, 30.0, storage_options=so, **FAST)
        assert m.rows > 0
        res = healforge.append(root, [b], "nightB", storage_options=so, **FAST)
        assert res.rows == 2_000
        # the append rebuilt the registered margin (on S3 too) as its next version, inside the
        # collection the catalog became; the original margin is left as it was
        coll = healforge.open_collection(root, storage_options=so)
        current = coll.margins[coll.default_margin]
        assert current.name == "cat_margin.v2" and str(current.parent) == str(storage.as_path(root, so))
        assert int(layout.read_properties(current)["hats_nrows"]) > m.rows
        assert int(layout.read_properties(storage.as_path(margin_path, so))["hats_nrows"]) == m.rows
        report = healforge.validate_catalog(root, id_column=None, storage_options=so)
        assert report.ok, str(report)
    _same_rows(_read(url, s3_options), _read(str(roots["local"])))
    _same_rows(_read(f"{url}/cat_margin.v2", s3_options), _read(str(tmp_path / "cat" / "cat_margin.v2")))
    assert _strict_valid(url, s3_options)
    for kind, root in roots.items():
        so = s3_options if kind == "s3" else None
        res = healforge.compact(root, "id", storage_options=so, **FAST)
        assert res.rows_after == 5_000 - 500
        assert healforge.validate_catalog(root, id_column="id", storage_options=so).ok
    remote = _read(url, s3_options)
    _same_rows(remote, _read(str(roots["local"])))
    assert (remote.set_index("id").loc[re_ids, "mag"] == 99.0).all()  # later rows won
    assert _strict_valid(url, s3_options)
    root = storage.as_path(url, s3_options)
    assert not (root / ".healforge-txn").exists() and not (root / ".healforge.lock").exists()
    _no_local_s3_dirs(tmp_path)


@pytest.mark.parametrize("kill_at", ["Reducing:1", "Apply:3"])
@pytest.mark.slow
def test_killed_append_on_s3_leaves_catalog_readable_and_next_writer_recovers(tmp_path, s3_options, kill_at):
    a = _batch(tmp_path, "A", 3_000, 0, 1)
    c = _batch(tmp_path, "C", 1_000, 100_000, 2, kind="uniform")
    url = _url("cat")
    healforge.import_catalog([a], url, threshold=1_500, highest_order=8, storage_options=s3_options, **FAST)
    opts = json.dumps(s3_options)
    args = ["append", url, c, "--batch", "nightC", "--storage-options", opts, "--synchronous", "-q"]
    proc = run_cli(*args, env={"HEALFORGE_KILL_AFTER": kill_at}, check=False)
    assert proc.returncode == -9, proc.stderr
    root = storage.as_path(url, s3_options)
    # killed before the commit (while staging, or while building the next version): nothing of
    # the change is visible, the catalog reads as A alone
    assert len(_read(url, s3_options)) == 3_000
    assert healforge.validate_catalog(url, storage_options=s3_options).ok
    # a stand-alone catalog's first version is built beside it (hats' strict validation counts
    # every pixel directory below a catalog), referenced by nothing
    building = root.with_name(".cat.healforge-next")
    assert not (root / "cat.v2").exists() and building.exists() == (kill_at == "Apply:3")
    run_cli(*args)  # takes over the dead writer's lock, rolls back or forward, then appends
    df = _read(url, s3_options)
    want = pa.concat_tables([pq.read_table(a), pq.read_table(c)]).to_pandas().sort_values("id")
    np.testing.assert_array_equal(df["id"].to_numpy(), want["id"].to_numpy())
    assert healforge.validate_catalog(url, id_column="id", storage_options=s3_options).ok
    assert not (root / ".healforge-txn").exists() and not (root / ".healforge.lock").exists()
    assert healforge.resolve_catalog(root).name == "cat.v2" and not building.exists()


def test_second_writer_on_s3_is_refused(tmp_path, s3_options):
    from healforge.catalog.change.transaction import CatalogLock
    from healforge.errors import CatalogError

    a = _batch(tmp_path, "A", 500, 0, 1, kind="uniform")
    url = _url("cat")
    healforge.import_catalog([a], url, threshold=800, highest_order=3, storage_options=s3_options, **FAST)
    root = storage.as_path(url, s3_options)
    with CatalogLock(root, "test holder"):
        with pytest.raises(CatalogError, match="being changed by another writer"):
            with CatalogLock(root, "second"):
                pass
    assert not (root / ".healforge.lock").exists()


def test_nest_on_s3_matches_local(tmp_path, s3_options):
    ra, dec = make_points("uniform", 300, seed=4)
    objects = _write(tmp_path / "in" / "obj.parquet", survey_table(ra, dec, 0, 4))
    rng = np.random.default_rng(5)
    owner = rng.integers(0, 300, 1_200)
    src = pa.table(
        {
            "id": owner.astype(np.int64),
            "ra": np.mod(ra[owner] + rng.normal(0, 1e-4, 1_200), 360),
            "dec": np.clip(dec[owner] + rng.normal(0, 1e-4, 1_200), -90, 90),
            "mjd": rng.uniform(0, 100, 1_200),
        }
    )
    sources = _write(tmp_path / "in" / "src.parquet", src)
    base = _url("")
    out = {}
    for kind, prefix, so in (("local", str(tmp_path), None), ("s3", base.rstrip("/"), s3_options)):
        healforge.import_catalog(
            [objects], f"{prefix}/obj", threshold=200, highest_order=4, storage_options=so, **FAST
        )
        healforge.import_catalog(
            [sources], f"{prefix}/src", threshold=500, highest_order=4, storage_options=so, **FAST
        )
        healforge.nest(
            f"{prefix}/obj",
            f"{prefix}/src",
            f"{prefix}/nested",
            "id",
            "lc",
            "mjd",
            storage_options=so,
            **FAST,
        )
        assert len(_read(f"{prefix}/nested", so)) == 300
        files = layout.list_data_files(storage.as_path(f"{prefix}/nested", so))
        out[kind] = pa.concat_tables(storage.read_parquet_table(f) for f in files).sort_by("id")
    assert out["s3"].equals(out["local"]) and out["s3"].num_rows == 300


def _gcsfs_missing() -> bool:
    try:
        import gcsfs  # noqa: F401
    except ImportError:
        return True
    return False


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("foo://bucket/cat", "Protocol not known: foo"),
        ("s3:/bucket/cat", "looks like a URL without '//'"),
        pytest.param(
            "gs://bucket/cat",
            "install gcsfs",
            marks=pytest.mark.skipif(not _gcsfs_missing(), reason="gcsfs is installed"),
        ),
    ],
)
def test_unhandled_url_is_one_line_error_never_a_local_dir(tmp_path, url, why):
    src = _batch(tmp_path, "A", 100, 0, 1, kind="uniform")
    commands = [["import", src, "-o", url, "--synchronous", "-q"]]
    if url.startswith("foo"):  # every catalog command goes through the same check
        commands += [["margin", url, "-o", f"{url}_m", "--radius", "5", "-q"], ["info", url]]
    for args in commands:
        proc = run_cli(*args, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and url in lines[0] and why in lines[0], lines
    assert not Path("foo:").exists() and not Path("gs:").exists()
    _no_local_s3_dirs(tmp_path)


def test_storage_layer_helpers(tmp_path, s3_options):
    root = storage.as_path(_url("h"), s3_options)
    assert not storage.is_local(root) and storage.is_local(tmp_path) and storage.is_local("file:///x")
    assert storage.as_path("file://" + str(tmp_path)) == tmp_path
    assert storage.is_empty_dir(root)
    storage.atomic_write_text(root / "a" / "b.txt", "hello")
    storage.atomic_write_bytes(root / "c.bin", b"\x00\x01")
    assert (root / "a" / "b.txt").read_text() == "hello" and not storage.is_empty_dir(root)
    assert [(p.name, n) for p, n in storage.list_files(root)] == [("b.txt", 5), ("c.bin", 2)]
    assert storage.create_exclusive(root / "lock", b"1") and not storage.create_exclusive(root / "lock", b"2")
    assert (root / "lock").read_bytes() == b"1"
    storage.replace(root / "a", root / "z")
    assert not (root / "a" / "b.txt").exists() and (root / "z" / "b.txt").read_text() == "hello"
    storage.copy_file(root / "z" / "b.txt", tmp_path / "copy.txt")
    assert (tmp_path / "copy.txt").read_text() == "hello"
    with pytest.raises(RuntimeError), storage.atomic_output(root / "never.txt") as tmp:
        Path(tmp).write_text("partial")
        raise RuntimeError
    assert not (root / "never.txt").exists()
    storage.rmtree(root)
    assert storage.list_files(root) == [] and not (root / "c.bin").exists()
    with pytest.raises(storage.StorageError, match="Protocol not known"):
        storage.as_path("foo://x/y")
    # intermediate files: inside a local output, else in --tmp-dir (local or a URL) or the temp dir
    assert workfiles.scratch_dir(tmp_path / "o", ".w") == tmp_path / "o" / ".w"
    assert workfiles.scratch_dir(root, ".w").is_relative_to(tempfile.gettempdir())
    assert workfiles.scratch_dir(root, ".w", tmp_path).parent == tmp_path
    remote = workfiles.scratch_dir(tmp_path / "o", ".w", root / "scratch")
    assert str(remote).startswith(str(root / "scratch")) and remote.storage_options == root.storage_options
    assert os.path.basename(str(workfiles.scratch_dir(root, ".w"))).startswith("w-")
    # on an existing scheduler a remote output keeps its scratch beside it, where workers reach it
    assert workfiles.scratch_base(str(root / "cat"), None, True, s3_options) == root / ".healforge-scratch"
    assert workfiles.scratch_base(str(root / "cat"), None, False, s3_options) is None
    assert workfiles.scratch_base(tmp_path / "cat", None, True) is None


@pytest.mark.slow
def test_collection_with_margin_and_index_on_s3(tmp_path, s3_options):
    """A collection (margin + index) imported to s3://, opened by lsdb with its margin, searched
    by id through its index, appended to (members rebuilt in the same transaction), validated."""
    import lsdb
    from upath import UPath

    a = _batch(tmp_path, "A", 3_000, 0, 1)
    b = _batch(tmp_path, "B", 1_000, 100_000, 2, kind="uniform")
    url = _url("coll")
    res = healforge.import_catalog(
        [a],
        url,
        threshold=1_000,
        highest_order=8,
        collection=True,
        margins=[30.0],
        indexes=["id"],
        storage_options=s3_options,
        tmp_dir=tmp_path / "scratch",
        **FAST,
    )
    assert res.collection == url
    coll = healforge.open_collection(url, storage_options=s3_options)
    assert [m.name for m in coll.margins.values()] == ["coll_30arcs"]
    assert coll.indexes["id"].name == "coll_id"

    def check(n_rows: int, ids: list[int]) -> None:
        path = UPath(url, **s3_options)
        path.fs.invalidate_cache()
        cat = lsdb.open_catalog(path)
        assert cat.margin is not None and len(cat.margin.compute()) > 0
        assert len(cat.compute()) == n_rows
        got = cat.id_search(values={"id": ids}).compute()
        assert sorted(got["id"].tolist()) == sorted(ids)
        report = healforge.validate_catalog(url, id_column="id", storage_options=s3_options)
        assert report.ok, str(report)

    check(3_000, [5, 2_999])
    healforge.append(url, [b], "nightB", storage_options=s3_options, tmp_dir=tmp_path / "scratch", **FAST)
    # the margin and index were rebuilt from the new rows: an appended id is found through them
    check(4_000, [5, 100_500])
    info = healforge.catalog_info(url, storage_options=s3_options)
    assert (
        info.primary.rows == 4_000 and all(m[1] is not None for m in info.members) and len(info.members) == 2
    )
    root = storage.as_path(url, s3_options)
    assert not (root.parent / ".coll.healforge-members").exists()
    assert not (coll.primary / ".healforge-txn").exists()
    _no_local_s3_dirs(tmp_path)


@pytest.mark.slow
def test_summary_on_s3_matches_local(tmp_path, s3_options):
    """The summary (density map drawn at a capped order) of a catalog on s3, after an append
    that leaves it without ``_metadata``, is the one written on local disk."""
    a = _batch(tmp_path, "A", 3_000, 0, 1)
    c = _batch(tmp_path, "C", 1_000, 100_000, 2, kind="uniform")
    url = _url("cat")
    opts = {"threshold": 1_500, "highest_order": 8, "summary": True, **FAST}
    healforge.import_catalog([a], url, storage_options=s3_options, **opts)
    healforge.import_catalog([a], tmp_path / "cat", **opts)
    healforge.append(url, [c], "c", storage_options=s3_options, **FAST)
    healforge.append(tmp_path / "cat", [c], "c", **FAST)
    remote = healforge.resolve_catalog(storage.as_path(url, s3_options))
    local = healforge.resolve_catalog(tmp_path / "cat")
    text = (remote / "README.md").read_text()
    assert "Density Skymap" in text and "| 4,000 |" in text
    assert text == (local / "README.md").read_text()
    _no_local_s3_dirs(tmp_path)

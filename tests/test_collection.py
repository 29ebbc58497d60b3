"""Collections: import, margin/index members, upkeep by append/compact, judged by hats and lsdb."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog
from scipy.spatial import cKDTree

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.hats import layout
from test_margin import check_margin, xyz

RAD = np.pi / 180 / 3600


def _write(path, table):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _batch(tmp_path, name, n, start_id, seed, region=((40, 50), (-5, 5))):
    rng = np.random.default_rng(seed)
    (r0, r1), (d0, d1) = region
    ra = rng.uniform(r0, r1, n)
    dec = np.degrees(np.arcsin(rng.uniform(np.sin(np.radians(d0)), np.sin(np.radians(d1)), n)))
    return _write(tmp_path / "in" / f"{name}.parquet", survey_table(ra, dec, start_id, seed))


def _props(path) -> dict:
    return layout.read_properties(path) if (path / "hats.properties").exists() else {}


def _collection_props(coll) -> dict:
    out = {}
    for line in (coll / "collection.properties").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def _members(coll):
    c = healforge.open_collection(coll)
    return [c.primary, *c.margins.values(), *c.indexes.values()]


def _assert_collection(coll, tables: list[pa.Table], radius: float):
    """hats, lsdb and healforge agree the collection holds exactly ``tables``, with exact members."""
    import hats
    import lsdb
    from hats.catalog import CatalogCollection

    want = pa.concat_tables(tables).to_pandas()
    assert isinstance(hats.read_hats(str(coll)), CatalogCollection)
    assert is_valid_catalog(str(coll), strict=True)
    for member in _members(coll):
        assert is_valid_catalog(str(member), strict=True), member
    report = healforge.validate_catalog(coll, id_column="id")
    assert report.ok, str(report)
    c = healforge.open_collection(coll)
    assert check_margin(c.primary, c.margins[c.default_margin], radius) > 0
    cat = lsdb.open_catalog(str(coll))
    assert cat.margin is not None
    assert len(cat.compute()) == len(want)
    # id_search through the default index: ids from several pixels, one id alone, a missing id
    pix = pd.read_csv(c.primary / "partition_info.csv")
    assert len(pix) >= 4
    rng = np.random.default_rng(0)
    many = rng.choice(want["id"].to_numpy(), 40, replace=False).tolist() + [int(want["id"].max())]
    got = cat.id_search(values={"id": many}).compute()
    assert sorted(got["id"].tolist()) == sorted(many)
    assert (
        got.set_index("id")["ra"].sort_index().tolist()
        == want.set_index("id").loc[sorted(many), "ra"].tolist()
    )
    assert len({(o, p) for o, p in zip(*_pixels_of(c.primary, many), strict=True)}) >= 3
    one = cat.id_search(values={"id": many[0]}).compute()
    assert one["id"].tolist() == [many[0]]
    assert len(cat.id_search(values={"id": -12345}).compute()) == 0


def _files(coll) -> dict:
    """Data files of every member (relative paths), leaving out hidden work directories."""
    return {
        m.name: sorted(
            str(p.relative_to(m)) for p in m.rglob("*.parquet") if not str(p.relative_to(m)).startswith(".")
        )
        for m in _members(coll)
    }


def _pixels_of(primary, ids):
    """(Norder, Npix) of the rows with these ids (from the data files)."""
    orders, pixels = [], []
    for f in layout.list_data_files(primary):
        order, pixel = layout.pixel_of_path(f)
        n = int(np.isin(pq.read_table(f, columns=["id"])["id"].to_numpy(), ids).sum())
        orders += [order] * n
        pixels += [pixel] * n
    return orders, pixels


def _import(tmp_path, *extra):
    a = _batch(tmp_path, "A", 5000, 0, 1)
    run_cli(
        "import", a, "-o", tmp_path / "coll", "--collection", "--margin", "60", "--index", "id",
        "--threshold", "400", "--highest-order", "8", "--synchronous", "-q", *extra,
    )  # fmt: skip
    return a


@pytest.fixture
def coll(tmp_path):
    a = _batch(tmp_path, "A", 5000, 0, 1)
    healforge.import_catalog(
        [a], tmp_path / "coll", collection=True, margins=[60], indexes=["id"], threshold=400,
        highest_order=8, synchronous=True, quiet=True,
    )  # fmt: skip
    return tmp_path, a


@pytest.mark.slow
def test_import_collection_layout_and_clients(tmp_path):
    a = _import(tmp_path)
    root = tmp_path / "coll"
    props = _collection_props(root)
    assert props["obs_collection"] == "coll"
    assert props["hats_primary_table_url"] == "coll"
    assert props["all_margins"] == props["default_margin"] == "coll_1arcmin"
    assert props["all_indexes"] == "id coll_id" and props["default_index"] == "id"
    assert {"hats_builder", "hats_creation_date", "hats_estsize", "hats_version"} <= set(props)
    assert _props(root / "coll_1arcmin")["dataproduct_type"] == "margin"
    index_props = _props(root / "coll_id")
    assert index_props["dataproduct_type"] == "index" and index_props["hats_index_column"] == "id"
    assert index_props["hats_primary_table_url"] == "coll"
    _assert_collection(root, [pq.read_table(a)], 60.0)
    out = run_cli("validate", root).stdout
    assert "valid collection" in out and "margin" in out and "index" in out
    info = run_cli("info", root).stdout
    assert "collection coll" in info and "coll_1arcmin" in info and "coll_id" in info and "5,000" in info


@pytest.mark.slow
def test_crossmatch_through_collection_margin_finds_straddling_pairs(tmp_path):
    import lsdb

    # dense points (1 square degree) so that many pairs straddle partition boundaries
    a = _batch(tmp_path, "R", 5000, 0, 5, region=((40, 41), (-0.5, 0.5)))
    healforge.import_catalog(
        [a], tmp_path / "coll", collection=True, margins=[5], threshold=400, highest_order=9,
        synchronous=True, quiet=True,
    )  # fmt: skip
    t = pq.read_table(a).to_pandas()
    rng = np.random.default_rng(6)
    sep = rng.uniform(0.5, 2.0, len(t)) / 3600
    ang = rng.uniform(0, 2 * np.pi, len(t))
    left = t.copy()
    left["ra"] = t["ra"] + sep * np.cos(ang) / np.cos(np.radians(t["dec"]))
    left["dec"] = t["dec"] + sep * np.sin(ang)
    src = _write(tmp_path / "in" / "left.parquet", pa.Table.from_pandas(left, preserve_index=False))
    healforge.import_catalog(
        [src], tmp_path / "left", threshold=150, highest_order=9, synchronous=True, quiet=True
    )
    tree = cKDTree(xyz(t["ra"], t["dec"]))
    dist, idx = tree.query(xyz(left["ra"], left["dec"]), distance_upper_bound=2 * np.sin(3 * RAD / 2))
    truth = {(int(left["id"][i]), int(t["id"][j])) for i, j in enumerate(idx) if np.isfinite(dist[i])}
    assert len(truth) == len(t)
    lc = lsdb.open_catalog(str(tmp_path / "left"))
    rc = lsdb.open_catalog(str(tmp_path / "coll"))
    assert rc.margin is not None
    res = lc.crossmatch(rc, radius_arcsec=3, n_neighbors=1, suffixes=("_l", "_r")).compute()
    assert set(zip(res["id_l"].astype(int), res["id_r"].astype(int), strict=True)) == truth
    bare = lc.crossmatch(
        lsdb.open_catalog(str(tmp_path / "coll" / "coll")),
        radius_arcsec=3,
        n_neighbors=1,
        suffixes=("_l", "_r"),
    ).compute()
    assert len(bare) < len(truth)  # some pairs straddle partitions: only the margin finds them


@pytest.mark.slow
def test_append_and_compact_keep_every_member_current(coll):
    tmp_path, a = coll
    root = tmp_path / "coll"
    b = _batch(tmp_path, "B", 1500, 100_000, 2)
    # pixels outside the coverage too, and an id already present (duplicates for compact)
    c = survey_table(*make_points("uniform", 500, 3), start_id=200_000, seed=3)
    c = c.set_column(0, "id", pa.array(np.r_[np.arange(200_000, 200_499), [5]].astype(np.int64)))
    c = _write(tmp_path / "in" / "C.parquet", c)
    healforge.append(root, [b], "nightB", synchronous=True, quiet=True)
    healforge.append(root, [c], "nightC", synchronous=True, quiet=True)
    tables = [pq.read_table(p) for p in (a, b, c)]
    # the index reports the duplicate id when built afresh
    res = healforge.index_catalog(root, "id", tmp_path / "fresh_index", synchronous=True, quiet=True)
    assert res.duplicates == 1 and res.duplicate_examples[0]["value"] == 5
    assert "1 'id' value(s) appear in more than one row" in str(res)
    # validate with the id uniqueness check off (id 5 is duplicated until the compaction)
    report = healforge.validate_catalog(root)
    assert report.ok, str(report)
    # each change built the members' next versions, listed by collection.properties
    current = healforge.open_collection(root)
    assert current.indexes["id"] == root / "coll_id.v3"
    index_rows = sum(
        pq.read_metadata(f).num_rows for f in (current.indexes["id"] / "dataset" / "index").glob("*.parquet")
    )
    assert index_rows == 7000
    margin = current.margins[current.default_margin]
    assert margin == root / "coll_1arcmin.v3"
    margin_ids = {i for f in layout.list_data_files(margin) for i in pq.read_table(f)["id"].to_pylist()}
    assert any(i >= 100_000 for i in margin_ids)

    healforge.compact(root, "id", threshold=600, synchronous=True, quiet=True)
    want = pa.concat_tables(tables).to_pandas().drop_duplicates("id", keep="last")
    _assert_collection(root, [pa.Table.from_pandas(want, preserve_index=False)], 60.0)
    import lsdb

    got = lsdb.open_catalog(str(root)).id_search(values={"id": 5}).compute()
    assert got["ra"].tolist() == want.loc[want["id"] == 5, "ra"].tolist()


@pytest.mark.parametrize("kill_at", ["Index reduce:1", "Commit:1", "Apply:4"])
@pytest.mark.slow
def test_killed_append_on_collection_leaves_old_or_new(coll, kill_at):
    tmp_path, a = coll
    root = tmp_path / "coll"
    b = _batch(tmp_path, "B", 1500, 100_000, 2)
    before = _files(root)
    proc = run_cli(
        "append", root, b, "--batch", "nightB", "--synchronous", "-q",
        env={"HEALFORGE_KILL_AFTER": kill_at}, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    if kill_at == "Index reduce:1":
        # before the commit: the old collection, every member untouched and valid
        assert _files(root) == before
        report = healforge.validate_catalog(root, id_column="id")
        assert report.ok, str(report)
        assert report.rows == 5000
    run_cli("append", root, b, "--batch", "nightB", "--synchronous", "-q")
    report = healforge.validate_catalog(root, id_column="id")
    assert report.ok and report.rows == 6500, str(report)
    c = healforge.open_collection(root)
    assert check_margin(c.primary, c.margins[c.default_margin], 60.0) > 0
    assert not list(root.rglob(".healforge-txn")) and not list(root.glob(".*building*"))


@pytest.mark.slow
def test_margin_and_index_commands_add_members(coll):
    tmp_path, _ = coll
    root = tmp_path / "coll"
    out = run_cli("margin", root, "--radius", "5", "--default", "--synchronous", "-q").stdout
    assert "coll_5arcs" in out
    run_cli("index", root, "--column", "name", "--include-columns", "mag", "--synchronous", "-q")
    props = _collection_props(root)
    assert set(props["all_margins"].split()) == {"coll_1arcmin", "coll_5arcs"}
    assert props["default_margin"] == "coll_5arcs"
    assert props["all_indexes"].split() == ["id", "coll_id", "name", "coll_name"]
    assert props["default_index"] == "id"
    import lsdb

    cat = lsdb.open_catalog(str(root))
    assert float(cat.margin.hc_structure.catalog_info.margin_threshold) == 5.0
    got = cat.id_search(values={"name": "obj0000042"}).compute()
    assert got["id"].tolist() == [42]
    assert healforge.validate_catalog(root / "coll_5arcs").ok
    assert healforge.validate_catalog(root / "coll_name").ok
    # a margin missing a row is caught, and an extra row too
    m = root / "coll_5arcs"
    f = layout.list_data_files(m)[0]
    t = pq.read_table(f)
    layout.atomic_write_parquet(t.slice(1), f)
    layout.write_dataset_metadata(m)
    proc = run_cli("validate", m, check=False)
    assert proc.returncode == 1 and "are missing" in proc.stderr
    report = healforge.validate_catalog(root)
    assert not report.ok and any(p.startswith("coll_5arcs: ") for p in report.problems)


def test_validate_fails_when_default_member_is_missing(coll):
    import shutil

    tmp_path, _ = coll
    root = tmp_path / "coll"
    shutil.rmtree(root / "coll_id")
    report = healforge.validate_catalog(root)
    assert not report.ok and any("listed but missing" in p for p in report.problems), str(report)


@pytest.mark.slow
def test_hats_import_collection(tmp_path):
    """A collection made by hats-import (catalog + margin; its index pipeline refuses this Dask)."""
    from dask.distributed import Client
    from hats_import.collection import CollectionArguments, run

    a = _batch(tmp_path, "A", 3000, 0, 1)
    with Client(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as client:
        args = (
            CollectionArguments(output_artifact_name="hic", output_path=tmp_path, progress_bar=False)
            .catalog(
                input_file_list=[str(a)], file_reader="parquet", ra_column="ra", dec_column="dec",
                pixel_threshold=500, highest_healpix_order=8,
            )
            .add_margin(margin_threshold=60, is_default=True)
        )  # fmt: skip
        run(args, client)
    root = tmp_path / "hic"
    info = str(healforge.catalog_info(root))
    assert "collection hic" in info and "hic_1arcmin" in info and "3,000" in info
    # hats-import's margin is a superset of the true margin rows: validate says so
    proc = run_cli("validate", root, check=False)
    assert proc.returncode == 1 and "not within 60 arcsec" in proc.stderr, proc.stderr
    healforge.index_catalog(root, "id", synchronous=True, quiet=True)
    b = _batch(tmp_path, "B", 1000, 100_000, 2)
    healforge.append(root, [b], synchronous=True, quiet=True)
    # the append rebuilt the margin (exactly) and the new index
    _assert_collection(root, [pq.read_table(a), pq.read_table(b)], 60.0)
    res = healforge.margin(root, None, 10, synchronous=True, quiet=True)
    assert res.path == str(root / "hic_10arcs") and "hic_10arcs" in healforge.open_collection(root).margins


def test_other_commands_take_a_collection(coll, tmp_path):
    """aggregate reads the primary's partitions; nest takes collections for either side."""
    _, a = coll
    root = tmp_path / "coll"
    got = healforge.aggregate(root, ["mag"], ["count", "mean"], order=4).to_pandas()
    want = healforge.aggregate(pq.read_table(a), ["mag"], ["count", "mean"], order=4, lon="ra", lat="dec")
    want = want.to_pandas()
    assert (
        got.sort_values("cell_ids")["mag_count"].tolist()
        == want.sort_values("cell_ids")["mag_count"].tolist()
    )
    res = healforge.nest(
        root, root, tmp_path / "nested", on="id", as_name="self", synchronous=True, quiet=True
    )
    assert res.objects == 5000 and res.sources == 5000 and res.unmatched == 0


@pytest.mark.slow
def test_killed_collection_import_resumes(tmp_path):
    proc = run_cli(
        "import", _batch(tmp_path, "A", 3000, 0, 1), "-o", tmp_path / "coll", "--collection",
        "--margin", "60", "--index", "id", "--threshold", "400", "--highest-order", "8", "--synchronous", "-q",
        env={"HEALFORGE_KILL_AFTER": "Margin map:1"}, check=False,
    )  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert not (tmp_path / "coll" / "collection.properties").exists()
    out = run_cli(
        "import", tmp_path / "in" / "A.parquet", "-o", tmp_path / "coll", "--collection", "--margin", "60",
        "--index", "id", "--threshold", "400", "--highest-order", "8", "--synchronous", "-q",
    ).stdout  # fmt: skip
    assert "resumed" in out
    report = healforge.validate_catalog(tmp_path / "coll", id_column="id")
    assert report.ok and report.rows == 3000, str(report)

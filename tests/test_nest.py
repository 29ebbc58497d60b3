"""Nested catalogs: sources joined into objects by key, checked with lsdb against a pandas groupby."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

import healforge
from conftest import run_cli
from healforge.catalog.build.importer import import_catalog
from healforge.errors import BadInputError


def nest(objects, sources, output, **options):
    """``healforge.nest`` on ``object_id`` as ``lc``, in-process and quiet."""
    return healforge.nest(
        objects, sources, output, on="object_id", as_name="lc", synchronous=True, quiet=True, **options
    )


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nest")
    rng = np.random.default_rng(7)
    n_obj = 3000
    obj = pd.DataFrame(
        {
            "object_id": rng.permutation(np.arange(10_000, 10_000 + n_obj)).astype(np.int64),
            "ra": rng.uniform(100, 112, n_obj),
            "dec": rng.uniform(-6, 6, n_obj),
            "name": [f"obj{i}" for i in range(n_obj)],
        }
    )
    n_src = rng.poisson(4, n_obj)
    n_src[:200] = 0  # objects without sources
    owner = np.repeat(np.arange(n_obj), n_src)
    # most sources sit within 1 arcsec of their object; a quarter are 0.3-1 degree away, so they
    # fall in other partitions than their object
    far = rng.random(len(owner)) < 0.25
    off = np.where(far, rng.uniform(0.3, 1.0, len(owner)), rng.uniform(0, 1 / 3600, len(owner)))
    ang = rng.uniform(0, 2 * np.pi, len(owner))
    src = pd.DataFrame(
        {
            "source_id": np.arange(len(owner), dtype=np.int64) + 1_000_000,
            "object_id": obj["object_id"].to_numpy()[owner],
            "ra": obj["ra"].to_numpy()[owner] + off * np.cos(ang),
            "dec": obj["dec"].to_numpy()[owner] + off * np.sin(ang),
            "mjd": rng.uniform(60000, 61000, len(owner)),
            "flux": rng.normal(100, 10, len(owner)).astype(np.float32),
        }
    )
    obj.to_parquet(tmp / "obj.parquet", index=False)
    src.to_parquet(tmp / "src.parquet", index=False)
    import_catalog(
        [str(tmp / "obj.parquet")],
        tmp / "objects",
        threshold=400,
        highest_order=7,
        synchronous=True,
        quiet=True,
    )
    import_catalog(
        [str(tmp / "src.parquet")],
        tmp / "sources",
        threshold=900,
        highest_order=7,
        catalog_type="source",
        synchronous=True,
        quiet=True,
    )
    return tmp, obj, src


def test_nest_matches_groupby_and_opens_in_lsdb(inputs, tmp_path):
    import lsdb
    from hats.io.validation import is_valid_catalog

    tmp, obj, src = inputs
    res = nest(tmp / "objects", tmp / "sources", tmp_path / "nested", sort_by="mjd")
    assert res.objects == len(obj) and res.sources == len(src) and res.unmatched == 0
    assert is_valid_catalog(tmp_path / "nested", strict=True)
    assert pd.read_csv(tmp_path / "nested" / "partition_info.csv").equals(
        pd.read_csv(tmp / "objects" / "partition_info.csv")
    )

    # sources whose object lies in another partition exist
    opix = pd.read_csv(tmp / "objects" / "partition_info.csv")
    assert len(opix) > 5
    s_hp = pq.read_table(tmp / "sources" / "dataset", columns=["object_id", "_healpix_29"]).to_pandas()
    o_hp = pq.read_table(tmp / "objects" / "dataset", columns=["object_id", "_healpix_29"]).to_pandas()
    j = s_hp.merge(o_hp, on="object_id", suffixes=("_s", "_o"))
    starts = opix["Npix"].to_numpy() << 2 * (29 - opix["Norder"].to_numpy())
    order = np.argsort(starts)

    def part(hp29):
        return order[np.searchsorted(starts[order], hp29.to_numpy(), side="right") - 1]

    assert (part(j["_healpix_29_s"]) != part(j["_healpix_29_o"])).sum() > 100

    cat = lsdb.open_catalog(tmp_path / "nested")
    df = cat.compute()
    assert len(df) == len(obj)
    assert "lc" in cat.columns and "lc" in df.nested_columns
    flat = df["lc"].nest.to_flat()
    flat["owner"] = np.repeat(df["object_id"].to_numpy(), df["lc"].nest.len())
    # every source exactly once, under its own object
    assert len(flat) == len(src)
    assert flat["source_id"].is_unique
    assert set(flat["source_id"]) == set(src["source_id"])
    assert (flat["owner"].to_numpy() == flat["object_id"].to_numpy()).all()
    # counts per object match a pandas groupby of the inputs (objects without sources: 0)
    expected = src.groupby("object_id").size().reindex(obj["object_id"], fill_value=0)
    got = pd.Series(df["lc"].nest.len(), index=df["object_id"].to_numpy())
    pd.testing.assert_series_equal(
        got.sort_index(), expected.sort_index(), check_names=False, check_dtype=False
    )
    assert (got == 0).sum() >= 200
    # sorted by mjd inside each object
    mjd = flat["mjd"].to_numpy()
    same = flat["owner"].to_numpy()[1:] == flat["owner"].to_numpy()[:-1]
    assert np.all(np.diff(mjd)[same] >= 0)
    # nested values are the input values
    m = flat.merge(src, on="source_id", suffixes=("", "_in"))
    assert np.allclose(m["mjd"], m["mjd_in"]) and np.allclose(m["flux"], m["flux_in"])


@pytest.mark.slow
def test_nest_cli_and_errors(inputs, tmp_path):
    tmp, obj, src = inputs
    out = tmp_path / "nested_cli"
    proc = run_cli(
        "nest",
        tmp / "objects",
        tmp / "sources",
        "-o",
        out,
        "--on",
        "object_id",
        "--as",
        "sources",
        "--synchronous",
        "--quiet",
        check=False,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    t = pq.read_table(out / "dataset")
    # nested-pandas' packed layout (as lsdb writes it): a struct of one list per source column
    lc_type = t.schema.field("sources").type
    assert pa.types.is_struct(lc_type) and lc_type.num_fields == len(src.columns) + 1  # + _healpix_29
    assert all(pa.types.is_list(f.type) for f in lc_type)
    assert sum(len(x["source_id"]) for x in t.column("sources").to_pylist()) == len(src)
    # a rerun of the finished nest: already complete, nothing rewritten; a killed run's building
    # directory is removed by the next run; other arguments are refused without --overwrite
    args = ["nest", tmp / "objects", tmp / "sources", "-o", out, "--on", "object_id", "--synchronous", "-q"]
    stamp = {str(f): f.stat().st_mtime_ns for f in out.rglob("*.parquet")}
    again = run_cli(*args, "--as", "sources", check=False, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("already complete: "), again.stderr
    assert {str(f): f.stat().st_mtime_ns for f in out.rglob("*.parquet")} == stamp
    other = run_cli(*args, "--as", "lc", check=False, timeout=120)
    assert other.returncode == 2 and "as_name" in other.stderr and "--overwrite" in other.stderr
    stale = tmp_path / ".nested_2.building-0123456789ab"
    (stale / "dataset").mkdir(parents=True)
    (stale / "dataset" / "half.parquet").write_bytes(b"PAR1")
    fresh = run_cli(*args[:4], tmp_path / "nested_2", *args[5:], "--as", "sources", timeout=120)
    assert not fresh.stdout.startswith("already") and not stale.exists()
    assert pq.read_table(tmp_path / "nested_2" / "dataset").equals(t)

    # sources without objects: an error naming the problem, or dropped and counted on request
    few = obj.iloc[500:].to_parquet(tmp_path / "few.parquet", index=False)
    del few
    import_catalog(
        [str(tmp_path / "few.parquet")], tmp_path / "few", threshold=500, synchronous=True, quiet=True
    )
    with pytest.raises(BadInputError, match="no object.*pass --drop-unmatched"):
        nest(tmp_path / "few", tmp / "sources", tmp_path / "x")
    res = nest(tmp_path / "few", tmp / "sources", tmp_path / "y", on_unmatched="drop")
    lost = src["object_id"].isin(obj["object_id"].iloc[:500]).sum()
    assert res.unmatched == lost and res.sources == len(src) - lost
    with pytest.raises(BadInputError, match="not found"):
        nest(tmp / "objects", tmp / "sources", tmp_path / "z", sort_by="nope")


@pytest.mark.slow
def test_nest_on_key_pair_answers_lsdb_queries(inputs, tmp_path):
    """``--on objectId=object_id`` (different key names, nothing renamed); the nested catalog answers
    lsdb's cone search, partitions and nested sub-column loads like a brute force on the inputs."""
    import lsdb

    from nested_util import assert_same_lists, in_cone, in_pixel, light_curves, nested_lists

    tmp, obj, src = inputs
    obj2 = obj.rename(columns={"object_id": "objectId"})
    obj2.to_parquet(tmp_path / "obj2.parquet", index=False)
    import_catalog(
        [str(tmp_path / "obj2.parquet")],
        tmp_path / "objects2",
        threshold=400,
        highest_order=7,
        synchronous=True,
        quiet=True,
    )
    out = tmp_path / "nested"
    run_cli(
        "nest", tmp_path / "objects2", tmp / "sources", "-o", out, "--on", "objectId=object_id",
        "--as", "lc", "--sort-by", "mjd", "--synchronous", "--quiet", timeout=120,
    )  # fmt: skip
    schema = pq.read_schema(out / "dataset" / "_common_metadata")
    assert "objectId" in schema.names and "object_id" in schema.field("lc").type.names

    ra0, dec0, radius = 106.0, 0.5, 7200.0
    want_ids = obj2["objectId"][in_cone(obj2["ra"], obj2["dec"], ra0, dec0, radius)].tolist()
    assert 200 < len(want_ids) < len(obj2)
    cat = lsdb.open_catalog(out)
    cone = cat.cone_search(ra0, dec0, radius).compute()
    assert_same_lists(
        nested_lists(cone, "objectId", "lc", "mjd"),
        light_curves(src, "object_id", want_ids, "mjd", "mjd"),
    )
    assert_same_lists(
        nested_lists(cone, "objectId", "lc", "source_id"),
        light_curves(src, "object_id", want_ids, "mjd", "source_id"),
    )

    pixels = cat.get_healpix_pixels()
    assert len(pixels) > 3
    for i in (0, len(pixels) // 2, len(pixels) - 1):
        part = cat.partitions[i].compute()
        px = pixels[i]
        ids = obj2["objectId"][in_pixel(obj2["ra"], obj2["dec"], px.order, px.pixel)].tolist()
        assert_same_lists(
            nested_lists(part, "objectId", "lc", "flux"), light_curves(src, "object_id", ids, "mjd", "flux")
        )

    sub = lsdb.open_catalog(out, columns=["objectId", "lc.mjd"])
    df = sub.compute()
    assert list(df["lc"].nest.columns) == ["mjd"]
    assert_same_lists(
        nested_lists(df, "objectId", "lc", "mjd"),
        light_curves(src, "object_id", obj2["objectId"].tolist(), "mjd", "mjd"),
    )
    cone_sub = sub.cone_search(ra0, dec0, radius).compute()
    assert sorted(cone_sub["objectId"]) == sorted(want_ids)

    # a key missing on one side is named the CLI way
    proc = run_cli(
        "nest", tmp_path / "objects2", tmp / "sources", "-o", tmp_path / "bad", "--on", "objectId=nope",
        "--as", "lc", "--synchronous", "--quiet", check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "'nope'" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_nest_of_a_collection_is_a_collection(inputs, tmp_path):
    """Objects given as a collection (margin + index): the nested product is a collection whose
    margin and index are built again for it; lsdb attaches the margin and id_search finds objects."""
    import lsdb

    from nested_util import assert_same_lists, in_cone, light_curves, nested_lists

    tmp, obj, src = inputs
    coll = tmp_path / "objs"
    run_cli(
        "import", tmp / "obj.parquet", "-o", coll, "--collection", "--margin", "1800", "--index", "object_id",
        "--threshold", "400", "--highest-order", "7", "--synchronous", "-q",
    )  # fmt: skip
    out = tmp_path / "nested"
    proc = run_cli(
        "nest", coll, tmp / "sources", "-o", out, "--on", "object_id", "--as", "lc", "--sort-by", "mjd",
        "--synchronous", "-q",
    )  # fmt: skip
    assert "collection" in proc.stdout
    assert is_valid_catalog(out, strict=True)
    again = run_cli(
        "nest", coll, tmp / "sources", "-o", out, "--on", "object_id", "--as", "lc", "--sort-by", "mjd",
        "--synchronous", "-q",
    )  # fmt: skip
    assert again.stdout.startswith("already complete: ") and "collection" in again.stdout
    nested = healforge.open_collection(out)
    assert nested.default_margin and nested.default_index == "object_id"
    cat = lsdb.open_catalog(out)
    assert cat.margin is not None
    fresh = healforge.margin(nested.primary, tmp_path / "fresh", 1800, synchronous=True, quiet=True)
    want = sorted(pq.read_table(fresh.path + "/dataset", columns=["object_id"])["object_id"].to_pylist())
    margin = cat.margin.compute()
    assert sorted(margin["object_id"]) == want and want and "lc" in margin.columns
    # sub-column loads of the primary and its margin, and a cone search over both
    sub = lsdb.open_catalog(out, columns=["object_id", "lc.mjd"])
    assert list(sub.margin.compute()["lc"].nest.columns) == ["mjd"]
    ra0, dec0, radius = 104.0, -2.0, 5400.0
    ids = obj["object_id"][in_cone(obj["ra"], obj["dec"], ra0, dec0, radius)].tolist()
    assert_same_lists(
        nested_lists(sub.cone_search(ra0, dec0, radius).compute(), "object_id", "lc", "mjd"),
        light_curves(src, "object_id", ids, "mjd", "mjd"),
    )
    for one in obj["object_id"].iloc[[0, 1234]].tolist():
        hit = cat.id_search(values={"object_id": one}).compute()
        assert hit["object_id"].tolist() == [one]
        lc = light_curves(src, "object_id", [one], "mjd", "source_id")[one]
        assert list(hit["lc"].iloc[0]["source_id"]) == lc

"""Nightly nested increments, weekly consolidation, withdrawals and safe casts, judged against pandas
computations from the raw nightly inputs, through lsdb and through pyarrow on the files."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hats.io.validation import is_valid_catalog

import healforge
from conftest import make_points, run_cli, survey_table
from healforge.catalog.derived.collection import open_collection, resolve_catalog
from healforge.demo import nightly_batches
from healforge.hats import layout

KW = {"synchronous": True, "quiet": True}
ID = "diaObjectId"
NESTED = {"sources": "diaSourceId", "forced": "diaForcedSourceId"}
TIME_COL = "midpointMjdTai"


def _latest(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("validityStart", kind="stable").drop_duplicates(ID, keep="last")


@pytest.fixture(scope="module")
def nights(tmp_path_factory):
    """Night 0 built into a nested catalog (import + nest twice), and three nightly batches."""
    tmp = tmp_path_factory.mktemp("nightly")
    batches = nightly_batches(tmp / "in", 800, 3, seed=5, orphans=4)
    _latest(pq.read_table(batches[0]["objects"]).to_pandas()).to_parquet(tmp / "o0.parquet", index=False)
    healforge.import_catalog([str(tmp / "o0.parquet")], tmp / "obj", threshold=150, highest_order=7, **KW)
    for kind in ("sources", "forced"):
        healforge.import_catalog([batches[0][kind]], tmp / kind, threshold=5000, highest_order=7, **KW)
    healforge.nest(
        tmp / "obj", tmp / "sources", tmp / "n1", on=ID, as_name="sources", sort_by="midpointMjdTai", **KW
    )
    healforge.nest(
        tmp / "n1", tmp / "forced", tmp / "base", on=ID, as_name="forced", sort_by="midpointMjdTai", **KW
    )
    return tmp, batches


@pytest.fixture
def catalog(nights, tmp_path):
    tmp, batches = nights
    shutil.copytree(tmp / "base", tmp_path / "cat")
    return tmp_path / "cat", batches


def _increment_cli(root, night: dict, label: str, check=True, env=None):
    return run_cli(
        "increment", root, "--objects", night["objects"],
        "--nested", f"sources={night['sources']}", "--nested", f"forced={night['forced']}",
        "--on", ID, "--latest-by", "validityStart", "--batch", label, "--on-orphans", "quarantine",
        "--synchronous", "-q", check=check, env=env,
    )  # fmt: skip


def _increment(root, night, label):
    return healforge.increment(
        root, night["objects"], {"sources": night["sources"], "forced": night["forced"]}, on=ID,
        latest_by="validityStart", batch=label, on_orphans="quarantine", **KW,
    )  # fmt: skip


def _expected(batches, upto: int):
    """Latest object rows and every nested source set (orphans left out), from the raw inputs."""
    objs = pd.concat([pq.read_table(b["objects"]).to_pandas() for b in batches[: upto + 1]])
    objs = _latest(objs).set_index(ID).sort_index()
    nested = {}
    for name in NESTED:
        src = pd.concat([pq.read_table(b[name]).to_pandas() for b in batches[: upto + 1]])
        nested[name] = src[src[ID].isin(objs.index)]
    return objs, nested


def _flat_files(root, name) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Top-level rows and the exploded nested column, read with pyarrow from the data files."""
    tables = [pq.read_table(f) for f in layout.list_data_files(resolve_catalog(root))]
    table = pa.concat_tables(tables)
    lists = table.column(name).combine_chunks()
    # nested-pandas' packed layout: a struct of equally long lists, one per source column
    assert pa.types.is_struct(lists.type) and all(pa.types.is_list(f.type) for f in lists.type)
    children = lists.flatten()
    lengths = [pa.compute.list_value_length(c) for c in children]
    assert all(n.equals(lengths[0]) for n in lengths)
    items = pa.table({f.name: pa.compute.list_flatten(c) for f, c in zip(lists.type, children, strict=True)})
    items = items.append_column("__owner", table.column(ID).take(pa.compute.list_parent_indices(children[0])))
    return table.drop_columns(list(NESTED)).to_pandas(), items.to_pandas()


def _check_consolidated(root, batches, upto):
    objs, nested = _expected(batches, upto)
    assert is_valid_catalog(str(root), strict=True)
    top, _ = _flat_files(root, "sources")
    top = top.set_index(ID).sort_index()
    assert top.index.is_unique and list(top.index) == list(objs.index)
    for col in ("ra", "dec", "validityStart", "nDiaSources", "meanFlux"):
        assert np.array_equal(top[col].to_numpy(), objs[col].to_numpy()), col
    for name, src_id in NESTED.items():
        _, items = _flat_files(root, name)
        assert (items["__owner"] == items[ID]).all()
        want = nested[name].sort_values([ID, "midpointMjdTai"]).reset_index(drop=True)
        got = (
            items.drop(columns="__owner")
            .sort_values([ID, "midpointMjdTai"], kind="stable")
            .reset_index(drop=True)
        )
        assert len(got) == len(want) and got[src_id].is_unique
        pd.testing.assert_frame_equal(got[want.columns.tolist()], want, check_dtype=False)
        # each list is sorted by time
        ordered = items.groupby("__owner", sort=False)["midpointMjdTai"].apply(
            lambda s: s.is_monotonic_increasing
        )
        assert ordered.all()
    # lsdb reads the same objects and light curves
    import lsdb

    df = lsdb.open_catalog(str(root)).compute()
    assert len(df) == len(objs)
    one = int(objs.index[len(objs) // 2])
    lc = df[df[ID] == one]["sources"].iloc[0]
    want_lc = nested["sources"][nested["sources"][ID] == one].sort_values("midpointMjdTai")
    assert lc["diaSourceId"].tolist() == want_lc["diaSourceId"].tolist()
    flat = df["forced"].nest.to_flat()
    assert len(flat) == len(nested["forced"])


def _check_lsdb_queries(root, batches, upto):
    """lsdb's cone search, partitions and nested sub-column loads on the catalog, against a brute
    force on the raw nightly inputs (latest object rows, their sources sorted by time)."""
    import lsdb

    from nested_util import assert_same_lists, in_cone, in_pixel, light_curves, nested_lists

    objs, nested = _expected(batches, upto)
    src = nested["sources"]
    ra0, dec0 = float(objs["ra"].median()), float(objs["dec"].median())
    spread = np.hypot(objs["ra"] - ra0, objs["dec"] - dec0)
    radius = float(np.quantile(spread, 0.3)) * 3600
    want = objs.index[in_cone(objs["ra"], objs["dec"], ra0, dec0, radius)].tolist()
    assert 0 < len(want) < len(objs)
    cat = lsdb.open_catalog(str(root))
    cone = cat.cone_search(ra0, dec0, radius).compute()
    for field in ("midpointMjdTai", "diaSourceId"):
        assert_same_lists(
            nested_lists(cone, ID, "sources", field), light_curves(src, ID, want, "midpointMjdTai", field)
        )
    pixels = cat.get_healpix_pixels()
    for i in sorted({0, len(pixels) // 2, len(pixels) - 1}):
        part = cat.partitions[i].compute()
        px = pixels[i]
        ids = objs.index[in_pixel(objs["ra"], objs["dec"], px.order, px.pixel)].tolist()
        assert_same_lists(
            nested_lists(part, ID, "sources", "diaSourceId"),
            light_curves(src, ID, ids, "midpointMjdTai", "diaSourceId"),
        )
    sub = lsdb.open_catalog(str(root), columns=[ID, "sources.midpointMjdTai"])
    df = sub.compute()
    assert list(df["sources"].nest.columns) == ["midpointMjdTai"] and "forced" not in df.columns
    assert_same_lists(
        nested_lists(df, ID, "sources", "midpointMjdTai"),
        light_curves(src, ID, objs.index.tolist(), "midpointMjdTai", "midpointMjdTai"),
    )
    assert sorted(sub.cone_search(ra0, dec0, radius).compute()[ID]) == sorted(want)


@pytest.mark.slow
def test_increments_then_consolidation_keep_every_source(catalog):
    root, batches = catalog
    rows_before = int(layout.read_properties(resolve_catalog(root))["hats_nrows"])
    margin = root.with_name("cat_margin")
    healforge.margin(root, margin, 60.0, **KW)
    orphans = {name: 0 for name in NESTED}
    for night in (1, 2, 3):
        if night == 2:
            proc = _increment_cli(root, batches[night], f"night{night}")
            assert "superseded versions" in proc.stdout
        else:
            res = _increment(root, batches[night], f"night{night}")
            assert (
                res.superseded
                == pq.read_table(batches[night]["objects"]).num_rows - res.objects + res.carried
            )
            for name in NESTED:
                assert res.sources_in[name] == res.nested[name] + res.orphans[name]
        # each committed increment is visible to lsdb
        import lsdb

        df = lsdb.open_catalog(str(root)).compute()
        assert len(df) == int(layout.read_properties(resolve_catalog(root))["hats_nrows"]) > rows_before
        assert set(pq.read_table(batches[night]["objects"])[ID].to_pylist()) <= set(df[ID])
        # the recorded margin follows the catalog (its rows are rows of the catalog): its next
        # version is the margin of the collection the catalog became
        current = healforge.open_collection(root)
        cur_margin = current.margins[current.default_margin]
        assert cur_margin.name == f"cat_margin.v{night + 1}"
        m = lsdb.read_hats(str(cur_margin)).compute()
        assert len(m) == int(layout.read_properties(cur_margin)["hats_nrows"]) and set(m[ID]) <= set(df[ID])
        for name in NESTED:
            path = root.with_name(f"{root.name}.night{night}.orphans.{name}.parquet")
            orphans[name] += pq.read_table(path).num_rows if path.exists() else 0
    assert orphans["sources"] == 12
    # again: skipped
    assert _increment(root, batches[3], "night3").skipped
    proc = run_cli(
        "compact", root, "--dedupe-on", ID, "--keep-latest-by", "validityStart",
        "--nested-dedupe-on", "diaSourceId", "--threshold", "120", "--synchronous", "-q",
    )  # fmt: skip
    import lsdb

    assert "nested rows in" in proc.stdout and "superseded" in proc.stdout
    _check_consolidated(root, batches, 3)
    _check_lsdb_queries(root, batches, 3)
    assert is_valid_catalog(str(margin), strict=True)
    m = lsdb.read_hats(str(margin)).compute()
    assert m[ID].is_unique and len(m) and m["sources"].nest.to_flat()["diaSourceId"].is_unique
    # counts in = counts out + orphans
    for name in NESTED:
        n_in = sum(pq.read_table(b[name]).num_rows for b in batches)
        _, items = _flat_files(root, name)
        assert n_in == len(items) + orphans[name]


def _to_list_struct(root) -> None:
    """Rewrite the catalog's nested columns as ``list<struct>`` (what healforge wrote before)."""
    from healforge.catalog.derived.collection import resolve_catalog
    from healforge.pixel import SPATIAL_INDEX_COLUMN

    root = resolve_catalog(root)  # the current version once a change made it a collection
    for f in layout.list_data_files(root):
        t = pq.read_table(f)
        for name in NESTED:
            col = t.column(name).combine_chunks()
            children = col.flatten()
            items = pa.StructArray.from_arrays(
                [pa.compute.list_flatten(c) for c in children], names=col.type.names
            )
            lengths = pa.compute.list_value_length(children[0]).to_numpy(zero_copy_only=False)
            offsets = pa.array(np.r_[0, np.cumsum(lengths)].astype(np.int32))
            t = t.set_column(t.schema.get_field_index(name), name, pa.ListArray.from_arrays(offsets, items))
        layout.atomic_write_parquet(t, f, (SPATIAL_INDEX_COLUMN,), None)
    layout.write_dataset_metadata(root)
    schema = pq.read_schema(root / "dataset" / "_common_metadata")
    assert all(pa.types.is_list(schema.field(n).type) for n in NESTED)


@pytest.mark.slow
def test_list_struct_catalogs_are_converted_by_the_next_change(catalog, tmp_path):
    """Catalogs written with list<struct> nested columns: compact, increment and delete read them and
    write them packed, with a note; lsdb then answers partial reads."""
    root, batches = catalog
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    _to_list_struct(root)
    proc = run_cli(
        "compact", root, "--dedupe-on", ID, "--keep-latest-by", "validityStart", "--synchronous", "-q"
    )
    assert "converted from list<struct> to struct of lists" in proc.stdout
    _check_consolidated(root, batches, 0)
    _check_lsdb_queries(root, batches, 0)

    _to_list_struct(copy)
    proc = _increment_cli(copy, batches[1], "night1")
    assert "sources, forced converted from list<struct>" in proc.stdout
    _, items = _flat_files(copy, "sources")  # packed everywhere (asserted by _flat_files)
    healforge.compact(copy, ID, "validityStart", **KW)
    _check_consolidated(copy, batches, 1)
    _check_lsdb_queries(copy, batches, 1)

    _to_list_struct(copy)
    res = healforge.delete(copy, [int(items["__owner"].iloc[0])], ID, **KW)
    assert res.rows_removed == 1 and res.converted == list(NESTED) and "converted" in str(res)
    assert is_valid_catalog(str(copy), strict=True)
    from healforge.catalog.change.delete import convert_nested_layout

    assert convert_nested_layout(copy, **KW) == []  # nothing left to convert
    _flat_files(copy, "forced")


def test_orphans_are_an_error_by_default(catalog):
    root, batches = catalog
    night = batches[1]
    with pytest.raises(healforge.BadInputError, match=r"4 sources .* belong to no object"):
        healforge.increment(
            root, night["objects"], {"sources": night["sources"]}, on=ID, latest_by="validityStart", **KW
        )
    assert is_valid_catalog(str(root), strict=True)
    assert not (root / ".healforge-txn").exists()


def test_compact_keeps_nested_history_regression(catalog):
    """compact --dedupe-on used to keep only the latest row's list (36 sources -> 1)."""
    root, batches = catalog
    _increment(root, batches[1], "night1")
    with pytest.raises(healforge.BadInputError, match="dropping history"):
        healforge.compact(root, ID, "validityStart", merge_nested=["sources"], **KW)
    res = healforge.compact(root, ID, "validityStart", **KW)
    assert res.nested_before == res.nested_after
    _check_consolidated(root, batches, 1)


@pytest.mark.parametrize("kill_at", ["Finding objects:1", "Reducing:1", "Commit:1", "Apply:3"])
@pytest.mark.slow
def test_killed_increment_rolls_back_or_forward(catalog, kill_at):
    root, batches = catalog
    before = int(layout.read_properties(resolve_catalog(root))["hats_nrows"])
    proc = _increment_cli(root, batches[1], "night1", check=False, env={"HEALFORGE_KILL_AFTER": kill_at})
    assert proc.returncode == -9, proc.stderr
    if kill_at in ("Finding objects:1", "Reducing:1"):
        assert int(layout.read_properties(resolve_catalog(root))["hats_nrows"]) == before
        assert is_valid_catalog(str(root), strict=True)
    proc = _increment_cli(root, batches[1], "night1")
    healforge.compact(root, ID, "validityStart", **KW)
    _check_consolidated(root, batches, 1)


@pytest.mark.parametrize("kill_at", ["Compacting:2", "Apply:2"])
@pytest.mark.slow
def test_killed_compact_rolls_back_or_forward(catalog, kill_at):
    root, batches = catalog
    _increment(root, batches[1], "night1")
    _increment(root, batches[2], "night2")
    args = ["compact", root, "--dedupe-on", ID, "--keep-latest-by", "validityStart", "--synchronous", "-q"]
    proc = run_cli(*args, check=False, env={"HEALFORGE_KILL_AFTER": kill_at})
    assert proc.returncode == -9, proc.stderr
    if kill_at == "Compacting:2":
        import lsdb

        assert len(lsdb.open_catalog(str(root)).compute()) == int(
            layout.read_properties(resolve_catalog(root))["hats_nrows"]
        )
    run_cli(*args)
    _check_consolidated(root, batches, 2)


def test_delete_objects_and_nested_sources(catalog, tmp_path):
    root, batches = catalog
    _increment(root, batches[1], "night1")
    top, items = _flat_files(root, "sources")
    gone = top[ID].drop_duplicates().to_numpy()[:5]
    (tmp_path / "ids.txt").write_text("\n".join(map(str, gone)) + "\n999999999\n")
    proc = run_cli("delete", root, "--ids", tmp_path / "ids.txt", "--on", ID, "--synchronous", "-q")
    assert "1 ids not found: 999999999" in proc.stdout
    n_rows = int((top[ID].isin(gone)).sum())
    assert f"deleted {n_rows} rows" in proc.stdout
    assert is_valid_catalog(str(root), strict=True)
    left = items[~items["__owner"].isin(gone)]
    drop = left["diaSourceId"].to_numpy()[::7]
    pd.DataFrame({"diaSourceId": drop}).to_parquet(tmp_path / "src.parquet")
    res = healforge.delete(
        root, nested="sources", nested_ids=tmp_path / "src.parquet", nested_on="diaSourceId", **KW
    )
    assert res.nested_removed == len(drop) and not res.nested_missing
    top2, items2 = _flat_files(root, "sources")
    assert len(top2) == len(top) - n_rows and not top2[ID].isin(gone).any()
    assert sorted(items2["diaSourceId"]) == sorted(set(left["diaSourceId"]) - set(drop))
    assert int(layout.read_properties(resolve_catalog(root))["hats_nrows"]) == len(top2)
    assert is_valid_catalog(str(root), strict=True)


def test_safe_casts_on_append(tmp_path):
    ra, dec = make_points("uniform", 2000, seed=1)
    (tmp_path / "in").mkdir()
    pq.write_table(survey_table(ra, dec, 0, 1), tmp_path / "in" / "a.parquet")
    healforge.import_catalog([str(tmp_path / "in" / "a.parquet")], tmp_path / "cat", threshold=500, **KW)
    ra, dec = make_points("uniform", 300, seed=2)
    b = survey_table(ra, dec, 10_000, 2)
    widened = b.set_column(1, "ra", b["ra"].cast(pa.float32()).cast(pa.float64()))
    castable = (
        widened.set_column(1, "ra", widened["ra"].cast(pa.float32()))
        .set_column(4, "flag", b["flag"].cast(pa.int64()))
        .set_column(5, "name", b["name"].cast(pa.large_string()))
    )
    pq.write_table(castable, tmp_path / "in" / "b.parquet")
    proc = run_cli(
        "append", tmp_path / "cat", tmp_path / "in" / "b.parquet", "--cast", "none", "-q", check=False
    )
    assert proc.returncode == 2 and "ra: float vs double" in proc.stderr
    res = healforge.append(tmp_path / "cat", [tmp_path / "in" / "b.parquet"], "b", **KW)
    assert res.rows == 300
    got = pa.concat_tables(
        [pq.read_table(f) for f in layout.list_data_files(resolve_catalog(tmp_path / "cat"))]
    )
    got = got.filter(pa.compute.greater_equal(got["id"], 10_000)).sort_by("id")
    assert got["ra"].to_pylist() == widened["ra"].to_pylist() and got["flag"].type == pa.int16()
    # a value that would change: flag 40000 does not fit int16; a string column as number
    lossy = castable.set_column(4, "flag", pa.array(np.full(300, 40_000, np.int64)))
    pq.write_table(lossy, tmp_path / "in" / "c.parquet")
    with pytest.raises(
        healforge.BadInputError,
        match=r"int64 to int16 without changing values.*column 'flag', row 0, value 40000",
    ):
        healforge.append(tmp_path / "cat", [tmp_path / "in" / "c.parquet"], "c", **KW)
    pq.write_table(castable.set_column(5, "name", pa.array(np.arange(300))), tmp_path / "in" / "d.parquet")
    with pytest.raises(healforge.BadInputError, match=r"cannot be cast .* name: int64 vs string"):
        healforge.append(tmp_path / "cat", [tmp_path / "in" / "d.parquet"], "d", **KW)
    assert is_valid_catalog(str(tmp_path / "cat"), strict=True)
    assert int(layout.read_properties(resolve_catalog(tmp_path / "cat"))["hats_nrows"]) == 2300


@pytest.mark.slow
def test_nightly_lifecycle_example_runs(tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "docs" / "nightly_lifecycle.py"
    spec = importlib.util.spec_from_file_location("nightly_lifecycle", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.main(["--size", "600", "--nights", "3", "--out", str(tmp_path / "run")])
    assert out["nested_in"] == out["nested_out"] + out["orphans"] and out["orphans"] == 9
    assert out["objects"] == 600


def test_increment_casts_value_keeping_types(catalog, tmp_path):
    root, batches = catalog
    objs = pq.read_table(batches[1]["objects"])
    objs = objs.set_column(
        objs.schema.get_field_index("meanFlux"), "meanFlux", objs["meanFlux"].cast(pa.float32())
    )
    pq.write_table(objs, tmp_path / "o.parquet")
    with pytest.raises(healforge.BadInputError, match="meanFlux: float vs double"):
        healforge.increment(root, tmp_path / "o.parquet", on=ID, latest_by="validityStart", cast="none", **KW)
    res = healforge.increment(
        root, tmp_path / "o.parquet", on=ID, latest_by="validityStart", batch="f32", **KW
    )
    assert res.objects == len(set(objs[ID].to_pylist()))
    top, _ = _flat_files(root, "sources")
    assert top["meanFlux"].dtype == np.float64
    want = set(_latest(objs.to_pandas())["meanFlux"].astype(np.float64))
    assert set(top["meanFlux"]) >= want


def test_consolidation_removes_redelivered_sources(catalog):
    """Night 1's sources delivered twice: the consolidation keeps one copy of each, and says so."""
    root, batches = catalog
    _increment(root, batches[1], "night1")
    night = dict(batches[1], forced=batches[0]["forced"])
    again = _increment(root, night, "night1-again")
    res = healforge.compact(root, ID, "validityStart", nested_dedupe_on="diaSourceId", **KW)
    assert res.nested_duplicates["sources"] == again.nested["sources"]
    assert res.nested_before["sources"] == res.nested_after["sources"] + again.nested["sources"]
    # the forced sources have no dedupe field named diaSourceId: night 0's copies stay twice
    assert res.nested_duplicates["forced"] == 0
    _, items = _flat_files(root, "sources")
    assert items["diaSourceId"].is_unique


@pytest.mark.slow
def test_increment_consolidation_delete_on_s3_match_local(nights, tmp_path, s3_options):
    """The same increment, consolidation and delete on a local copy and on s3:// (moto) give the
    same rows; the S3 catalog stays readable by lsdb."""
    import uuid

    import lsdb
    from upath import UPath

    from conftest import BUCKET
    from healforge.io import storage

    tmp, batches = nights
    url = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}/cat"
    UPath(url, **s3_options).fs.put(str(tmp / "base"), url, recursive=True)
    shutil.copytree(tmp / "base", tmp_path / "cat")
    ids = tmp_path / "withdrawn.txt"
    withdrawn = sorted(set(pq.read_table(batches[1]["objects"])[ID].to_pylist()))[:3]
    ids.write_text("\n".join(map(str, withdrawn)) + "\n")
    out = {}
    for kind, root, so in (("local", tmp_path / "cat", None), ("s3", url, s3_options)):
        extra = {"storage_options": so, "tmp_dir": tmp_path / "scratch"} if so else {}
        nested = {"sources": batches[1]["sources"], "forced": batches[1]["forced"]}
        res = healforge.increment(
            root, batches[1]["objects"], nested, on=ID, latest_by="validityStart", batch="n1",
            on_orphans="quarantine", **extra, **KW,
        )  # fmt: skip
        assert res.objects > 0 and res.nested["sources"] > 0
        res = healforge.compact(root, ID, "validityStart", nested_dedupe_on="diaSourceId", **extra, **KW)
        assert res.nested_duplicates["sources"] == 0
        res = healforge.delete(root, ids, ID, **extra, **KW)
        assert res.rows_removed == 3 and not res.missing
        files = layout.list_data_files(resolve_catalog(storage.as_path(root, so)))
        out[kind] = pa.concat_tables(storage.read_parquet_table(f) for f in files).sort_by(ID)
    assert out["s3"].equals(out["local"])
    assert not set(withdrawn) & set(out["s3"][ID].to_pylist())
    path = UPath(url, **s3_options)
    path.fs.invalidate_cache()
    assert len(lsdb.open_catalog(path).compute()) == out["local"].num_rows


@pytest.mark.slow
def test_increment_consolidation_delete_keep_a_collection_current(nights, tmp_path):
    """A nested catalog re-imported as a collection with a margin and an index: an increment, the
    consolidation and a delete on the collection leave its margin equal to one built afresh from
    the primary, and lsdb's id_search (through the collection's index) finds a new object."""
    import lsdb

    tmp, batches = nights
    coll = tmp_path / "coll"
    run_cli(
        "import", tmp / "base", "-o", coll, "--collection", "--margin", "1800", "--index", ID,
        "--threshold", "150", "--highest-order", "7", "--synchronous", "-q",
    )  # fmt: skip
    primary = healforge.open_collection(coll).primary
    top = pq.read_schema(batches[1]["objects"]).names
    base_ids = set(pq.read_table(tmp / "o0.parquet")[ID].to_pylist())
    new_ids = sorted(set(pq.read_table(batches[1]["objects"])[ID].to_pylist()) - base_ids)
    assert new_ids

    def check(step: str, present: int | None, absent: int | None = None) -> None:
        cat = lsdb.open_catalog(str(coll), columns=top)
        fresh = healforge.margin(primary, tmp_path / f"fresh_{step}", 1800, **KW)
        want = sorted(pq.read_table(f)[ID].to_pylist() for f in layout.list_data_files(fresh.path))
        got = sorted(cat.margin.compute()[ID].tolist())
        assert got == sorted(v for part in want for v in part) and got, step
        assert int(cat.hc_structure.catalog_info.total_rows) == len(cat.compute())
        if present is not None:
            hit = cat.id_search(values={ID: present}).compute()
            assert hit[ID].tolist() == [present], step
        if absent is not None:
            assert len(cat.id_search(values={ID: absent}).compute()) == 0, step

    res = healforge.increment(
        coll, batches[1]["objects"], {"sources": batches[1]["sources"], "forced": batches[1]["forced"]},
        on=ID, latest_by="validityStart", sort_nested_by="midpointMjdTai", batch="n1",
        on_orphans="quarantine", **KW,
    )  # fmt: skip
    assert res.objects > 0 and res.path == str(primary)
    margin_ids = set(lsdb.open_catalog(str(coll), columns=top).margin.compute()[ID])
    assert margin_ids & set(new_ids), "the margin holds none of the new rows"
    check("increment", new_ids[0])
    res = healforge.compact(coll, ID, "validityStart", nested_dedupe_on="diaSourceId", **KW)
    assert res.rows_after < res.rows_before
    check("compact", new_ids[-1])
    healforge.delete(coll, [new_ids[0]], ID, **KW)
    check("delete", new_ids[-1], absent=new_ids[0])
    # the new object's light curve: every source of the batch, in time order
    lc = lsdb.open_catalog(str(coll)).compute().set_index(ID).loc[new_ids[-1], "sources"]
    src = pq.read_table(batches[1]["sources"]).to_pandas()
    want = src[src[ID] == new_ids[-1]].sort_values("midpointMjdTai")
    assert lc["diaSourceId"].tolist() == want["diaSourceId"].tolist()


@pytest.mark.slow
def test_increment_key_pair_and_index_for_id_search(nights, tmp_path):
    """Objects keyed ``objectId``, sources ``diaObjectId``: nest and increment take
    ``--on objectId=diaObjectId`` (later increments reuse the recorded source key); a stand-alone
    catalog without an index is told how to get lsdb's id_search, and ``--index`` builds it."""
    import lsdb

    from nested_util import light_curves

    tmp, batches = nights
    rename = {ID: "objectId"}
    pq.read_table(tmp / "o0.parquet").to_pandas().rename(columns=rename).to_parquet(tmp_path / "o0.parquet")
    healforge.import_catalog(
        [str(tmp_path / "o0.parquet")], tmp_path / "obj", threshold=150, highest_order=7, **KW
    )
    root = tmp_path / "cat"
    run_cli(
        "nest", tmp_path / "obj", tmp / "sources", "-o", root, "--on", "objectId=diaObjectId", "--as", "sources",
        "--sort-by", "midpointMjdTai", "--synchronous", "-q",
    )  # fmt: skip
    for night in (1, 2):
        objs = pq.read_table(batches[night]["objects"]).to_pandas().rename(columns=rename)
        objs.to_parquet(tmp_path / f"o{night}.parquet")
        key = "objectId=diaObjectId" if night == 1 else "objectId"
        extra = ["--index", "objectId"] if night == 2 else []
        proc = run_cli(
            "increment", root, "--objects", tmp_path / f"o{night}.parquet", "--nested",
            f"sources={batches[night]['sources']}", "--on", key, "--latest-by", "validityStart",
            "--batch", f"n{night}", "--on-orphans", "quarantine", *extra, "--synchronous", "-q",
        )  # fmt: skip
        if night == 1:
            assert "has no index" in proc.stdout and "--index objectId" in proc.stdout
        else:
            assert "index on 'objectId' built" in proc.stdout
    run_cli(
        "compact", root, "--dedupe-on", "objectId", "--keep-latest-by", "validityStart", "--synchronous", "-q"
    )
    objs, nested = _expected(batches, 2)
    src = nested["sources"]
    # the first increment made the stand-alone catalog a collection: the index is its member
    index = open_collection(root).indexes["objectId"]
    assert index.parent == root and is_valid_catalog(str(index), strict=True)
    cat = lsdb.open_catalog(str(root))
    new = sorted(set(pq.read_table(batches[2]["objects"])[ID].to_pylist()))  # night 2's objects
    for one in (int(objs.index[0]), new[len(new) // 2]):
        hit = cat.id_search(values={"objectId": one}, index_catalogs={"objectId": str(index)}).compute()
        assert hit["objectId"].tolist() == [one]
        want = light_curves(src, ID, [one], "midpointMjdTai", "diaSourceId")[one]
        assert list(hit["sources"].iloc[0]["diaSourceId"]) == want and want


def _nested_input(objs: pd.DataFrame, batch: dict, schema: pa.Schema, packed: bool) -> pa.Table:
    """Object rows with their batch sources nested (sorted by time), in either nested layout."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    columns = {}
    for f in schema:
        if f.name in NESTED:
            items = pa.schema(
                [pa.field(g.name, g.type.value_type) for g in f.type]  # catalog: struct of lists
            )
            src = pq.read_table(batch[f.name]).to_pandas()
            src["_healpix_29"] = compute_spatial_index(src["ra"].to_numpy(), src["dec"].to_numpy())
            src = src[src[ID].isin(objs[ID])].copy()
            src["__row"] = src[ID].map(dict(zip(objs[ID], range(len(objs)), strict=True)))
            src = src.sort_values(["__row", TIME_COL], kind="stable")
            values = pa.Table.from_pandas(src[items.names], schema=items, preserve_index=False)
            counts = np.bincount(src["__row"].to_numpy(), minlength=len(objs))
            offsets = pa.array(np.r_[0, np.cumsum(counts)].astype(np.int32))
            if packed:
                lists = [
                    pa.ListArray.from_arrays(offsets, values.column(n).combine_chunks()) for n in items.names
                ]
                columns[f.name] = pa.StructArray.from_arrays(lists, names=items.names)
            else:
                struct = pa.StructArray.from_arrays(
                    [values.column(n).combine_chunks() for n in items.names], names=items.names
                )
                columns[f.name] = pa.ListArray.from_arrays(offsets, struct)
        elif f.name != "_healpix_29":
            columns[f.name] = pa.array(objs[f.name].to_numpy(), f.type)
    return pa.table(columns)


@pytest.mark.slow
def test_append_nested_rows_in_either_layout(catalog, tmp_path):
    """``append`` of rows carrying nested columns, given packed or as list<struct> (packed on the
    way in); lsdb then loads their sub-columns and finds them by cone search."""
    import lsdb

    from nested_util import in_cone, light_curves, nested_lists

    root, batches = catalog
    schema = pq.read_schema(root / "dataset" / "_common_metadata")
    base = set(
        pa.concat_tables([pq.read_table(f, columns=[ID]) for f in layout.list_data_files(root)])[
            ID
        ].to_pylist()
    )
    objs = _latest(pq.read_table(batches[1]["objects"]).to_pandas())
    objs = objs[~objs[ID].isin(base)].reset_index(drop=True)
    halves = {
        "legacy": objs.iloc[::2].reset_index(drop=True),
        "packed": objs.iloc[1::2].reset_index(drop=True),
    }
    for kind, part in halves.items():
        table = _nested_input(part, batches[1], schema, packed=kind == "packed")
        pq.write_table(table, tmp_path / f"{kind}.parquet")
        proc = run_cli("append", root, tmp_path / f"{kind}.parquet", "--batch", kind, "--synchronous", "-q")
        assert f"appended {len(part)} rows" in proc.stdout
    assert is_valid_catalog(str(root), strict=True)
    _flat_files(root, "sources")  # every file packed
    src = pq.read_table(batches[1]["sources"]).to_pandas()
    cat = lsdb.open_catalog(str(root), columns=[ID, "ra", "dec", "sources.diaSourceId"])
    df = cat.compute()
    got = nested_lists(df[df[ID].isin(objs[ID])], ID, "sources", "diaSourceId")
    assert got == light_curves(src, ID, objs[ID].tolist(), TIME_COL, "diaSourceId")
    one = objs.iloc[len(objs) // 2]
    cone = cat.cone_search(float(one["ra"]), float(one["dec"]), 30).compute()
    new_in_cone = objs[ID][in_cone(objs["ra"], objs["dec"], float(one["ra"]), float(one["dec"]), 30)]
    assert set(new_in_cone) <= set(cone[ID]) and int(one[ID]) in set(cone[ID])

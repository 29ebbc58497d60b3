"""Every kind of catalog healforge writes answers lsdb's queries like the raw inputs do.

Kinds (one :class:`lsdb_conformance.Kind` each, built once per module): a fresh import, the same
after appends, after a de-duplicating compaction, a collection made by ``import --collection``
then appended to, and one made by ``healforge collection``; each with a margin (crossmatch) and
an index (id_search), all strictly valid for hats. The S3 variants run on the moto server
(``@pytest.mark.slow``). Nested kinds (``build_nested_kinds``): ``healforge nest --on id=obj_id``
(quick), the nest of a collection and a nightly catalog after increments and a consolidation
(slow), each also checked sub-column by sub-column against the raw sources. Each (kind,
operation) is one test; docs/lsdb-conformance.md lists them.
"""

from __future__ import annotations

import json
import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import run_cli
from lsdb_conformance import ID, MARGIN_ARCSEC, OPERATIONS, Kind, NestedSpec, probe_inputs, probe_sources

FAST = {"synchronous": True, "quiet": True}
THRESHOLD = 500


def _write(path, df: pd.DataFrame):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)
    return str(path)


def _latest(*frames: pd.DataFrame) -> pd.DataFrame:
    """Brute-force keep-latest: the last frame's row of each id wins."""
    return pd.concat(frames, ignore_index=True).drop_duplicates(ID, keep="last").reset_index(drop=True)


def _collection_file(path, storage_options: dict | None = None):
    from upath import UPath

    f = UPath(f"{path}/collection.properties", **(storage_options or {}))
    f.fs.invalidate_cache()
    return f


def _members(path, storage_options: dict | None = None) -> list[str]:
    """The current catalogs of a collection, as its ``collection.properties`` names them."""
    text = _collection_file(path, storage_options).read_text()
    props = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    names = [props["hats_primary_table_url"], *props.get("all_margins", "").split()]
    names += props.get("all_indexes", "").split()[1::2]  # "column name" pairs
    return [f"{path}/{n}" for n in names]


def build_kinds(root, raw_dir, storage_options: dict | None = None) -> dict[str, Kind]:
    """Build every kind under ``root`` (a local folder or a URL prefix) from raw inputs written
    to the local ``raw_dir``; returns them by name."""
    so = {"storage_options": storage_options} if storage_options else {}
    a = probe_inputs(3_000, 1, boundary=4)
    b = probe_inputs(1_000, 2, start_id=100_000)
    c = probe_inputs(1_200, 3, version=2.0)  # new versions of ids 0..1199, elsewhere on the sky
    fa, fb, fc = (_write(raw_dir / f"{n}.parquet", df) for n, df in (("a", a), ("b", b), ("c", c)))
    kinds: dict[str, Kind] = {}

    def standalone(name: str, steps) -> str:
        path = f"{root}/{name}"
        healforge.import_catalog([fa], path, id_column=ID, threshold=THRESHOLD, highest_order=7, **so, **FAST)
        healforge.margin(path, f"{path}_margin", MARGIN_ARCSEC, **so, **FAST)
        healforge.index_catalog(path, ID, f"{path}_index", **so, **FAST)
        for step in steps:
            step(path)
        return path

    def kind(name, path, expected, **kw) -> None:
        if _collection_file(path, storage_options).exists():
            # a change made the stand-alone catalog a collection in place (versioned snapshots,
            # DESIGN): its rebuilt margin and index are members lsdb attaches
            kinds[name] = Kind(
                name,
                path,
                expected,
                storage_options=storage_options,
                hats_paths=_members(path, storage_options),
            )
            return
        members = [f"{path}_margin", f"{path}_index"] if "margin" in kw else []
        kinds[name] = Kind(
            name, path, expected, storage_options=storage_options, hats_paths=[path, *members], **kw
        )

    path = standalone("import", [])
    kind("import", path, a, margin=f"{path}_margin", index=f"{path}_index")

    path = standalone("appended", [lambda p: healforge.append(p, [fb], batch="b", **so, **FAST)])
    kind(
        "appended", path, pd.concat([a, b], ignore_index=True), margin=f"{path}_margin", index=f"{path}_index"
    )

    path = standalone(
        "compacted",
        [
            lambda p: healforge.append(p, [fb], batch="b", **so, **FAST),
            lambda p: healforge.append(p, [fc], batch="c", **so, **FAST),
            lambda p: healforge.compact(p, dedupe_on=ID, **so, **FAST),
        ],
    )
    kind("compacted", path, _latest(a, b, c), margin=f"{path}_margin", index=f"{path}_index")

    path = f"{root}/collection"
    healforge.import_catalog(
        [fa], path, id_column=ID, threshold=THRESHOLD, highest_order=7, collection=True,
        margins=[MARGIN_ARCSEC], indexes=[ID], name="coll", **so, **FAST,
    )  # fmt: skip
    healforge.append(path, [fb], batch="b", **so, **FAST)
    kinds["collection"] = Kind(
        "collection", path, pd.concat([a, b], ignore_index=True), storage_options=storage_options,
        hats_paths=_members(path, storage_options),
    )  # fmt: skip

    # `healforge collection` before any change (a change alone makes a collection), then an append
    path = standalone("made_collection", [])
    healforge.make_collection(path, storage_options=storage_options)
    healforge.append(path, [fb], batch="b", **so, **FAST)
    kinds["made_collection"] = Kind(
        "made_collection", path, pd.concat([a, b], ignore_index=True), storage_options=storage_options,
        hats_paths=_members(path, storage_options),
    )  # fmt: skip
    return kinds


LOCAL_KINDS = ["import", "appended", "compacted", "collection", "made_collection"]
S3_KINDS = ["import", "compacted", "collection", "made_collection"]
NESTED_KINDS = {"nested", "nested_collection", "nightly"}  # kinds with Kind.nested specs


# lsdb's first crossmatch in a process compiles its kd-tree code (20-40 s): one kind pays it in
# the default run, the other kinds' crossmatches are slow tests
FAST_CROSSMATCH = {"collection"}


def _cells(kinds: list[str], slow: bool = False) -> list:
    cells = []
    for k in kinds:
        for op in OPERATIONS:
            if op == "nested_columns" and k not in NESTED_KINDS:
                continue
            heavy = op == "crossmatch" and k not in FAST_CROSSMATCH and not slow
            cells.append(pytest.param(k, op, marks=pytest.mark.slow) if heavy else (k, op))
    return cells


@pytest.fixture(scope="module")
def local_kinds(tmp_path_factory):
    base = tmp_path_factory.mktemp("conformance")
    return build_kinds(base / "cats", base / "raw")


@pytest.fixture(scope="module")
def s3_kinds(tmp_path_factory, s3_options):
    from conftest import BUCKET

    base = tmp_path_factory.mktemp("conformance_s3")
    return build_kinds(f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}", base / "raw", s3_options)


@pytest.mark.parametrize(("kind", "operation"), _cells(LOCAL_KINDS))
@pytest.mark.slow
def test_local(local_kinds, kind, operation):
    OPERATIONS[operation](local_kinds[kind])


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "operation"), _cells(S3_KINDS, slow=True))
def test_s3(s3_kinds, kind, operation):
    OPERATIONS[operation](s3_kinds[kind])


def _lsdb_nested(tmp_path, raw: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """A nested catalog written by lsdb itself (``join_nested`` + ``to_hats``) and its raw sources."""
    import lsdb
    import numpy as np

    rng = np.random.default_rng(4)
    sources = pd.DataFrame({"obj": np.repeat(raw[ID].to_numpy(), 3)})
    sources["ra"] = np.repeat(raw["ra"].to_numpy(), 3)
    sources["dec"] = np.repeat(raw["dec"].to_numpy(), 3)
    sources["mjd"] = rng.uniform(0, 100, len(sources))
    sources["flux"] = rng.normal(1, 0.1, len(sources))
    sources = sources.iloc[: len(sources) - 30]  # the last 10 objects have no sources
    objects = lsdb.from_dataframe(
        raw, ra_column="ra", dec_column="dec", catalog_name="obj", partition_rows=400
    )
    srcs = lsdb.from_dataframe(sources, ra_column="ra", dec_column="dec", catalog_name="src")
    nested = objects.join_nested(srcs, left_on=ID, right_on="obj", nested_column_name="lc", how="left")
    path = tmp_path / "lsdb_nested"
    nested.to_hats(path, as_collection=False)
    return str(path), sources


@pytest.mark.slow
def test_nested_check_on_lsdb_written_catalog(tmp_path):
    """The nested_columns check passes on lsdb's own struct-of-list layout and fails on the
    list<struct> layout (issue 15), so a nested kind can be plugged in as one NestedSpec."""
    from lsdb_conformance import NestedSpec, check_cone, check_nested_columns, check_partition

    raw = probe_inputs(1_500, 7)
    path, sources = _lsdb_nested(tmp_path, raw)
    spec = NestedSpec("lc", sources, "obj", None, ["mjd", "flux"])  # lsdb does not sort the lists
    kind = Kind("lsdb_nested", path, raw, nested=[spec])
    check_nested_columns(kind)
    check_cone(kind)
    check_partition(kind)

    for f in (tmp_path / "lsdb_nested" / "dataset").rglob("Npix=*.parquet"):
        table = pq.read_table(f)
        lc = table["lc"].combine_chunks()
        items = pa.StructArray.from_arrays([lc.field(i).values for i in range(lc.type.num_fields)],
                                           names=[lc.type.field(i).name for i in range(lc.type.num_fields)])  # fmt: skip
        as_list = pa.ListArray.from_arrays(lc.field(0).offsets, items)
        table = table.set_column(table.schema.get_field_index("lc"), "lc", as_list)
        pq.write_table(table, f)
    dataset = tmp_path / "lsdb_nested" / "dataset"
    (dataset / "_metadata").unlink()
    pq.write_metadata(table.schema, dataset / "_common_metadata")
    with pytest.raises(ValueError, match="not a struct"):
        check_nested_columns(kind)


CLI_FAST = ("--synchronous", "--quiet")


def build_nested_kinds(
    root, raw_dir, names: list[str], storage_options: dict | None = None
) -> dict[str, Kind]:
    """The nested kinds among ``names``, under ``root`` (a local folder or a URL prefix):

    - ``nested``: ``healforge nest objects sources --on id=obj_id --as lc --sort-by mjd`` (CLI),
      then a margin and an index;
    - ``nested_collection``: the same nest of a collection (margin and index in it);
    - ``nightly``: ``nested`` of night 0, three ``increment`` nights (new objects, new versions of
      old ones moved elsewhere on the sky, re-sent sources; the first night builds the index),
      then ``healforge compact --dedupe-on id --keep-latest-by night --nested-dedupe-on src_id``.
    """
    so = {"storage_options": storage_options} if storage_options else {}
    cli_so = ("--storage-options", json.dumps(storage_options)) if storage_options else ()
    objs = probe_inputs(2_000, 11, boundary=4).assign(night=np.int16(0))
    srcs = probe_sources(objs, 12)
    fo, fs = _write(raw_dir / "objects0.parquet", objs), _write(raw_dir / "sources0.parquet", srcs)
    healforge.import_catalog([fs], f"{root}/sources", id_column="src_id", threshold=5_000, **so, **FAST)
    spec = lambda s: NestedSpec("lc", s, "obj_id", "mjd", ["mjd", "flux"])  # noqa: E731
    kinds: dict[str, Kind] = {}

    def nested(name: str, objects: str) -> str:
        out = f"{root}/{name}"
        run_cli("nest", objects, f"{root}/sources", "-o", out, "--on", "id=obj_id", "--as", "lc",
                "--sort-by", "mjd", *cli_so, *CLI_FAST)  # fmt: skip
        return out

    if "nested" in names or "nightly" in names:
        healforge.import_catalog(
            [fo], f"{root}/objects", id_column=ID, threshold=THRESHOLD, highest_order=7, **so, **FAST
        )
    if "nested" in names:
        path = nested("nested", f"{root}/objects")
        healforge.margin(path, f"{path}_margin", MARGIN_ARCSEC, **so, **FAST)
        healforge.index_catalog(path, ID, f"{path}_index", **so, **FAST)
        members = [path, f"{path}_margin", f"{path}_index"]
        kinds["nested"] = Kind("nested", path, objs, margin=members[1], index=members[2], nested=[spec(srcs)],
                               hats_paths=members, storage_options=storage_options)  # fmt: skip
    if "nested_collection" in names:
        coll = f"{root}/objects_collection"
        healforge.import_catalog(
            [fo], coll, id_column=ID, threshold=THRESHOLD, highest_order=7, collection=True,
            margins=[MARGIN_ARCSEC], indexes=[ID], name="objs", **so, **FAST,
        )  # fmt: skip
        path = nested("nested_collection", coll)
        kinds["nested_collection"] = Kind("nested_collection", path, objs, nested=[spec(srcs)],
                                          hats_paths=_members(path, storage_options),
                                          storage_options=storage_options)  # fmt: skip
    if "nightly" in names:
        path = nested("nightly", f"{root}/objects")
        healforge.margin(path, f"{path}_margin", MARGIN_ARCSEC, **so, **FAST)
        all_objs, all_srcs, next_src = [objs], [srcs], 1_000_000
        for night in (1, 2, 3):
            rng = np.random.default_rng(100 + night)
            old = rng.choice(2_000, 300, replace=False)  # new versions, elsewhere on the sky
            moved = probe_inputs(300, 30 + night, version=night).assign(id=old)
            new = probe_inputs(200, 40 + night, start_id=10_000 * night, version=night)
            tonight = pd.concat([moved, new], ignore_index=True).assign(night=np.int16(night))
            fresh = probe_sources(tonight, 50 + night, start_id=next_src, mjd0=float(night))
            next_src += len(fresh)
            resent = srcs[srcs["obj_id"].isin(old)].iloc[:50].assign(ra=0.0, dec=0.0)
            resent = resent.assign(ra=tonight.set_index(ID).loc[resent["obj_id"], "ra"].to_numpy(),
                                   dec=tonight.set_index(ID).loc[resent["obj_id"], "dec"].to_numpy())  # fmt: skip
            sources = pd.concat([fresh, resent], ignore_index=True)
            healforge.increment(
                path, [_write(raw_dir / f"objects{night}.parquet", tonight)],
                {"lc": [_write(raw_dir / f"sources{night}.parquet", sources)]}, on="id=obj_id",
                latest_by="night", batch=f"night{night}", index=ID if night == 1 else None, **so, **FAST,
            )  # fmt: skip
            all_objs.append(tonight)
            all_srcs.append(sources)
        run_cli("compact", path, "--dedupe-on", ID, "--keep-latest-by", "night", "--nested-dedupe-on", "src_id",
                *cli_so, *CLI_FAST)  # fmt: skip
        expected = _latest(*all_objs)
        # a re-sent source is the same row (same src_id, time, flux): one copy stays
        sources = pd.concat(all_srcs, ignore_index=True).drop_duplicates("src_id")
        # the first change made the catalog a collection in place (DESIGN: versioned snapshots):
        # lsdb attaches the rebuilt margin and the index the first night built
        kinds["nightly"] = Kind(
            "nightly",
            path,
            expected,
            storage_options=storage_options,
            nested=[spec(sources)],
            hats_paths=_members(path, storage_options),
        )
    return kinds


@pytest.fixture(scope="module")
def nested_kind(tmp_path_factory):
    base = tmp_path_factory.mktemp("conformance_nested")
    return build_nested_kinds(base / "cats", base / "raw", ["nested"])


@pytest.fixture(scope="module")
def slow_nested_kinds(tmp_path_factory):
    base = tmp_path_factory.mktemp("conformance_nested_slow")
    return build_nested_kinds(base / "cats", base / "raw", ["nested_collection", "nightly"])


@pytest.mark.parametrize(("kind", "operation"), _cells(["nested"]))
@pytest.mark.slow
def test_local_nested(nested_kind, kind, operation):
    OPERATIONS[operation](nested_kind[kind])


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "operation"), _cells(["nested_collection", "nightly"], slow=True))
def test_local_nested_slow(slow_nested_kinds, kind, operation):
    OPERATIONS[operation](slow_nested_kinds[kind])


@pytest.fixture(scope="module")
def s3_nested_kind(tmp_path_factory, s3_options):
    from conftest import BUCKET

    base = tmp_path_factory.mktemp("conformance_nested_s3")
    root = f"s3://{BUCKET}/{uuid.uuid4().hex[:8]}"
    return build_nested_kinds(root, base / "raw", ["nested"], s3_options)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "operation"), _cells(["nested"], slow=True))
def test_s3_nested(s3_nested_kind, kind, operation):
    OPERATIONS[operation](s3_nested_kind[kind])

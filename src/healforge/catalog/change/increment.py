"""``increment``: a nightly batch of objects with their new sources nested, added to a nested catalog.

Per batch: each object's latest version (greatest ``latest_by``) is kept and the others are
counted as superseded; every source set is nested into its objects (matched by key over the
whole batch, so a source in a neighbouring pixel finds its object); the object rows then go
through :func:`healforge.catalog.change.append.stage_and_commit`, the same staged, manifest-committed
transaction as ``append`` (covered pixels get ``Npix=P/<batch>.parquet``, new sky new pixels).

Sources of an object that is not in the batch but already in the catalog are not lost: the
catalog's latest row of that object (top-level columns) is carried into the batch file with only
the new sources in its nested columns, so the next consolidation (``compact``) unions them with
its history (the carried row ties with the catalog's latest row and has the same values).
Sources whose object is in neither are orphans: an error listing the counts, or with
``on_orphans="quarantine"`` written to ``CATALOG.<batch>.orphans.<name>.parquet``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.build.column_types import cast_checked
from healforge.catalog.change import transaction as txn
from healforge.catalog.change.append import batch_key, stage_and_commit
from healforge.catalog.change.casting import check_schema
from healforge.catalog.change.delete import convert_nested_layout
from healforge.catalog.change.versions import home_of
from healforge.catalog.change.writer import catalog_schema, changing, pixel_files
from healforge.catalog.derived import nested_columns as nst
from healforge.catalog.derived.collection import resolve_catalog
from healforge.catalog.derived.index import index_catalog
from healforge.catalog.derived.members import members_of
from healforge.engine import Engine
from healforge.errors import BadInputError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.readers import expand_inputs, iter_batches
from healforge.io.storage import AnyPath
from healforge.names import check_optional_name
from healforge.options import ChangeOptions, RunOptions, options_as_keywords
from healforge.pixel import SPATIAL_INDEX_COLUMN, spatial_index, wrap_lon

# A catalog of at most this many rows is searched for the objects of carried sources in-process.
SMALL_LOOKUP_ROWS = 50_000_000


@dataclass
class IncrementResult:
    """What an increment did."""

    path: str
    label: str
    objects_in: int = 0
    objects: int = 0
    superseded: int = 0
    carried: int = 0
    sources_in: dict[str, int] = field(default_factory=dict)
    nested: dict[str, int] = field(default_factory=dict)
    orphans: dict[str, int] = field(default_factory=dict)
    orphans_path: dict[str, str] = field(default_factory=dict)
    touched_pixels: int = 0
    new_pixels: list[tuple[int, int]] = field(default_factory=list)
    total_rows: int = 0
    skipped: bool = False
    converted: list[str] = field(default_factory=list)
    index_hint: str | None = None

    def __str__(self) -> str:
        notes = ([nst.conversion_note(self.converted)] if self.converted else []) + (
            [self.index_hint] if self.index_hint else []
        )
        if self.skipped:
            return "\n".join(
                [f"batch {self.label!r} was already applied to {self.path}; nothing to do", *notes]
            )
        nested = ", ".join(f"{n} {name}" for name, n in self.nested.items())
        text = (
            f"increment {self.label!r}: {self.objects_in} object rows, {self.superseded} superseded versions, "
            f"{self.objects} objects written ({self.carried} carried from the catalog for new sources); "
            f"nested: {nested or 'none'}; {self.touched_pixels} existing pixels got a new file, "
            f"{len(self.new_pixels)} new pixels; catalog now {self.total_rows} rows"
        )
        for name, n in self.orphans.items():
            if n:
                text += f"; {n} orphan {name} in {self.orphans_path.get(name)}"
        return "\n".join([text, *notes])


def _read_files(
    files: list[str], input_format: str | None, options: dict, storage_options: dict | None = None
) -> pa.Table:
    parts = [
        t
        for f in files
        for _, t in iter_batches(f, None, 1_000_000, input_format, storage_options, **options)
    ]
    if not parts:
        raise BadInputError("no rows in the input files", path=files[0] if files else None)
    try:
        return pa.concat_tables(parts, promote_options="none")
    except pa.ArrowInvalid as exc:
        raise BadInputError(f"input files have different schemas: {exc}", path=files[0]) from None


def _per_name(value, names: list[str], what: str) -> dict[str, str | None]:
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise BadInputError(f"{what} names unknown nested column(s): {', '.join(sorted(unknown))}")
        return {n: value.get(n) for n in names}
    return {n: value for n in names}


def _find_in_catalog(task: dict) -> pa.Table:
    """Rows of a pixel's files whose key is among the wanted ones: key, latest, file, row."""
    wanted = workfiles.open_ipc(task["wanted"]).read_all().column(0).combine_chunks()
    out = []
    for seq, path in zip(task["seqs"], task["files"], strict=True):
        cols = [task["on"]] + ([task["latest"]] if task["latest"] else [])
        t = storage.read_parquet_table(path, columns=cols)
        mask = pc.is_in(t.column(task["on"]).cast(wanted.type), value_set=wanted)
        rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        t = t.take(pa.array(rows))
        out.append(
            pa.table(
                {
                    "key": t.column(task["on"]).cast(wanted.type),
                    "latest": t.column(task["latest"]) if task["latest"] else pa.nulls(len(rows), pa.int64()),
                    "seq": np.full(len(rows), seq, np.int64),
                    "row": rows.astype(np.int64),
                }
            )
        )
    return pa.concat_tables(out) if out else None


@options_as_keywords(change=ChangeOptions, run=RunOptions)
def increment(
    catalog: str | os.PathLike,
    objects: list[str] | str,
    nested: dict[str, list[str] | str] | None = None,
    on: str = "id",
    latest_by: str | None = None,
    sort_nested_by: str | dict[str, str] | None = None,
    batch: str | None = None,
    *,
    on_orphans: str = "error",
    cast: str = "safe",
    input_format: str | None = None,
    reader_options: dict | None = None,
    change: ChangeOptions,
    run: RunOptions,
    index: str | None = None,
) -> IncrementResult:
    """Add a nightly batch of objects and their new sources to a nested catalog.

    Parameters
    ----------
    catalog
        Nested HATS catalog (made by :func:`healforge.nest` or an earlier increment), or a
        collection around one (its primary catalog gets the batch; its margins and indexes are
        rebuilt and swapped in by the same commit).
    objects
        Object files of the batch (the catalog's top-level columns; several versions per object
        allowed).
    nested
        ``{nested column: source files}``; every source has the sources' key column. Nested
        columns of the catalog not named get empty lists.
    on
        Object key, in the objects and in every source set, or ``"OBJ_KEY=SRC_KEY"`` when the
        sources name it differently (default for the sources: the key recorded when nesting).
    latest_by
        Object column whose greatest value marks an object's latest version (ties: the later row).
    sort_nested_by
        Source column ordering each nested list (one name for all, or ``{nested column: column}``;
        default: the one recorded when nesting).
    batch
        Label of the batch (file name in each pixel; default: UTC time). A label already applied
        is skipped.
    on_orphans
        Sources whose object is neither in the batch nor in the catalog: ``"error"`` (default,
        with the counts) or ``"quarantine"`` (written aside, reported).
    cast, input_format, reader_options
        As for :func:`healforge.append`.
    index
        Column to keep an index catalog on (lsdb's ``id_search`` reads it): built after the
        batch when the catalog has none on it (beside a stand-alone catalog, or in its
        collection), kept current by later changes. Without it, a catalog with no index gets
        a note saying how to build one.
    change, compression, margin, run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        As for :func:`healforge.append`.
    """
    if on_orphans not in ("error", "quarantine"):
        raise OptionError("on_orphans must be 'error' or 'quarantine'")
    check_optional_name(batch, "batch label")
    root = layout.require_catalog(resolve_catalog(run.path(catalog)))
    # a catalog written with list<struct> nested columns is first rewritten packed (one transaction)
    converted = convert_nested_layout(root, change=change, run=run)
    if converted:  # the conversion committed a new version: work on it
        root = layout.require_catalog(resolve_catalog(root))
    obj_files = expand_inputs(
        [objects] if isinstance(objects, str | os.PathLike) else objects, run.storage_options
    )
    src_files = {
        name: expand_inputs([f] if isinstance(f, str | os.PathLike) else f, run.storage_options)
        for name, f in (nested or {}).items()
    }
    plan = _plan(root, src_files, on, latest_by, sort_nested_by)
    plan |= {"cast": cast, "input_format": input_format, "options": dict(reader_options or {})}
    plan |= {"storage_options": run.storage_options}
    plan |= {"on_orphans": on_orphans, "src_files": src_files}
    label = batch or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    all_files = obj_files + [f for n in sorted(src_files) for f in src_files[n]]

    with changing(root, "increment", run) as work, run.engine_scope() as eng:
        batch_id = batch_key(all_files, label)
        applied = txn.applied_batches(root)
        if batch_id in applied or (batch and any(b.get("label") == batch for b in applied.values())):
            storage.rmtree(txn.txn_dir(root))
            total = int(layout.read_properties(root)[Key.NROWS])
            return IncrementResult(str(root), label, total_rows=total, skipped=True, converted=converted)
        try:
            result = IncrementResult(str(root), label, converted=converted)
            objs = _latest_objects(obj_files, plan, latest_by, result)
            keys = objs.column(plan["on"]).combine_chunks()
            sources, wanted = _read_sources(root, plan, keys, result)
            carried = _carried_rows(root, work, wanted, plan["on"], latest_by, plan["top"], eng)
            result.carried = carried.num_rows
            table = pa.concat_tables([objs, carried.cast(plan["top"])]).combine_chunks()
            table = _nest_sources(root, table, sources, plan, label, result)
            prepared = work / "prepared"
            workfiles.make_dir(prepared)
            target = prepared / "objects.parquet"
            if not target.exists():
                layout.atomic_write_parquet(table, target, (), None)
            result.objects = table.num_rows
            new_state = {
                n: {"on": plan["on"], "source_on": plan["src_on"][n], "sort_by": plan["sorts"][n]}
                for n in plan["names"]
            }
            done = stage_and_commit(
                root,
                work,
                [str(target)],
                label,
                batch_id,
                kind="increment",
                state={nst.STATE_FILE: {**plan["state"], **new_state}},
                cast="none",
                change=change,
                run=run.using(eng),
            )
        except BadInputError:
            txn.recover(root)  # nothing was committed: drop the staged files
            raise
    result.label = done.label
    result.touched_pixels = done.touched_pixels
    result.new_pixels = done.new_pixels
    result.total_rows = done.total_rows
    result.index_hint = _ensure_index(root, index, plan["on"], run)
    return result


def _plan(root: AnyPath, src_files: dict, on: str, latest_by: str | None, sort_nested_by) -> dict:
    """The catalog's schema, nested columns (``names``), top-level columns (``top``), recorded
    nesting ``state``, and per nested column the sources' key (``src_on``) and sort column."""
    schema = catalog_schema(root)
    names = nst.nested_columns(schema)
    unknown = [n for n in src_files if n not in names]
    if unknown:
        raise BadInputError(
            f"the catalog has no nested column {', '.join(map(repr, unknown))}; nested columns: "
            f"{', '.join(names) or 'none'}"
        )
    state = nst.read_state(root)
    obj_on, pair = nst.split_on(on)
    # the sources' key: given (OBJ_KEY=SRC_KEY), else the one recorded when nesting on this key
    src_on = {}
    for n in names:
        recorded = state.get(n, {})
        same = recorded.get("on") == obj_on
        src_on[n] = pair if "=" in on else (recorded.get("source_on", obj_on) if same else obj_on)
    sorts = _per_name(sort_nested_by, names, "--sort-nested-by")
    sorts = {n: sorts[n] or state.get(n, {}).get("sort_by") for n in names}
    top = pa.schema([f for f in schema if f.name not in names])
    for col in (obj_on, latest_by):
        if col and col not in top.names:
            raise BadInputError(f"column {col!r} not found in the catalog; columns: {', '.join(top.names)}")
    return {"schema": schema, "names": names, "state": state, "on": obj_on, "src_on": src_on} | {
        "sorts": sorts,
        "top": top,
    }


def _latest_objects(
    obj_files: list[str], plan: dict, latest_by: str | None, result: IncrementResult
) -> pa.Table:
    """The batch's objects, one row per key: its latest version (greatest ``latest_by``, ties:
    the later row)."""
    on, top = plan["on"], plan["top"]
    objs = _read_files(obj_files, plan["input_format"], plan["options"], plan["storage_options"])
    check_schema(objs.schema.remove_metadata(), top, plan["cast"], obj_files[0])
    objs = cast_checked(objs, top, obj_files[0])
    if objs.column(on).null_count:
        raise BadInputError(f"{objs.column(on).null_count} objects have a null key", column=on)
    result.objects_in = objs.num_rows
    rank = np.arange(objs.num_rows)
    if latest_by:
        rank = pc.sort_indices(
            pa.table({"l": objs.column(latest_by), "s": rank}),
            [("l", "ascending"), ("s", "ascending")],
        ).to_numpy()
        inv = np.empty_like(rank)
        inv[rank] = np.arange(len(rank))
        rank = inv
    objs = objs.filter(pa.array(nst.latest_per_key([objs.column(on).combine_chunks()], rank)))
    result.superseded = result.objects_in - objs.num_rows
    return objs


def _read_sources(
    root: AnyPath, plan: dict, keys: pa.Array, result: IncrementResult
) -> tuple[dict, pa.Array]:
    """Each nested column's sources, and the keys they name that the batch's objects lack
    (looked for in the catalog next)."""
    sources, missing = {}, []
    for name, files in plan["src_files"].items():
        sk = plan["src_on"][name]
        items = nst.struct_schema(plan["schema"].field(name).type)
        t = _read_files(files, plan["input_format"], plan["options"], plan["storage_options"])
        t = _with_spatial_index(t, items, root)
        if sk not in t.column_names:
            raise BadInputError(f"source files of {name!r} have no key column {sk!r}", path=files[0])
        check_schema(t.schema.remove_metadata(), items, plan["cast"], files[0])
        t = cast_checked(t, items, files[0])
        result.sources_in[name] = t.num_rows
        if t.column(sk).null_count:
            raise BadInputError(f"{t.column(sk).null_count} {name} sources have a null key", column=sk)
        sources[name] = t
        missing.append(
            t.column(sk)
            .cast(keys.type)
            .filter(pc.is_null(pc.index_in(t.column(sk).cast(keys.type), value_set=keys)))
        )
    wanted = pc.unique(pa.chunked_array(missing, keys.type).combine_chunks()) if missing else pa.array([])
    return sources, wanted


def _nest_sources(
    root: AnyPath, table: pa.Table, sources: dict, plan: dict, label: str, result: IncrementResult
) -> pa.Table:
    """``table`` (the objects) with every nested column: each source in its object's list;
    sources of no object are an error, or written aside with ``on_orphans="quarantine"``."""
    all_keys = table.column(plan["on"]).combine_chunks()
    for name in plan["names"]:
        list_type = plan["schema"].field(name).type
        if name not in sources:
            result.nested[name] = 0
            table = table.append_column(name, nst.empty_lists(table.num_rows, list_type))
            continue
        t, sk = sources[name], plan["src_on"][name]
        where = pc.index_in(t.column(sk).cast(all_keys.type), value_set=all_keys)
        found = pc.is_valid(where).to_numpy(zero_copy_only=False)
        pos = pc.fill_null(where, 0).to_numpy(zero_copy_only=False)
        orphans = t.filter(pa.array(~found))
        result.orphans[name] = orphans.num_rows
        if orphans.num_rows:
            if plan["on_orphans"] == "error":
                raise BadInputError(
                    f"{orphans.num_rows} {name} sources (of {t.num_rows}) belong to no object of the batch or "
                    f"the catalog, e.g. {sk}={orphans.column(sk)[0].as_py()!r} "
                    f"({pc.count_distinct(orphans.column(sk)).as_py()} distinct objects); "
                    "pass --on-orphans quarantine to write them aside",
                    path=plan["src_files"][name][0],
                    column=sk,
                )
            result.orphans_path[name] = str(_write_orphans(root, label, name, orphans))
        kept = t.filter(pa.array(found))
        owner = pos[found].astype(np.int64)
        result.nested[name] = kept.num_rows
        table = table.append_column(
            name, nst.build_lists(table.num_rows, owner, kept, plan["sorts"][name], list_type)
        )
    return table.select(plan["schema"].names)


def _ensure_index(root: AnyPath, column: str | None, on: str, run: RunOptions) -> str | None:
    """Build the index on ``column`` if the catalog has none on it; else a note when the catalog
    has no index at all (how to get lsdb's ``id_search``)."""

    indexed = {m.column for m in members_of(root) if m.kind == "index"}
    if column:
        if column in indexed:
            return None
        built = index_catalog(root, column, run=run)
        return f"index on {column!r} built at {built.path}; lsdb's id_search reads it"
    if indexed:
        return None
    return (
        f"note: {root} has no index, so lsdb's id_search cannot look up {on!r}: pass --index {on} "
        f"(or run `healforge index {root} {on}`)"
    )


def _carried_rows(root, work, wanted, on, latest_by, top, eng: Engine) -> pa.Table:
    """The catalog's latest row (top-level columns) of each wanted key present in the catalog."""
    if not len(wanted):
        return top.empty_table()
    pixels = layout.read_partition_info(root)
    files = [pixel_files(root, o, p) for o, p in pixels]
    wanted_file = work / "wanted.arrow"
    with workfiles.ipc_writer(wanted_file, pa.schema([("key", wanted.type)])) as writer:
        writer.write_table(pa.table({"key": wanted}))
    flat = [f for fs in files for f in fs]
    seqs, start = [], 0
    for fs in files:
        seqs.append(list(range(start, start + len(fs))))
        start += len(fs)
    tasks = [
        {"files": fs, "seqs": s, "on": on, "latest": latest_by, "wanted": wanted_file}
        for fs, s in zip(files, seqs, strict=True)
    ]
    # two columns of every file: quicker in-process than starting a cluster, up to a large catalog
    small = int(layout.read_properties(root)[Key.NROWS]) <= SMALL_LOOKUP_ROWS
    found = [t for t in eng.map(_find_in_catalog, tasks, "Finding objects", small=small) if t is not None]
    if not found:
        return top.empty_table()
    hits = pa.concat_tables(found)
    rank = pc.sort_indices(
        hits,
        [
            ("latest", "ascending", "at_start"),
            ("seq", "ascending", "at_start"),
            ("row", "ascending", "at_start"),
        ],
    ).to_numpy()
    inv = np.empty_like(rank)
    inv[rank] = np.arange(len(rank))
    hits = hits.filter(pa.array(nst.latest_per_key([hits.column("key").combine_chunks()], inv)))
    parts = []
    seq_col = hits.column("seq").to_numpy()
    row_col = hits.column("row").to_numpy()
    for seq in np.unique(seq_col):
        rows = np.sort(row_col[seq_col == seq])
        parts.append(storage.read_parquet_table(flat[seq], columns=top.names).take(pa.array(rows)))
    return pa.concat_tables([p.cast(top) for p in parts])


def _with_spatial_index(t: pa.Table, items: pa.Schema, root: AnyPath) -> pa.Table:
    """Sources nested with their ``_healpix_29`` (as :func:`healforge.nest` keeps it) get it computed
    from their coordinates (the catalog's ra/dec column names)."""
    if SPATIAL_INDEX_COLUMN not in items.names or SPATIAL_INDEX_COLUMN in t.column_names:
        return t
    props = layout.read_properties(root)
    ra, dec = props[Key.COL_RA], props[Key.COL_DEC]
    if ra not in t.column_names or dec not in t.column_names:
        return t
    h29 = spatial_index(
        wrap_lon(t.column(ra).to_numpy(zero_copy_only=False).astype(np.float64)),
        t.column(dec).to_numpy(zero_copy_only=False).astype(np.float64),
    )
    t = t.append_column(SPATIAL_INDEX_COLUMN, pa.array(h29, pa.int64()))
    return t.select(items.names) if set(items.names) <= set(t.column_names) else t


def _write_orphans(root: AnyPath, label: str, name: str, table: pa.Table) -> AnyPath:
    home = home_of(root)  # beside the catalog (or its collection), whatever its version
    target = home.with_name(f"{home.name}.{label}.orphans.{name}.parquet")
    layout.atomic_write_parquet(table, target, (), None)
    return target

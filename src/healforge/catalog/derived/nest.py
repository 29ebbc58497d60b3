"""Nested catalogs: the sources of each object as a nested column (``struct`` of lists) of the objects.

Sources are matched to objects by key over the whole sky, not pixel by pixel: a key -> object
partition lookup is built from the object catalog, every source partition is split by the
partition of its object (Arrow shards), and each object partition is then joined with its shards,
sorted by ``(object, sort_by)`` and turned into one list per source field per object (empty when
it has none): nested-pandas' packed layout, which lsdb reads (partially too) and writes.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change.transaction import (
    STATE_DIR,
    building_dir,
    finished_command,
    fresh_scratch,
    write_command_record,
)
from healforge.catalog.derived import nested_columns as nst
from healforge.catalog.derived.collection import (
    Collection,
    index_name,
    is_collection,
    margin_name,
    open_collection,
    resolve_catalog,
    write_collection,
)
from healforge.catalog.derived.margin import read_pixel, swap_into_place
from healforge.catalog.derived.nested_columns import STATE_FILE, read_state
from healforge.engine import Engine
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath
from healforge.names import check_name, check_optional_name
from healforge.options import RunOptions, options_as_keywords
from healforge.pixel import SPATIAL_INDEX_COLUMN

WORK_DIR = ".healforge-nest"
# properties of the object catalog carried over to the nested catalog
_KEPT_PROPERTIES = (
    Key.COL_RA,
    Key.COL_DEC,
    Key.COL_ID,
    Key.MAX_ROWS,
    Key.COLS_SORT,
    Key.SKYMAP_ORDER,
    Key.SKYMAP_ALT_ORDERS,
)


@dataclass
class NestResult:
    """What a nest run produced."""

    path: str
    objects: int
    sources: int
    unmatched: int
    pixels: list[tuple[int, int]]
    collection: str | None = None
    members: list[str] = field(default_factory=list)
    complete: bool = False  # a rerun found it finished: nothing was written

    def __str__(self) -> str:
        text = "already complete: " if self.complete else ""
        text += f"{self.objects} objects with {self.sources} nested sources in {len(self.pixels)} pixels at {self.path}"
        if self.unmatched:
            text += f"; {self.unmatched} sources without an object were dropped"
        if self.collection:
            text += (
                f"; collection {self.collection} with {', '.join(self.members) or 'no other members'} rebuilt"
            )
        return text


@options_as_keywords(run=RunOptions)
def nest(
    objects: str | os.PathLike,
    sources: str | os.PathLike,
    output: str | os.PathLike,
    on: str,
    as_name: str,
    sort_by: str | None = None,
    *,
    run: RunOptions,
    name: str | None = None,
    on_unmatched: str = "error",
    overwrite: bool = False,
) -> NestResult:
    """Write a catalog of objects with their sources nested in a ``struct`` of lists column.

    Parameters
    ----------
    objects, sources
        HATS catalog directories; ``on`` must be unique among objects.
    output
        Nested catalog directory to create (same partitioning as ``objects``).
    on
        Key column present in both catalogs, or ``"OBJ_KEY=SRC_KEY"`` when the names differ
        (e.g. ``"objectId=diaObjectId"``; nothing is renamed).
    as_name
        Name of the nested column.
    sort_by
        Source column ordering the sources inside each object (ties keep catalog order).
    name
        ``obs_collection`` of the output (default: the output directory name). When ``objects``
        is a collection, the output is a collection too: the nested catalog in ``OUTPUT/<name>``
        with the objects' margins (same radii) and indexes (same columns) built again for it.
    on_unmatched
        Sources whose key matches no object: ``"error"`` (default) or ``"drop"`` (counted).
    overwrite
        Replace an existing output. Without it, a rerun of a finished nest with the same
        arguments returns at once (``complete``) and other arguments are refused. The output is
        built in a hidden sibling ``.NAME.building-*`` directory and moved into place at the end
        (copied, metadata last, on object stores): a killed run leaves no partial output, and
        its building directory is removed by the next run.
    run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        :class:`~healforge.options.RunOptions` (or its fields as keywords: ``engine``,
        ``workers``, ``scheduler``, ``synchronous``, ``quiet``, ``storage_options`` for URL
        catalogs, ``tmp_dir`` for intermediate files, default inside a local output).

    Returns
    -------
    NestResult
    """
    tmp_dir = run.scratch(output)
    if on_unmatched not in ("error", "drop"):
        raise OptionError("on_unmatched must be 'error' or 'drop'")
    check_name(as_name, "nested column name")  # names the increments' orphan files
    check_optional_name(name, "catalog name")
    obj_on, src_on = nst.split_on(on)
    objects, sources, output = (run.path(p) for p in (objects, sources, output))
    inputs = {str(objects), str(sources)}
    args = {
        "objects": str(objects),
        "sources": str(sources),
        "on": on,
        "as_name": as_name,
        "sort_by": sort_by,
        "name": name,
        "on_unmatched": on_unmatched,
    }
    coll = open_collection(objects) if is_collection(objects) else None
    objects, sources = resolve_catalog(objects), resolve_catalog(sources)
    # objects from a collection: the nested catalog is the primary of a collection at ``output``
    root, cat_name = output, name or output.name
    if coll:
        output = root / cat_name
    src_schema = _check_columns(objects, sources, obj_on, src_on, sort_by, as_name)
    if {str(root), str(output)} & (inputs | {str(objects), str(sources)}):
        raise CatalogError("the nested catalog cannot be written over one of its inputs")
    done = finished_command(root, "nest", args, overwrite)
    if done is not None:
        done["pixels"] = [tuple(p) for p in done["pixels"]]
        return NestResult(**done, complete=True)
    final_root, final_output = root, output
    root = building_dir(root, overwrite)
    output = root / cat_name if coll else root
    local_work = tmp_dir is None and storage.is_local(output)
    work = fresh_scratch(output if local_work else final_output, WORK_DIR, tmp_dir)

    obj_pixels = layout.read_partition_info(objects)
    src_pixels = layout.read_partition_info(sources)
    with run.engine_scope() as eng:
        per_obj, shards, unmatched = _shuffle_sources(
            eng, objects, sources, obj_pixels, src_pixels, obj_on, src_on, work, on_unmatched == "drop"
        )
        _nest_pixels(
            eng, objects, output, obj_pixels, per_obj, obj_on, src_on, as_name, sort_by, shards, src_schema
        )
        total = _finish(output, objects, obj_pixels, cat_name)
        state = {**read_state(objects), as_name: {"on": obj_on, "source_on": src_on, "sort_by": sort_by}}
        layout.atomic_write_text(output / STATE_DIR / STATE_FILE, json.dumps(state, indent=1))
        storage.rmtree(work)
        result = NestResult(str(final_output), total, int(per_obj.sum()), int(unmatched), obj_pixels)
        if coll:
            result.members = _rebuild_members(coll, root, output, cat_name, final_root.name, tmp_dir, eng)
            result.collection = str(final_root)
    fields = {k: v for k, v in asdict(result).items() if k != "complete"}
    write_command_record(root, "nest", args, fields)
    swap_into_place(root, final_root)
    return result


def _check_columns(
    objects: AnyPath, sources: AnyPath, obj_on: str, src_on: str, sort_by: str | None, as_name: str
) -> pa.Schema:
    """Refuse key or sort columns missing from their catalog and a nested name the objects already
    use; returns the sources' schema."""
    obj_schema = _schema(objects)
    src_schema = _schema(sources)
    for cat, schema, cols in ((objects, obj_schema, [obj_on]), (sources, src_schema, [src_on, sort_by])):
        for col in cols:
            if col and col not in schema.names:
                raise BadInputError(
                    f"column {col!r} not found in catalog {cat}; available columns: {', '.join(schema.names)}"
                )
    if as_name in obj_schema.names:
        raise BadInputError(f"the object catalog {objects} already has a column {as_name!r}")
    return src_schema


def _shuffle_sources(
    eng: Engine,
    objects: AnyPath,
    sources: AnyPath,
    obj_pixels: list[tuple[int, int]],
    src_pixels: list[tuple[int, int]],
    obj_on: str,
    src_on: str,
    work: AnyPath,
    drop: bool,
) -> tuple[np.ndarray, int]:
    """Split every source partition by the partition of its object into Arrow shards under
    ``work``; returns the sources per object partition, the shards of each and the number of
    unmatched sources."""
    keys = eng.map(
        _read_keys,
        [{"root": objects, "order": o, "pixel": p, "on": obj_on} for o, p in obj_pixels],
        "Nest keys",
    )
    lookup = _write_lookup(work, keys, objects, obj_on)
    tasks = [
        {
            "root": sources,
            "order": o,
            "pixel": p,
            "source": i,
            "on": src_on,
            "obj_on": obj_on,
            "lookup": lookup,
            "work": work,
            "drop": drop,
        }
        for i, (o, p) in enumerate(src_pixels)
    ]
    mapped = eng.map(_map_sources, tasks, "Nest map", labels=[f"Norder={o}/Npix={p}" for o, p in src_pixels])
    unmatched = sum(m["unmatched"] for m in mapped)
    per_obj = np.zeros(len(obj_pixels), dtype=np.int64)
    shards: list[list[AnyPath]] = [[] for _ in obj_pixels]
    for task, m in zip(tasks, mapped, strict=True):
        for d, n in m["counts"].items():
            per_obj[d] += n
            shards[d].append(_shard_path(work, d, task["source"]))
    return per_obj, shards, int(unmatched)


def _shard_path(work: AnyPath, dest: int, source: int) -> AnyPath:
    return work / "shards" / str(dest) / f"{source}.arrow"


def _nest_pixels(
    eng: Engine,
    objects: AnyPath,
    output: AnyPath,
    obj_pixels: list[tuple[int, int]],
    per_obj: np.ndarray,
    obj_on: str,
    src_on: str,
    as_name: str,
    sort_by: str | None,
    shards: list[list[AnyPath]],
    src_schema: pa.Schema,
) -> None:
    """Join every object partition with its source shards and write it to ``output``."""
    reduce_tasks = [
        {
            "objects": objects,
            "output": output,
            "order": o,
            "pixel": p,
            "index": i,
            "on": obj_on,
            "src_on": src_on,
            "as_name": as_name,
            "sort_by": sort_by,
            "shards": shards[i],
            "expected": int(per_obj[i]),
            "source_schema": src_schema,
        }
        for i, (o, p) in enumerate(obj_pixels)
    ]
    eng.map(
        _reduce_objects,
        reduce_tasks,
        "Nest reduce",
        labels=[f"Norder={o}/Npix={p}" for o, p in obj_pixels],
    )


def _rebuild_members(
    coll: Collection, root: AnyPath, primary: AnyPath, cat_name: str, coll_name: str, tmp_dir, eng
) -> list[str]:
    """The margins and indexes of the objects' collection, built again for the nested catalog, and
    ``collection.properties`` (collection ``coll_name``) listing them; returns the member
    directory names."""
    from healforge.catalog.change.snapshot import CatalogSnapshot
    from healforge.catalog.derived.index import build_index
    from healforge.catalog.derived.margin import build_margin

    margins, default_margin = [], None
    for member, path in coll.margins.items():
        radius = float(layout.read_properties(path)[Key.MARGIN_THRESHOLD])
        target = root / margin_name(cat_name, radius)
        build_margin(primary, target, radius, overwrite=True, tmp_dir=tmp_dir, engine=eng)
        margins.append(target.name)
        if member == coll.default_margin:
            default_margin = target.name
    indexes = {}
    for column, path in coll.indexes.items():
        extra = layout.read_properties(path).get(Key.INDEX_EXTRA_COLUMN, "")
        include = [c for c in extra.replace(" ", "").split(",") if c]
        target = root / index_name(cat_name, column)
        build_index(
            CatalogSnapshot.of(primary), target, column, include, overwrite=True, tmp_dir=tmp_dir, engine=eng
        )
        indexes[column] = target.name
    default_index = coll.default_index if coll.default_index in indexes else next(iter(indexes), None)
    write_collection(
        root,
        coll_name,
        cat_name,
        margins,
        default_margin or next(iter(margins), None),
        indexes,
        default_index,
    )
    return margins + list(indexes.values())


def _schema(root: AnyPath) -> pa.Schema:
    layout.require_catalog(root)
    path = layout.common_metadata_file(root)
    if not path.exists():
        raise CatalogError(f"{root} is not a HATS catalog (no {layout.DATASET_DIR}/_common_metadata)")
    return storage.read_parquet_schema(path).remove_metadata()


def _read_keys(task: dict) -> pa.Array:
    return (
        read_pixel(task["root"], task["order"], task["pixel"], columns=[task["on"]])
        .column(0)
        .combine_chunks()
    )


def _write_lookup(work: AnyPath, keys: list[pa.Array], objects: AnyPath, on: str) -> AnyPath:
    """Arrow file ``key, part``: every object key and the index of its partition."""
    part = np.repeat(np.arange(len(keys), dtype=np.int32), [len(k) for k in keys])
    table = pa.table({"key": pa.concat_arrays(keys) if keys else pa.array([]), "part": part})
    if table.column("key").null_count:
        raise BadInputError(f"object catalog {objects} has null values in key column {on!r}")
    counts = pc.value_counts(table.column("key"))
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        raise BadInputError(
            f"key column {on!r} is not unique in object catalog {objects}: {len(dup)} repeated keys, "
            f"e.g. {dup[0]['values'].as_py()!r}"
        )
    path = work / "lookup.arrow"
    with workfiles.ipc_writer(path, table.schema) as writer:
        writer.write_table(table)
    return path


def _read_arrow(path: AnyPath) -> pa.Table:
    return workfiles.open_ipc(path).read_all()


def _map_sources(task: dict) -> dict:
    lookup = _read_arrow(task["lookup"])
    table = read_pixel(task["root"], task["order"], task["pixel"])
    key_set = lookup.column("key").combine_chunks()
    pos = pc.index_in(table.column(task["on"]).cast(key_set.type), value_set=key_set)
    found = pc.is_valid(pos).to_numpy(zero_copy_only=False)
    unmatched = int(len(found) - found.sum())
    if unmatched and not task["drop"]:
        missing = table.column(task["on"]).filter(pa.array(~found))
        raise BadInputError(
            f"{unmatched} sources in Norder={task['order']}/Npix={task['pixel']} of {task['root']} have no "
            f"object with the same key ({task['on']!r} = object {task['obj_on']!r}), e.g. "
            f"{missing[0].as_py()!r}; pass --drop-unmatched to leave them out"
        )
    rows = np.flatnonzero(found)
    part = (
        lookup.column("part")
        .combine_chunks()
        .to_numpy()[pos.to_numpy(zero_copy_only=False)[rows].astype(np.int64)]
    )
    counts = {}
    order = np.argsort(part, kind="stable")
    rows, part = rows[order], part[order]
    bounds = np.flatnonzero(np.diff(part)) + 1
    for sel in np.split(np.arange(len(rows)), bounds) if len(rows) else []:
        d = int(part[sel[0]])
        shard = table.take(pa.array(rows[sel]))
        with workfiles.ipc_writer(_shard_path(task["work"], d, task["source"]), shard.schema) as writer:
            writer.write_table(shard)
        counts[d] = len(sel)
    return {"counts": counts, "unmatched": unmatched}


def _reduce_objects(task: dict) -> int:
    objects = read_pixel(task["objects"], task["order"], task["pixel"])
    objects = objects.take(pc.sort_indices(objects, [(SPATIAL_INDEX_COLUMN, "ascending")]))
    shards = [_read_arrow(p) for p in task["shards"]]
    schema = task["source_schema"]
    srcs = pa.concat_tables([s.cast(schema) for s in shards]) if shards else schema.empty_table()
    if len(srcs) != task["expected"]:
        raise RuntimeError(f"nest shards hold {len(srcs)} sources, expected {task['expected']}")
    obj_keys = objects.column(task["on"]).combine_chunks()
    owner = pc.index_in(srcs.column(task["src_on"]).cast(obj_keys.type), value_set=obj_keys)
    nested = nst.build_lists(
        len(objects),
        owner.to_numpy(zero_copy_only=False),
        srcs,
        task["sort_by"],
        nst.packed_type(srcs.schema),
    )
    out = objects.append_column(task["as_name"], nested)
    layout.atomic_write_parquet(out, layout.pixel_file(task["output"], task["order"], task["pixel"]))
    return len(out)


def _finish(output: AnyPath, objects: AnyPath, pixels: list[tuple[int, int]], name: str) -> int:

    layout.write_partition_info(output, pixels)
    total = layout.write_dataset_metadata(output)
    for skymap in list(objects.glob("skymap*.fits")) + list(objects.glob(layout.POINT_MAP_FILE)):
        storage.copy_file(skymap, output / skymap.name)
    props = layout.read_properties(objects)
    kept = {k: props[k] for k in _KEPT_PROPERTIES if k in props}
    if not (output / layout.SKYMAP_FILE).exists():
        kept.pop(Key.SKYMAP_ORDER, None)
        kept.pop(Key.SKYMAP_ALT_ORDERS, None)
    layout.write_properties(
        output,
        obs_collection=name,
        dataproduct_type="object",
        **{
            **layout.partition_properties(pixels, total),
            Key.NPIX_SUFFIX: ".parquet",
            **kept,
        },
    )
    return total


__all__ = ["NestResult", "nest"]

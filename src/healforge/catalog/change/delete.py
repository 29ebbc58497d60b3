"""``delete``: withdraw objects, or single sources inside nested columns, by id.

Every pixel file holding one of the ids is rewritten without it (staged, then committed by the
same manifest transaction as append and compact); files left empty are removed, pixels left
empty leave the partition list. Ids not found are reported.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change import transaction as txn
from healforge.catalog.change.writer import carry_properties, changing, commit_change, pixel_files
from healforge.catalog.derived import nested_columns as nst
from healforge.catalog.derived.collection import resolve_catalog
from healforge.engine import SMALL_STAGE_ROWS
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.hats.layout import read_histogram
from healforge.io import storage
from healforge.io.readers import iter_batches
from healforge.io.storage import AnyPath, as_path
from healforge.options import ChangeOptions, RunOptions, options_as_keywords
from healforge.pixel import SPATIAL_INDEX_COLUMN, index_to_order
from healforge.pixel.alignment import sparse_histogram


@dataclass
class DeleteResult:
    """What a delete did."""

    path: str
    rows_removed: int = 0
    nested_removed: int = 0
    missing: list = field(default_factory=list)
    nested_missing: list = field(default_factory=list)
    files_rewritten: int = 0
    total_rows: int = 0
    converted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        text = (
            f"deleted {self.rows_removed} rows and {self.nested_removed} nested sources from {self.path} "
            f"({self.files_rewritten} files rewritten); catalog now {self.total_rows} rows"
        )
        for what, ids in (("ids", self.missing), ("nested ids", self.nested_missing)):
            if ids:
                shown = ", ".join(map(repr, ids[:5]))
                text += f"; {len(ids)} {what} not found: {shown}{', ...' if len(ids) > 5 else ''}"
        return nst.with_conversion_note(text, self.converted)


def read_ids(source, column: str | None, dtype: pa.DataType, storage_options: dict | None = None) -> pa.Array:
    """Ids from a list, a text file (one per line) or a parquet/csv file's ``column``, as ``dtype``."""
    if isinstance(source, str | os.PathLike):
        path = str(source)
        if path.endswith((".parquet", ".csv", ".pq")):
            if not column:
                raise BadInputError("an id file with columns needs the id column name", path=path)
            parts = [t.column(column) for _, t in iter_batches(path, [column], 1_000_000)]
            values = pa.chunked_array(parts).combine_chunks()
        else:
            text = as_path(source, storage_options).read_text()
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
            values = pa.array(lines, pa.string())
    else:
        values = pa.array(list(source))
    try:
        return pc.unique(values.cast(dtype))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise BadInputError(f"ids cannot be read as {dtype}: {exc}", path=str(source)) from None


def _delete_file(task: dict) -> dict:
    table, converted = nst.pack_table(storage.read_parquet_table(task["path"]))
    out = {"removed": 0, "nested_removed": 0, "found": [], "nested_found": [], "histogram": None}
    if task["ids"] is not None:
        hit = pc.is_in(table.column(task["on"]), value_set=task["ids"]).to_numpy(zero_copy_only=False)
        if hit.any():
            out["found"] = table.column(task["on"]).filter(pa.array(hit)).to_pylist()
            gone = table.column(SPATIAL_INDEX_COLUMN).to_numpy()[hit]
            out["histogram"] = sparse_histogram(index_to_order(gone, task["skymap_order"]))
            table = table.filter(pa.array(~hit))
            out["removed"] = int(hit.sum())
    if task["nested"] and task["nested_ids"] is not None and table.num_rows:
        name = task["nested"]
        col = table.column(name).combine_chunks()
        items, parents = nst.explode(col)
        hit = pc.is_in(items.column(task["nested_on"]), value_set=task["nested_ids"]).to_numpy(
            zero_copy_only=False
        )
        if hit.any():
            out["nested_found"] = items.column(task["nested_on"]).filter(pa.array(hit)).to_pylist()
            lists = nst.build_lists(
                table.num_rows, parents[~hit], items.filter(pa.array(~hit)), None, col.type
            )
            table = table.set_column(table.schema.get_field_index(name), name, lists)
            out["nested_removed"] = int(hit.sum())
    out["changed"] = bool(out["removed"] or out["nested_removed"] or converted)
    out["rows"] = table.num_rows
    if out["changed"] and table.num_rows:
        layout.atomic_write_parquet(table, task["staged"], (SPATIAL_INDEX_COLUMN,), task["compression"])
    return out


@options_as_keywords(change=ChangeOptions, run=RunOptions)
def delete(
    catalog: str | os.PathLike,
    ids=None,
    on: str | None = None,
    *,
    change: ChangeOptions,
    run: RunOptions,
    nested: str | None = None,
    nested_ids=None,
    nested_on: str | None = None,
) -> DeleteResult:
    """Remove objects by id, and/or single sources of a nested column by source id.

    Parameters
    ----------
    catalog
        The catalog directory, or a collection (its primary catalog; every margin and index is
        rebuilt and swapped in by the same commit).
    ids, on
        Object ids (a list, a text file one id per line, or a parquet/csv file with column
        ``on``) and the id column.
    nested, nested_ids, nested_on
        Nested column, source ids (same forms) and the source id field inside it.
    change, compression, margin, run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        As for :func:`healforge.append`.
    """
    root = layout.require_catalog(resolve_catalog(run.path(catalog)))
    schema = storage.read_parquet_schema(layout.common_metadata_file(root))
    if ids is None and nested_ids is None:
        raise OptionError("give ids (with on) and/or nested_ids (with nested and nested_on)")
    obj_ids = src_ids = None
    if ids is not None:
        if not on or on not in schema.names:
            raise BadInputError(f"id column {on!r} not found; columns: {', '.join(schema.names)}")
        obj_ids = read_ids(ids, on, schema.field(on).type, run.storage_options)
    if nested_ids is not None:
        if nested not in nst.nested_columns(schema):
            raise BadInputError(f"{nested!r} is not a nested column of {root}")
        fields = nst.struct_schema(schema.field(nested).type)
        if nested_on not in fields.names:
            raise BadInputError(f"nested column {nested!r} has no field {nested_on!r}")
        src_ids = read_ids(nested_ids, nested_on, fields.field(nested_on).type, run.storage_options)
    task = {"on": on, "ids": obj_ids, "nested": nested, "nested_on": nested_on, "nested_ids": src_ids}
    return _rewrite(root, "delete", task, change, run)


@options_as_keywords(change=ChangeOptions, run=RunOptions)
def convert_nested_layout(
    catalog: str | os.PathLike,
    *,
    change: ChangeOptions,
    run: RunOptions,
) -> list[str]:
    """Rewrite the ``list<struct>`` nested columns of a catalog in the packed layout lsdb reads.

    One transaction like a delete: every data file is rewritten in place (same pixels and rows),
    margins and indexes are rebuilt by the same commit.

    Parameters
    ----------
    catalog
        The catalog directory, or a collection (its primary catalog).
    change, compression, margin, run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        As for :func:`healforge.append`.

    Returns
    -------
    list of str
        The nested columns converted (empty when there was nothing to convert).
    """
    root = layout.require_catalog(resolve_catalog(run.path(catalog)))
    common = layout.common_metadata_file(root)
    if not common.exists() or not nst.legacy_columns(storage.read_parquet_schema(common)):
        return []
    task = {"on": None, "ids": None, "nested": None, "nested_on": None, "nested_ids": None}
    result = _rewrite(root, "convert", task, change, run)
    return result.converted


def _rewrite(root: AnyPath, kind: str, task: dict, change: ChangeOptions, run: RunOptions) -> DeleteResult:
    """Rewrite every file holding ids to delete, or a ``list<struct>`` column, in one transaction."""
    with changing(root, kind, run):
        schema = storage.read_parquet_schema(layout.common_metadata_file(root))
        converted = nst.legacy_columns(schema)
        props = layout.read_properties(root)
        pixels = layout.read_partition_info(root)
        histogram = read_histogram(root)
        skymap_order = int(np.log2(len(histogram) // 12) // 2)
        files = [(o, p, f) for o, p in pixels for f in pixel_files(root, o, p)]
        tasks = [
            {
                **task,
                "path": f,
                "skymap_order": skymap_order,
                "staged": txn.staging_dir(root) / f"{k}.parquet",
                "compression": change.compression,
            }
            for k, (_, _, f) in enumerate(files)
        ]
        with run.engine_scope() as eng:
            small = int(props[Key.NROWS]) < SMALL_STAGE_ROWS
            results = eng.map(_delete_file, tasks, "Deleting", small=small)
            result = DeleteResult(str(root), converted=converted)
            result.rows_removed = sum(r["removed"] for r in results)
            result.nested_removed = sum(r["nested_removed"] for r in results)
            found = {v for r in results for v in r["found"]}
            nested_found = {v for r in results for v in r["nested_found"]}
            obj_ids, src_ids = task["ids"], task["nested_ids"]
            result.missing = [
                v for v in (obj_ids.to_pylist() if obj_ids is not None else []) if v not in found
            ]
            result.nested_missing = [
                v for v in (src_ids.to_pylist() if src_ids is not None else []) if v not in nested_found
            ]
            result.files_rewritten = sum(r["changed"] for r in results)
            result.total_rows = int(props[Key.NROWS]) - result.rows_removed
            if not result.files_rewritten:
                txn.recover(root)
                return result
            rows_left = {}
            for (o, p, _), r in zip(files, results, strict=True):
                rows_left[(o, p)] = rows_left.get((o, p), 0) + r["rows"]
            kept = [px for px in pixels if rows_left[px] > 0]
            if not kept:
                raise CatalogError("the delete would leave an empty catalog")
            retire, move = [], []
            for k, ((o, p, f), r) in enumerate(zip(files, results, strict=True)):
                if rows_left[(o, p)] == 0:
                    continue
                if r["changed"]:
                    retire.append(str(f.relative_to(root)))
                    if r["rows"]:
                        move.append([f"{k}.parquet", str(f.relative_to(root))])
            for o, p in pixels:
                if rows_left[(o, p)] == 0:
                    single = layout.pixel_file(root, o, p, ".parquet")
                    path = single if single.is_file() else layout.pixel_file(root, o, p, "/")
                    retire.append(str(path.relative_to(root)))
            new_hist = histogram.copy()
            for r in results:
                if r["histogram"] is not None:
                    pix, cnt = r["histogram"]
                    np.subtract.at(new_hist, pix, cnt)
            txn.save_array(txn.txn_dir(root) / "point_map.npy", new_hist)
            properties = carry_properties(props)
            properties.update(layout.partition_properties(kept, result.total_rows))
            manifest = {
                "kind": kind,
                "retire": retire,
                "move": move,
                "pixels": [list(px) for px in kept],
                "properties": properties,
            }
            # margins and indexes rebuilt from the catalog-to-be, swapped in by the same commit
            root = commit_change(root, manifest, eng, change.margin, run)
    return result

"""``compact``: merge each pixel's files, de-duplicate, partition the kept rows afresh.

Run periodically on a catalog that grows by appends. The result has one file per pixel
(``Npix=P/compacted.parquet``), rows unique on the chosen id (keeping the latest row: ties go to
the most recently appended batch, in the order ``.healforge/batches.json`` records, whatever
pixel its row is in), the partitioning a fresh import of the kept rows would get (hats' rule over
their counts at the mapping order: pixels over the threshold split, small siblings merge; a single
mapping-order pixel over the threshold stays one partition), and fresh metadata, skymaps and
margins. The change is a transaction like an append.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change import transaction as txn
from healforge.catalog.change.dedupe import kept_rows
from healforge.catalog.change.writer import (
    batch_order,
    carry_properties,
    changing,
    commit_change,
    file_rank,
    pixel_files,
)
from healforge.catalog.check.unseen import check_pixel_dirs
from healforge.catalog.derived.collection import resolve_catalog
from healforge.catalog.derived.nested_columns import (
    legacy_columns,
    pack_table,
    with_conversion_note,
)
from healforge.engine import SMALL_STAGE_ROWS, Engine
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.hats.layout import read_histogram
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath
from healforge.options import ChangeOptions, RunOptions, options_as_keywords
from healforge.pixel import SPATIAL_INDEX_COLUMN, index29_range, index_to_order
from healforge.pixel.alignment import HistogramSum, generate_alignment, sparse_histogram

COMPACTED_NAME = "compacted.parquet"


@dataclass
class CompactResult:
    """What a compaction did."""

    path: str
    rows_before: int
    rows_after: int
    files_before: int
    pixels_before: int
    pixels_after: int
    nested_before: dict[str, int] = field(default_factory=dict)
    nested_after: dict[str, int] = field(default_factory=dict)
    nested_duplicates: dict[str, int] = field(default_factory=dict)
    replaced: list[str] = field(default_factory=list)
    converted: list[str] = field(default_factory=list)

    @property
    def superseded(self) -> int:
        """Object rows merged into a later row of the same id."""
        return self.rows_before - self.rows_after

    def __str__(self) -> str:
        text = (
            f"compacted {self.path}: {self.files_before} files in {self.pixels_before} pixels -> "
            f"{self.pixels_after} pixels, rows in {self.rows_before}, rows out {self.rows_after} "
            f"({self.superseded} duplicates removed: superseded rows)"
        )
        for name in self.nested_before:
            text += (
                f"; {name}: nested rows in {self.nested_before[name]}, out {self.nested_after[name]}"
                f" ({self.nested_duplicates.get(name, 0)} duplicates removed)"
            )
        if self.replaced:
            text += f"; nested columns replaced by the latest row's lists: {', '.join(self.replaced)}"
        return with_conversion_note(text, self.converted)


def check_rows_in(files: list[list[AnyPath]], nrows: int) -> int:
    """Rows in the pixels' files (from their footers); a :class:`CatalogError` when they differ
    from ``hats_nrows`` (rows readers would see are not the rows the catalog declares)."""
    rows = sum(storage.parquet_file(f).metadata.num_rows for fs in files for f in fs)
    if rows != nrows:
        raise CatalogError(
            f"compact stopped: the data files hold {rows} rows but hats_nrows is {nrows}; "
            "run 'healforge validate' to find the damage"
        )
    return rows


def check_rows_out(rows_in: int, rows_out: int, deduplicated: int) -> None:
    """Every row read is written or was de-duplicated on purpose (checked before the commit)."""
    if rows_in != rows_out + deduplicated:
        raise CatalogError(
            f"compact stopped before its commit: {rows_in} rows in, {rows_out} rows out and "
            f"{deduplicated} de-duplicated; {rows_in - rows_out - deduplicated} rows unaccounted for"
        )


def _compact_pixel(task: dict) -> dict:
    table = pa.concat_tables([storage.read_parquet_table(f) for f in task["files"]])
    table = table.replace_schema_metadata(None)
    if task.get("keep") is not None:
        keep = workfiles.read_npz(task["keep"])["keep"]
        stats = {}
        if task.get("merge"):
            table, stats = _merge_nested(task, table, keep)
        else:
            table = table.filter(pa.array(keep))
    else:
        stats = {}
    table, _ = pack_table(table)  # list<struct> columns of older catalogs: written packed
    sort_cols = [SPATIAL_INDEX_COLUMN, *task["sort_columns"]]
    table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in sort_cols]))
    h29 = table[SPATIAL_INDEX_COLUMN].to_numpy()
    # the destinations were chosen from every pixel's kept rows; each takes a contiguous range
    starts = [int(index29_range(p, o)[0]) for o, p in task["dests"]]
    bounds = np.r_[np.searchsorted(h29, starts), len(h29)]
    written = []
    for k, (d_order, d_pixel) in enumerate(task["dests"]):
        part = table.slice(bounds[k], bounds[k + 1] - bounds[k])
        name = f"{d_order}_{d_pixel}.{task['index']}.parquet"
        layout.atomic_write_parquet(part, task["staging"] / name, sort_cols, task["compression"])
        written.append((d_order, d_pixel, part.num_rows, name))
    sky = task["skymap_order"]
    return {"written": written, "histogram": sparse_histogram(index_to_order(h29, sky)), "nested": stats}


def _repartition(
    kept: list[tuple[np.ndarray, np.ndarray]], mapping_order: int, threshold: int
) -> list[list[tuple[int, int]]]:
    """Partition the kept rows as a fresh import would (hats' rule over their histogram at the
    mapping order); ``kept``: each source pixel's sparse histogram of its kept rows. Returns the
    destination pixels of each source pixel's kept rows, in order.

    A single mapping-order pixel over the threshold stays one partition (its weight is capped)."""
    total = HistogramSum(mapping_order)
    for pixels, counts in kept:
        total.add(pixels, counts)
    pix, cnt = total.result()
    if not len(pix):
        raise CatalogError("compaction would leave an empty catalog")
    alignment = generate_alignment(
        pix, cnt, mapping_order, 0, threshold, True, weights=np.minimum(cnt, threshold)
    )
    dest_list = alignment.destinations()
    shift = 2 * (mapping_order - alignment.mapping_order)
    out = []
    for pixels, _ in kept:
        idx = np.unique(alignment.lookup(np.unique(pixels >> shift))) if len(pixels) else []
        out.append([dest_list[j][:2] for j in idx])
    return out


def _combine_parts(task: dict) -> None:
    """One destination pixel's parts (from several source pixels) as one sorted file."""
    table = pa.concat_tables([storage.read_parquet_table(task["staging"] / n) for n in task["parts"]])
    table = table.replace_schema_metadata(None)
    sort_cols = [SPATIAL_INDEX_COLUMN, *task["sort_columns"]]
    table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in sort_cols]))
    layout.atomic_write_parquet(table, task["staging"] / task["name"], sort_cols, task["compression"])
    for n in task["parts"]:
        storage.rmtree(task["staging"] / n)


def _export_nested(task: dict) -> None:
    """Rows of a pixel that lose to a row of another pixel send their nested lists there."""
    cols = [task["id"], *task["merge"]]
    table = pa.concat_tables([storage.read_parquet_table(f, columns=cols) for f in task["files"]])
    z = workfiles.read_npz(task["details"])
    rank, dest = z["rank"], z["dest"]
    table = table.append_column("__rank", pa.array(rank))
    for d in np.unique(dest[dest != task["index"]]):
        part = table.filter(pa.array(dest == d))
        with workfiles.ipc_writer(_nested_in(task["work"], int(d), task["index"]), part.schema) as writer:
            writer.write_table(part)


def _nested_in(work: AnyPath, dest: int, source: int) -> AnyPath:
    """The nested lists pixel ``source`` sends to pixel ``dest``."""
    return work / "nested_in" / str(dest) / f"{source}.arrow"


def _merge_nested(task: dict, table: pa.Table, keep: np.ndarray) -> tuple[pa.Table, dict]:
    """The kept rows, each nested column the union of the lists of every row of its id (this
    pixel's and those sent from other pixels), de-duplicated by source id, sorted."""
    from healforge.catalog.derived import nested_columns as nst

    id_col, merge = task["id"], task["merge"]
    z = workfiles.read_npz(task["details"])
    rank, dest = z["rank"], z["dest"]
    local = dest == task["index"]
    parts = [table.select([id_col, *merge]).append_column("__rank", pa.array(rank)).filter(pa.array(local))]
    parts += [workfiles.open_ipc(path).read_all() for path in task["incoming"]]
    contrib = pa.concat_tables(parts)
    out = table.filter(pa.array(keep))
    winners = out.column(id_col).combine_chunks()
    owner_row = pc.index_in(contrib.column(id_col), value_set=winners).to_numpy(zero_copy_only=False)
    stats = {}
    for name in merge:
        list_type = table.schema.field(name).type
        items, parents = nst.explode(contrib.column(name))
        before = items.num_rows
        owner = owner_row[parents].astype(np.int64)
        item_rank = contrib.column("__rank").to_numpy()[parents]
        src_id = task["nested_ids"].get(name)
        if src_id:
            mask = nst.latest_per_key([pa.array(owner), items.column(src_id).combine_chunks()], item_rank)
            items, owner, item_rank = items.filter(pa.array(mask)), owner[mask], item_rank[mask]
        # history order (older rows first) before the sort column
        order = np.lexsort((np.arange(len(owner)), item_rank))
        items, owner = items.take(pa.array(order)), owner[order]
        lists = nst.build_lists(out.num_rows, owner, items, task["sorts"].get(name), list_type)
        out = out.set_column(out.schema.get_field_index(name), name, lists)
        stats[name] = (before, items.num_rows)
    return out, stats


@options_as_keywords(change=ChangeOptions, run=RunOptions)
def compact(
    catalog: str | os.PathLike,
    dedupe_on: str | None = None,
    keep_latest_by: str | None = None,
    threshold: int | None = None,
    *,
    change: ChangeOptions,
    run: RunOptions,
    merge_nested: list[str] | None = None,
    nested_dedupe_on: str | dict[str, str] | None = None,
    replace_nested: bool = False,
) -> CompactResult:
    """Compact a catalog in place.

    Parameters
    ----------
    catalog
        The catalog directory, or a collection (its primary catalog is compacted; every member
        is rebuilt and swapped in by the same commit).
    dedupe_on
        Id column: keep one row per value.
    keep_latest_by
        Column whose greatest value marks the row to keep (ties, and every row without it: the
        row of the most recently appended batch).
    threshold
        Maximum rows per pixel (default: the catalog's ``hats_max_rows``).
    merge_nested
        Nested columns (``struct`` of lists) whose lists are merged when rows of one id are: the
        kept row's list becomes the union of the lists of all its rows, sorted by the column's
        recorded sort column (default: every nested column).
    nested_dedupe_on
        Source id inside the nested columns (one name, or ``{nested column: name}``): a source
        met in several rows is kept once, from the most recent row.
    replace_nested
        Nested columns not merged keep only the latest row's list (history dropped); without
        it, leaving a nested column out of ``merge_nested`` is an error.
    change, compression, margin, run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        As for :func:`healforge.append`.
    """
    root = layout.require_catalog(resolve_catalog(run.path(catalog)))
    if keep_latest_by and not dedupe_on:
        raise OptionError("keep_latest_by needs dedupe_on")
    if threshold is not None and threshold < 1:
        raise OptionError(f"threshold must be a positive number of rows, got {threshold}")
    with changing(root, "compact", run) as work:
        props = layout.read_properties(root)
        pixels = layout.read_partition_info(root)
        schema = storage.read_parquet_schema(layout.common_metadata_file(root))
        converted = legacy_columns(schema)
        for col in (dedupe_on, keep_latest_by):
            if col and col not in schema.names:
                raise BadInputError(
                    f"column {col!r} not found; available columns: {', '.join(schema.names)}", column=col
                )
        merge, nested_ids, sorts, replaced = _nested_plan(
            root, dedupe_on, merge_nested, nested_dedupe_on, replace_nested
        )
        histogram = read_histogram(root)
        skymap_order = int(np.log2(len(histogram) // 12) // 2)
        check_pixel_dirs(root, "compact")
        batch_ranks = batch_order(root)
        files = [pixel_files(root, o, p, batch_ranks) for o, p in pixels]
        rows_before = int(props[Key.NROWS])
        rows_in = check_rows_in(files, rows_before)
        task = {
            "id": dedupe_on,
            "merge": merge,
            "nested_ids": nested_ids,
            "sorts": sorts,
            "work": work,
            "sort_columns": [c for c in props.get(Key.COLS_SORT, "").split(",") if c],
            "skymap_order": skymap_order,
            "staging": txn.staging_dir(root),
            "compression": change.compression,
        }
        mapping_order = max(skymap_order, max(o for o, _ in pixels))
        small = int(props[Key.NROWS]) < SMALL_STAGE_ROWS
        with run.engine_scope() as eng:
            ranks = [[file_rank(f, batch_ranks) for f in fs] for fs in files]
            ids = {"id": dedupe_on, "latest": keep_latest_by, "merge": merge, "mapping_order": mapping_order}
            kept = kept_rows(eng, files, ranks, ids, work, rows_in, small)
            deduplicated = sum(k["dropped"] for k in kept)
            incoming = _move_nested(eng, files, task, kept) if merge else [[] for _ in pixels]
            # pixels are chosen from the row counts after de-duplication, as a fresh import would
            threshold = int(threshold or props.get(Key.MAX_ROWS, 1_000_000))
            partitions = _repartition([k["hist"] for k in kept], mapping_order, threshold)
            tasks = [
                {
                    **task,
                    "order": o,
                    "pixel": p,
                    "files": fs,
                    "keep": kept[i]["keep"],
                    "details": kept[i]["details"],
                    "incoming": incoming[i],
                    "index": i,
                    "dests": partitions[i],
                }
                for i, ((o, p), fs) in enumerate(zip(pixels, files, strict=True))
            ]
            labels = [f"Norder={o}/Npix={p}" for o, p in pixels]
            results = eng.map(_compact_pixel, tasks, "Compacting", labels=labels, small=small)
            written = _combine(eng, results, task)
            new_hist = np.zeros_like(histogram)
            for r in results:
                pix, cnt = r["histogram"]
                np.add.at(new_hist, pix, cnt)
            txn.save_array(txn.txn_dir(root) / "point_map.npy", new_hist)
            rows_after = sum(w[2] for w in written)
            check_rows_out(rows_in, rows_after, deduplicated)
            manifest = _manifest(root, props, pixels, written, threshold)
            root = commit_change(root, manifest, eng, change.margin, run)
    result = CompactResult(
        str(root), rows_before, rows_after, sum(len(f) for f in files), len(pixels), len(written)
    )
    for name in merge:
        result.nested_before[name] = sum(r["nested"][name][0] for r in results)
        result.nested_after[name] = sum(r["nested"][name][1] for r in results)
        result.nested_duplicates[name] = result.nested_before[name] - result.nested_after[name]
    result.replaced = replaced
    result.converted = converted
    return result


def _move_nested(eng: Engine, files, task: dict, kept: list[dict]) -> list[list[AnyPath]]:
    """Send the nested lists of rows that lose to a row of another pixel there; returns the
    files each pixel receives."""
    incoming: list[list[AnyPath]] = [[] for _ in files]
    moves = []
    for i, k in enumerate(kept):
        for d in k["exports"]:
            incoming[d].append(_nested_in(task["work"], d, i))
        if k["exports"]:
            moves.append(
                {
                    "files": files[i],
                    "id": task["id"],
                    "merge": task["merge"],
                    "details": k["details"],
                    "index": i,
                    "work": task["work"],
                }
            )
    eng.map(_export_nested, moves, "Moving nested lists")
    return incoming


def _combine(eng: Engine, results: list[dict], task: dict) -> list[tuple]:
    """Merge the parts of a new pixel written by several tasks into one staged file; returns
    ``(order, pixel, rows, [staged name, destination])`` per new pixel, in spatial order."""
    parts: dict[tuple[int, int], list] = {}
    for r in results:
        for o, p, rows, name in r["written"]:
            parts.setdefault((o, p), []).append((rows, name))
    combine = [
        {
            "parts": [name for _, name in ps],
            "name": f"{o}_{p}.parquet",
            "staging": task["staging"],
            "sort_columns": task["sort_columns"],
            "compression": task["compression"],
        }
        for (o, p), ps in parts.items()
        if len(ps) > 1
    ]
    if combine:
        eng.map(_combine_parts, combine, "Merging pixels")
    return [
        (
            o,
            p,
            sum(rows for rows, _ in ps),
            [
                ps[0][1] if len(ps) == 1 else f"{o}_{p}.parquet",
                str(layout.pixel_file(Path(), o, p, "/") / COMPACTED_NAME),
            ],
        )
        for (o, p), ps in sorted(parts.items(), key=lambda kv: int(index29_range(kv[0][1], kv[0][0])[0]))
    ]


def _manifest(root: AnyPath, props: dict, pixels, written: list[tuple], threshold: int) -> dict:
    """The commit of a compaction: every old pixel retired, the new ones moved in."""
    new_pixels = [(o, p) for o, p, _, _ in written]
    if not new_pixels:
        raise CatalogError("compaction would leave an empty catalog")
    properties = carry_properties(props)
    properties.update(
        {
            **layout.partition_properties(new_pixels, sum(w[2] for w in written)),
            Key.NPIX_SUFFIX: "/",
            Key.MAX_ROWS: threshold,
        }
    )
    retire = []
    for o, p in pixels:
        single = layout.pixel_file(root, o, p, ".parquet")
        path = single if single.is_file() else layout.pixel_file(root, o, p, "/")
        retire.append(str(path.relative_to(root)))
    return {
        "kind": "compact",
        "retire": retire,
        "move": [move for _, _, _, move in written],
        "pixels": [list(p) for p in new_pixels],
        "properties": properties,
    }


def _nested_plan(root: AnyPath, dedupe_on, merge_nested, nested_dedupe_on, replace_nested):
    """Which nested columns to merge, their source ids and sort columns, and those replaced."""
    from healforge.catalog.derived import nested_columns as nst

    schema = storage.read_parquet_schema(layout.common_metadata_file(root))
    names = nst.nested_columns(schema)
    unknown = [n for n in merge_nested or [] if n not in names]
    if unknown:
        raise BadInputError(
            f"not a nested column: {', '.join(unknown)}; nested columns: {', '.join(names) or 'none'}"
        )
    if not dedupe_on or not names:
        return [], {}, {}, []
    merge = list(merge_nested) if merge_nested else ([] if replace_nested else names)
    left = [n for n in names if n not in merge]
    if left and not replace_nested:
        raise BadInputError(
            f"nested column(s) {', '.join(left)} would keep only the latest row's list, dropping history; "
            "merge them too (--merge-nested) or pass --replace-nested"
        )
    if isinstance(nested_dedupe_on, dict):
        nested_ids = {n: nested_dedupe_on[n] for n in merge if n in nested_dedupe_on}
    elif nested_dedupe_on:
        nested_ids = {
            n: nested_dedupe_on
            for n in merge
            if nested_dedupe_on in nst.struct_schema(schema.field(n).type).names
        }
        if not nested_ids:
            raise BadInputError(f"no merged nested column has a field {nested_dedupe_on!r}")
    else:
        nested_ids = {}
    for n, col in nested_ids.items():
        if col not in nst.struct_schema(schema.field(n).type).names:
            raise BadInputError(f"nested column {n!r} has no field {col!r}")
    state = nst.read_state(root)
    sorts = {n: state.get(n, {}).get("sort_by") for n in merge}
    return merge, nested_ids, sorts, left

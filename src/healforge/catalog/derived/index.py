"""Index catalogs: an id column mapped to the primary partitions holding each value.

The layout is the one hats-import writes and lsdb's ``id_search`` reads: ``hats.properties`` with
``dataproduct_type=index``, ``hats_index_column`` and ``hats_primary_table_url``; data files
``dataset/index/part.<k>.parquet`` with the indexed column, any extra columns, ``_healpix_29``,
``Norder`` (uint8) and ``Npix`` (uint64), sorted by the indexed column across and within files;
``dataset/_metadata`` and ``dataset/_common_metadata``. It is not HEALPix-partitioned.

Method (bounded memory: no process holds more than one partition or one output file):

1. map, one task per primary partition: read the column(s), add ``Norder``/``Npix``, sort by
   the id and keep the result as an Arrow shard, returning an evenly spaced sample of its ids;
2. the samples, weighted by shard size, give cut values splitting the ids into ranges of about
   ``rows_per_file`` rows (equal ids always fall in one range);
3. cut, per shard: the row positions of the cut values (the shard is sorted);
4. reduce, one task per range: the range's slice of every shard (memory-mapped), sorted, is one
   output file; equal adjacent ids there are the duplicates, reported, never dropped.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.change.snapshot import CatalogSnapshot
from healforge.catalog.change.transaction import (
    building_dir,
    fresh_scratch,
    swap_into_place,
    write_command_record,
)
from healforge.catalog.derived import members
from healforge.catalog.derived.collection import (
    index_name,
)
from healforge.catalog.derived.member_command import add_member_command, member_place
from healforge.engine import SMALL_STAGE_ROWS, Engine, iter_chunks
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath, as_path
from healforge.names import check_name, check_optional_name
from healforge.options import RunOptions, options_as_keywords
from healforge.pixel import SPATIAL_INDEX_COLUMN

WORK_DIR = ".healforge-index"
INDEX_DIR = "index"
ROWS_PER_FILE = 2_000_000
SAMPLES_PER_SHARD = 128
MAX_EXAMPLES = 5


@dataclass
class IndexResult:
    """What an index build produced; ``duplicates`` counts id values held by several rows."""

    path: str
    column: str
    rows: int
    files: int
    duplicates: int = 0
    duplicate_rows: int = 0
    duplicate_examples: list[dict] = field(default_factory=list)
    complete: bool = False  # a rerun found it finished: nothing was written

    def __str__(self) -> str:
        text = (
            "already complete: " if self.complete else ""
        ) + f"index on {self.column!r}: {self.rows} rows in {self.files} file(s) at {self.path}"
        if self.duplicates:
            examples = ", ".join(
                f"{e['value']!r} x{e['count']} in {e['pixels']}" for e in self.duplicate_examples
            )
            text += (
                f"\nwarning: {self.duplicates} {self.column!r} value(s) appear in more than one row "
                f"({self.duplicate_rows} rows in all; all of them are indexed), e.g. {examples}"
            )
        return text


@options_as_keywords(run=RunOptions)
def index_catalog(
    catalog: str | os.PathLike,
    column: str,
    output: str | os.PathLike | None = None,
    include_columns: list[str] | tuple[str, ...] = (),
    name: str | None = None,
    *,
    run: RunOptions,
    default: bool = False,
    rows_per_file: int = ROWS_PER_FILE,
    overwrite: bool = False,
) -> IndexResult:
    """Build an index catalog on ``column`` of a catalog or collection.

    Parameters
    ----------
    catalog
        Primary catalog, or a collection (its primary gets the index, which joins the collection
        as ``<name>_<column>`` unless ``output`` says otherwise).
    column
        Column to index (any non-nested type; nulls are an error).
    output
        Index directory to create (default: in the collection, or ``CATALOG_<column>_index``
        beside a stand-alone catalog).
    include_columns
        Extra columns of the primary copied into the index.
    name
        ``obs_collection`` of the index (default: the output directory name).
    default
        Make it the collection's default index (the first index of a collection always is).
    rows_per_file
        Rows per index data file (and per reduce task).
    overwrite, run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        As for :func:`healforge.margin` (the catalog and output may be fsspec URLs).

    Returns
    -------
    IndexResult
        Including the number of duplicated id values and a few examples.
    """
    check_optional_name(name, "index name")
    if rows_per_file < 1:
        raise OptionError(f"rows_per_file must be at least 1, got {rows_per_file}")
    if output is None:
        check_name(column, "index column name")  # part of the index's directory name
    primary, coll, output = member_place(
        catalog,
        output,
        run,
        lambda base: index_name(base, column),
        beside=lambda primary: primary.with_name(f"{primary.name}_{column}_index"),
    )
    args = {
        "catalog": str(run.path(catalog)),
        "column": column,
        "include_columns": list(include_columns),
        "name": name,
        "rows_per_file": int(rows_per_file),
    }

    def build(target: AnyPath, **common) -> IndexResult:
        source = CatalogSnapshot.of(primary)
        return build_index(source, target, column, include_columns, rows_per_file=rows_per_file, **common)

    def complete(done: dict) -> IndexResult:
        return IndexResult(**done, complete=True)

    member = members.Member("index", output, column=column, include_columns=list(include_columns))
    return add_member_command(
        member, primary, coll, args, run, build, complete, overwrite=overwrite, default=default
    )


def build_index(
    source: CatalogSnapshot,
    output: str | os.PathLike,
    column: str,
    include_columns: list[str] | tuple[str, ...] = (),
    *,
    name: str | None = None,
    overwrite: bool = False,
    tmp_dir: str | os.PathLike | None = None,
    engine: Engine,
    rows_per_file: int = ROWS_PER_FILE,
    record: dict | None = None,
) -> IndexResult:
    """Build (or rebuild, with ``overwrite``) an index of ``source`` with an existing engine.

    ``record``: the arguments of an ``index`` command, kept in the index so that a rerun with
    them answers "already complete".

    Built in a hidden sibling directory and moved (on object stores: copied) into place at the
    end, like a margin; the sorted shards stay on local disk (``tmp_dir``, see
    :func:`healforge.io.storage.scratch_dir`).
    """
    output = as_path(output, None if storage.is_local(source.root) else source.root.storage_options)
    if str(output) == str(source.root):
        raise CatalogError("the index cannot be written over its primary catalog")
    schema = storage.read_parquet_schema(source.schema_file)
    wanted = [column, *[c for c in include_columns if c not in (column, SPATIAL_INDEX_COLUMN)]]
    for col in wanted:
        if col not in schema.names:
            raise BadInputError(
                f"column {col!r} not found in {source.root}; available columns: {', '.join(schema.names)}",
                column=col,
            )
    if pa.types.is_nested(schema.field(column).type):
        raise BadInputError(
            f"cannot index a nested column ({schema.field(column).type}); index one of its fields "
            "in a flat catalog instead",
            column=column,
        )
    rows_per_file = max(1, int(rows_per_file))
    final, build = output, building_dir(output, overwrite)
    work = fresh_scratch(build, WORK_DIR, tmp_dir)
    workfiles.make_dir(work / "shards")

    columns = [*wanted, SPATIAL_INDEX_COLUMN]
    labels = [f"Norder={o}/Npix={p}" for o, p in source.pixels]
    small = int(source.props.get(Key.NROWS, SMALL_STAGE_ROWS)) < SMALL_STAGE_ROWS
    mapped = engine.map(
        _map_pixel,
        [
            {
                "files": source.files[pix],
                "order": pix[0],
                "pixel": pix[1],
                "columns": columns,
                "column": column,
                "shard": work / "shards" / f"{i}.arrow",
            }
            for i, pix in enumerate(source.pixels)
        ],
        "Index map",
        labels=labels,
        small=small,
    )
    total = sum(m["rows"] for m in mapped)
    cuts = _cut_values(mapped, total, rows_per_file)
    shards = [work / "shards" / f"{i}.arrow" if m["rows"] else None for i, m in enumerate(mapped)]
    size = max(1, math.ceil(len(shards) / (4 * engine.parallelism)))
    groups = list(iter_chunks(list(enumerate(shards)), size))
    positions = {}
    cut_labels = [f"shards {g[0][0]}-{g[-1][0]}" for g in groups]
    tasks = [(g, cuts, column) for g in groups]
    for group in engine.map(_cut_group, tasks, "Index cut", labels=cut_labels, small=True):
        positions.update(group)
    n_parts = len(cuts) + 1
    reduced = engine.map(
        _reduce_range,
        [
            {
                "shards": shards,
                "ranges": [(positions[s][j], positions[s][j + 1]) for s in range(len(shards))],
                "column": column,
                "output": build / layout.DATASET_DIR / INDEX_DIR / f"part.{j}.parquet",
                "schema": _index_schema(schema, wanted),
            }
            for j in range(n_parts)
        ],
        "Index reduce",
        labels=[f"part.{j}" for j in range(n_parts)],
        small=small,
    )
    written = sum(r["rows"] for r in reduced)
    if written != total:
        raise RuntimeError(f"index files hold {written} rows, the partitions {total}")
    storage.rmtree(work)
    rows = layout.write_metadata_unordered(build)
    if rows != total:
        raise RuntimeError(f"index metadata counts {rows} rows, expected {total}")
    layout.write_properties(
        build,
        obs_collection=name or final.name,
        dataproduct_type="index",
        **{
            Key.NROWS: total,
            Key.PRIMARY_TABLE_URL: source.root.name,
            Key.INDEX_COLUMN: column,
            Key.INDEX_EXTRA_COLUMN: wanted[1:] or None,
        },
    )
    examples = [e for r in reduced for e in r["examples"]][:MAX_EXAMPLES]
    result = IndexResult(
        str(final),
        column,
        total,
        n_parts,
        duplicates=sum(r["dup_values"] for r in reduced),
        duplicate_rows=sum(r["dup_rows"] for r in reduced),
        duplicate_examples=examples,
    )
    if record is not None:
        fields = {k: v for k, v in asdict(result).items() if k != "complete"}
        write_command_record(build, "index", record, fields)
    swap_into_place(build, final)
    return result


def _index_schema(schema: pa.Schema, wanted: list[str]) -> pa.Schema:
    return pa.schema(
        [schema.field(c) for c in wanted]
        + [
            pa.field(SPATIAL_INDEX_COLUMN, pa.int64()),
            pa.field("Norder", pa.uint8()),
            pa.field("Npix", pa.uint64()),
        ]
    )


def _map_pixel(task: dict) -> dict:
    column = task["column"]
    parts = []
    for f in task["files"]:
        part = storage.read_parquet_table(f, columns=task["columns"])
        ids = part[column]
        if ids.null_count:
            first = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise BadInputError(
                "null id: an index needs a value in every row", path=f, column=column, row=first
            )
        parts.append(part)
    table = pa.concat_tables(parts).replace_schema_metadata(None) if parts else None
    n = table.num_rows if table is not None else 0
    if n:
        table = table.append_column("Norder", pa.array(np.full(n, task["order"], dtype=np.uint8)))
        table = table.append_column("Npix", pa.array(np.full(n, task["pixel"], dtype=np.uint64)))
        order = pc.sort_indices(table, sort_keys=[(column, "ascending"), (SPATIAL_INDEX_COLUMN, "ascending")])
        table = table.take(order)
        with workfiles.ipc_writer(task["shard"], table.schema) as writer:
            writer.write_table(table, max_chunksize=1 << 20)
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLES_PER_SHARD)).astype(np.int64))
        sample = table[column].take(pa.array(picks)).combine_chunks()
    else:
        sample = None
    return {"rows": n, "sample": sample}


def _cut_values(mapped: list[dict], total: int, rows_per_file: int) -> list:
    """Id values splitting the rows into ranges of about ``rows_per_file`` (weighted samples)."""
    n_parts = max(1, math.ceil(total / rows_per_file))
    samples = [m for m in mapped if m["rows"]]
    if n_parts == 1 or not samples:
        return []
    values = pa.chunked_array([m["sample"] for m in samples]).combine_chunks()
    weights = np.concatenate([np.full(len(m["sample"]), m["rows"] / len(m["sample"])) for m in samples])
    order = pc.sort_indices(values).to_numpy()
    cum = np.cumsum(weights[order])
    at = np.searchsorted(cum, np.arange(1, n_parts) * (total / n_parts))
    picked = values.take(pa.array(order[np.minimum(at, len(order) - 1)]))
    cuts = pc.unique(picked)
    return pc.take(cuts, pc.sort_indices(cuts)).to_pylist()


def _open_shard(path: AnyPath) -> pa.Table:
    return workfiles.open_ipc(path).read_all()


def _cut_group(args) -> dict[int, list[int]]:
    """Per shard: ``[0, p1, ..., n]``, the first row at or above each cut value."""
    group, cuts, column = args
    out = {}
    for i, path in group:
        if path is None:  # a partition without rows wrote no shard
            out[i] = [0] * (len(cuts) + 2)
            continue
        ids = _open_shard(path)[column]
        n = len(ids)
        out[i] = [0, *[int(pc.sum(pc.less(ids, pa.scalar(c, ids.type))).as_py() or 0) for c in cuts], n]
    return out


def _reduce_range(task: dict) -> dict:
    column = task["column"]
    parts = []
    for path, (lo, hi) in zip(task["shards"], task["ranges"], strict=True):
        if hi > lo:
            parts.append(_open_shard(path).slice(lo, hi - lo))
    if parts:
        table = pa.concat_tables(parts)
        table = table.take(
            pc.sort_indices(table, sort_keys=[(column, "ascending"), (SPATIAL_INDEX_COLUMN, "ascending")])
        )
    else:
        table = task["schema"].empty_table()
    table = table.select(task["schema"].names).cast(task["schema"])
    layout.atomic_write_parquet(table, task["output"], sort_columns=[column], row_group_rows=1_000_000)
    return {"rows": table.num_rows, **_duplicates(table, column)}


def _duplicates(table: pa.Table, column: str) -> dict:
    """Id values held by several rows of a table sorted by ``column``."""
    n = table.num_rows
    if n < 2:
        return {"dup_values": 0, "dup_rows": 0, "examples": []}
    ids = table[column].combine_chunks()
    same = pc.equal(ids.slice(1), ids.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    if not same.any():
        return {"dup_values": 0, "dup_rows": 0, "examples": []}
    in_run = np.r_[False, same] | np.r_[same, False]
    starts = np.flatnonzero(np.r_[False, same] < np.r_[same, False])
    ends = np.flatnonzero(np.r_[same, False] < np.r_[False, same]) + 1
    orders = table["Norder"].to_numpy()
    pixels = table["Npix"].to_numpy()
    examples = [
        {
            "value": ids[int(a)].as_py(),
            "count": int(b - a),
            "pixels": sorted({(int(o), int(p)) for o, p in zip(orders[a:b], pixels[a:b], strict=True)}),
        }
        for a, b in zip(starts[:MAX_EXAMPLES], ends[:MAX_EXAMPLES], strict=True)
    ]
    return {"dup_values": len(starts), "dup_rows": int(in_run.sum()), "examples": examples}


__all__ = ["IndexResult", "build_index", "index_catalog"]

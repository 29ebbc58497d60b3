"""Which rows a compaction keeps, decided on the workers: ids shuffled by hash, never gathered.

Three stages of tasks, handing files to each other through the scratch directory ``work``:

1. **scatter** (one task per pixel): read the pixel's id (and ``--keep-latest-by``) column with
   each row's batch rank, and write them to one piece per hash bucket of the id; the pixel's
   ``_healpix_29`` values stay in scratch too;
2. **winners** (one task per bucket): every version of an id is in the same bucket, so the rows
   of a bucket, sorted by id, then ``latest``, batch, pixel and row (the order one global sort of
   the catalog gives), keep the last row of each id; each pixel gets back, per bucket, its rows'
   keep flag, rank (later = more recent version of the id) and the pixel of their id's winner;
3. **masks** (one task per pixel): the keep mask (and, to merge nested columns, ranks and winner
   pixels) saved for the compaction tasks, and the sparse histogram of the kept rows at the
   mapping order, from which the client chooses the new partitions.

The client holds file names, counts and sparse histograms only: its memory does not grow with
the rows or the ids of the catalog. The keep masks are those of one global sort, row for row.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.engine import Engine
from healforge.errors import BadInputError
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath
from healforge.pixel import SPATIAL_INDEX_COLUMN, index_to_order
from healforge.pixel.alignment import sparse_histogram

# rows of ids one winners task sorts (about 40 bytes each)
BUCKET_ROWS = 5_000_000


def kept_rows(
    eng: Engine, files: list[list], ranks: list[list[int]], task: dict, work: AnyPath, rows: int, small: bool
) -> list[dict]:
    """Per pixel (in order): ``hist`` (sparse histogram of its kept rows at
    ``task["mapping_order"]``), ``dropped`` (rows de-duplicated away), ``keep`` and ``details``
    (saved keep mask and, with ``task["merge"]``, ranks and winner pixels; ``None`` without
    ``task["id"]``) and ``exports`` (other pixels holding the winner of one of its ids)."""
    n_buckets = bucket_count(rows, eng.parallelism) if task["id"] else 0
    scatter = [
        {**task, "files": fs, "ranks": rk, "index": i, "buckets": n_buckets, "work": work}
        for i, (fs, rk) in enumerate(zip(files, ranks, strict=True))
    ]
    labels = [f"pixel {i}" for i in range(len(files))]
    scattered = eng.map(_scatter, scatter, "Reading ids", labels=labels, small=small)
    if not task["id"]:
        return [
            {"hist": s["hist"], "dropped": 0, "keep": None, "details": None, "exports": []} for s in scattered
        ]
    pieces: list[list[int]] = [[] for _ in range(n_buckets)]
    for i, s in enumerate(scattered):
        for b in s["buckets"]:
            pieces[b].append(i)
    bucket_tasks = [
        {"bucket": b, "pixels": px, "work": work, "latest": bool(task["latest"])}
        for b, px in enumerate(pieces)
        if px
    ]
    decided = eng.map(
        _winners,
        bucket_tasks,
        "De-duplicating",
        labels=[f"bucket {t['bucket']}" for t in bucket_tasks],
        small=small,
    )
    answers: list[list[int]] = [[] for _ in files]
    for t, d in zip(bucket_tasks, decided, strict=True):
        for i in d["pixels"]:
            answers[i].append(t["bucket"])
    mask_tasks = [
        {**task, "index": i, "rows": s["rows"], "buckets": answers[i], "work": work}
        for i, s in enumerate(scattered)
    ]
    return eng.map(_masks, mask_tasks, "Keep masks", labels=labels, small=small)


def hash_buckets(values: pa.Array, n: int) -> np.ndarray:
    """The bucket (0 to ``n - 1``) of each value: the same for equal values in any process, file
    or integer width."""
    values = values.to_numpy(zero_copy_only=False)
    if values.dtype.kind in "iub":
        values = values.astype(np.int64)
    import pandas as pd  # only for its hash (pandas takes 0.2 s to import)

    return (pd.util.hash_array(values) % np.uint64(n)).astype(np.int64)


def bucket_count(rows: int, parallelism: int) -> int:
    """Buckets for ``rows`` ids: one per worker at least, about :data:`BUCKET_ROWS` rows each."""
    return max(parallelism, math.ceil(rows / BUCKET_ROWS))


def _piece(work: AnyPath, bucket: int, pixel: int) -> AnyPath:
    return work / "ids" / str(bucket) / f"{pixel}.arrow"


def _answer(work: AnyPath, pixel: int, bucket: int) -> AnyPath:
    return work / "kept" / str(pixel) / f"{bucket}.arrow"


def _hp29(work: AnyPath, pixel: int) -> AnyPath:
    return work / "hp29" / f"{pixel}.npz"


def _scatter(task: dict) -> dict:
    """Stage 1 for one pixel (see the module docstring)."""
    id_col, latest = task["id"], task["latest"]
    cols = list(dict.fromkeys(c for c in (SPATIAL_INDEX_COLUMN, id_col, latest) if c))
    parts = []
    for f, rank in zip(task["files"], task["ranks"], strict=True):
        table = storage.read_parquet_table(f, columns=cols)
        parts.append(table.append_column("batch", pa.array(np.full(table.num_rows, rank, np.int64))))
    table = pa.concat_tables(parts)
    h29 = table[SPATIAL_INDEX_COLUMN].to_numpy()
    if not id_col:
        return {"rows": len(h29), "hist": sparse_histogram(index_to_order(h29, task["mapping_order"]))}
    ids = table[id_col].combine_chunks()
    if ids.null_count:
        raise BadInputError(
            f"the id column has {ids.null_count} null value(s); cannot de-duplicate", column=id_col
        )
    workfiles.write_npz(_hp29(task["work"], task["index"]), h29=h29)
    columns = {"id": ids}
    if latest:
        columns["latest"] = table[latest].combine_chunks()
    columns["batch"] = table["batch"].combine_chunks()
    columns["pixel"] = pa.array(np.full(len(h29), task["index"], np.int64))
    columns["row"] = pa.array(np.arange(len(h29), dtype=np.int64))
    keyed = pa.table(columns)
    bucket = hash_buckets(ids, task["buckets"])
    order = np.argsort(bucket, kind="stable")
    sorted_buckets = bucket[order]
    starts = np.flatnonzero(np.r_[True, sorted_buckets[1:] != sorted_buckets[:-1]]) if len(order) else []
    ends = np.r_[starts[1:], len(order)] if len(order) else []
    written = []
    for a, z in zip(starts, ends, strict=True):
        b = int(sorted_buckets[a])
        piece = keyed.take(pa.array(order[a:z]))
        with workfiles.ipc_writer(_piece(task["work"], b, task["index"]), piece.schema) as writer:
            writer.write_table(piece)
        written.append(b)
    return {"rows": len(h29), "buckets": written}


def _winners(task: dict) -> dict:
    """Stage 2 for one bucket (see the module docstring)."""
    work, b = task["work"], task["bucket"]
    table = pa.concat_tables([workfiles.open_ipc(_piece(work, b, i)).read_all() for i in task["pixels"]])
    keys = [
        (c, "ascending", "at_start")
        for c in ("id", "latest", "batch", "pixel", "row")
        if c in table.column_names
    ]
    order = pc.sort_indices(table, sort_keys=keys).to_numpy()
    id_sorted = table["id"].take(pa.array(order))
    new_id = pc.not_equal(id_sorted.slice(1), id_sorted.slice(0, len(id_sorted) - 1))
    starts = np.r_[new_id.to_numpy(zero_copy_only=False), True] if len(order) else np.zeros(0, bool)
    last = np.flatnonzero(starts)
    n = len(order)
    keep = np.zeros(n, dtype=bool)
    keep[order[last]] = True
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    group = np.cumsum(np.r_[True, starts[:-1]]) - 1
    pixel = table["pixel"].to_numpy()
    winner = np.empty(n, dtype=np.int64)
    winner[order] = pixel[order[last]][group]
    row = table["row"].to_numpy()
    by_pixel = np.argsort(pixel, kind="stable")
    cuts = np.flatnonzero(np.r_[True, pixel[by_pixel][1:] != pixel[by_pixel][:-1]]) if n else []
    ends = np.r_[cuts[1:], n] if n else []
    done = []
    for a, z in zip(cuts, ends, strict=True):
        sel = by_pixel[a:z]
        i = int(pixel[sel[0]])
        answer = pa.table({"row": row[sel], "keep": keep[sel], "rank": rank[sel], "winner": winner[sel]})
        with workfiles.ipc_writer(_answer(work, i, b), answer.schema) as writer:
            writer.write_table(answer)
        done.append(i)
    return {"pixels": done}


def _masks(task: dict) -> dict:
    """Stage 3 for one pixel (see the module docstring)."""
    work, i, n = task["work"], task["index"], task["rows"]
    keep = np.zeros(n, dtype=bool)
    rank = np.zeros(n, dtype=np.int64)
    winner = np.full(n, i, dtype=np.int64)
    for b in task["buckets"]:
        answer = workfiles.open_ipc(_answer(work, i, b)).read_all()
        row = answer["row"].to_numpy()
        keep[row] = answer["keep"].to_numpy(zero_copy_only=False)
        rank[row] = answer["rank"].to_numpy()
        winner[row] = answer["winner"].to_numpy()
    h29 = workfiles.read_npz(_hp29(work, i))["h29"][keep]
    keep_file = work / f"keep_{i}.npz"
    workfiles.write_npz(keep_file, keep=keep)
    details = None
    if task["merge"]:
        details = work / f"details_{i}.npz"
        workfiles.write_npz(details, rank=rank, dest=winner)
    return {
        "hist": sparse_histogram(index_to_order(h29, task["mapping_order"])),
        "dropped": int(n - keep.sum()),
        "keep": keep_file,
        "details": details,
        "exports": sorted(set(np.unique(winner).tolist()) - {i}),
    }


__all__ = ["BUCKET_ROWS", "bucket_count", "hash_buckets", "kept_rows"]

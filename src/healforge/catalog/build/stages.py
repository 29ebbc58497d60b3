"""The stages as driver-side steps: import's one pass (sort + histogram), and the map + split of
append (which checks the batch against the catalog first); reduce is shared.

Each step skips the tasks whose outputs already exist in the work directory, so a rerun resumes.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from healforge.catalog.build.tasks import (
    InputSpec,
    index_shard,
    map_file,
    reduce_pixel,
    sort_file,
    split_file,
)
from healforge.engine import Engine
from healforge.errors import BadInputError
from healforge.hats import layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath
from healforge.pixel import index29_range
from healforge.pixel.alignment import Alignment, HistogramSum, generate_alignment


def input_keys(files: list[str]) -> list[str]:
    """Stable task keys of input files."""
    return [f"in{i:05d}" for i in range(len(files))]


def map_stage(eng: Engine, files: list[str], spec: InputSpec, order: int, work: AnyPath) -> dict:
    """Histogram every input at ``order``; returns pixels, counts, rows, bad rows and schemas."""
    return _histogram_pass(eng, map_file, "Mapping", files, spec, order, work / "map", ".npz")


def sort_stage(eng: Engine, files: list[str], spec: InputSpec, order: int, work: AnyPath) -> dict:
    """The one pass of an import over its inputs: every file's rows sorted into a shard under
    ``work/split`` with its histograms (:func:`~healforge.catalog.build.tasks.sort_file`).
    Returns what :func:`map_stage` returns; :func:`slices_of` then finds the destinations' rows."""
    return _histogram_pass(eng, sort_file, "Splitting", files, spec, order, work / "split", ".hist.npz")


def _histogram_pass(eng, task_fn, title, files, spec, order, folder: AnyPath, suffix: str) -> dict:
    keys = input_keys(files)
    workfiles.make_dir(folder)
    schemas_file = folder.parent / "schemas.json"
    schemas = json.loads(schemas_file.read_text()) if schemas_file.exists() else {}
    todo = [
        {"path": f, "key": k, "order": order, "spec": spec, "work": folder, "out": folder / f"{k}{suffix}"}
        for f, k in zip(files, keys, strict=True)
        if not ((folder / f"{k}{suffix}").exists() and f in schemas)
    ]

    def record_schema(i, res):
        schemas[todo[i]["path"]] = res["schema"].serialize().to_pybytes().hex()
        layout.atomic_write_text(schemas_file, json.dumps(schemas))

    eng.map(task_fn, todo, title, labels=[t["path"] for t in todo], on_result=record_schema)
    # one file's histogram at a time: memory bounded by the order, not by the rows
    histos, sizes, n_rows, n_bad = HistogramSum(order), HistogramSum(order), 0, 0
    for k in keys:
        z = workfiles.read_npz(folder / f"{k}{suffix}")
        histos.add(z["pixels"], z["counts"])
        if "bytes" in z:
            sizes.add(z["pixels"], z["bytes"])
        n_rows += int(z["n_rows"])
        n_bad += int(z["n_bad"])
    pixels, counts = histos.result()
    schema_list = [pa.ipc.read_schema(pa.py_buffer(bytes.fromhex(schemas[f]))) for f in files]
    out = {"pixels": pixels, "counts": counts, "rows": n_rows, "bad": n_bad, "schemas": schema_list}
    if spec.measure_bytes:
        out["bytes"] = sizes.at(pixels)
    return out


def slices_of(
    eng: Engine, work: AnyPath, files: list[str], destinations: list[tuple[int, int, int]]
) -> list[list]:
    """Every destination's slices ``(shard, batch, start, length)`` in the shards of
    :func:`sort_stage`, found on the workers (:func:`~healforge.catalog.build.tasks.index_shard`):
    the client gets one entry per (batch, destination) pair, never per row."""
    low, high = index29_range(
        np.array([p for _, p, _ in destinations], dtype=np.int64),
        np.array([o for o, _, _ in destinations], dtype=np.int64),
    )
    shards = [work / "split" / f"{k}.arrow" for k in input_keys(files)]
    found = eng.map(
        index_shard, [{"shard": s, "low": low, "high": high} for s in shards], "Indexing", small=True
    )
    slices: list[list] = [[] for _ in destinations]
    for shard, z in zip(shards, found, strict=True):
        for b, d, s, n in zip(z["batch"], z["dest"], z["start"], z["length"], strict=True):
            slices[int(d)].append((shard, int(b), int(s), int(n)))
    return slices


def common_schema(files: list[str], schemas: list[pa.Schema], required=()) -> pa.Schema:
    """The one schema all inputs share; errors list the differing columns and name the files."""
    first = schemas[0]
    for f, s in zip(files[1:], schemas[1:], strict=True):
        if not s.equals(first):
            raise BadInputError(
                f"input files have different schemas ({files[0]} vs {f}): {schema_diff(first, s)}; "
                "give the types to use with --dtype COL=TYPE or --schema FILE",
                path=f,
            )
    for col in required:
        if col and col not in first.names:
            raise BadInputError(
                f"column {col!r} not found; available columns: {', '.join(first.names)}", path=files[0]
            )
    return first


def schema_diff(a: pa.Schema, b: pa.Schema) -> str:
    """``col: type vs type`` for every column that differs (missing on one side included)."""
    ta = {f.name: str(f.type) for f in a}
    tb = {f.name: str(f.type) for f in b}
    diffs = [
        f"{c}: {ta.get(c, 'missing')} vs {tb.get(c, 'missing')}"
        for c in list(ta) + [c for c in tb if c not in ta]
        if ta.get(c) != tb.get(c)
    ]
    return "; ".join(diffs) or "column order differs"


def split_stage(
    eng: Engine, files: list[str], spec: InputSpec, work: AnyPath, align_file: AnyPath, schema: pa.Schema
) -> tuple[list[list], int]:
    """Split every input into a shard; returns per-destination slices and the rejected-row count."""
    keys = input_keys(files)
    split_dir = work / "split"
    workfiles.make_dir(split_dir)
    todo = [
        {
            "path": f,
            "key": k,
            "spec": spec,
            "work": split_dir,
            "alignment": align_file,
            "schema": schema,
        }
        for f, k in zip(files, keys, strict=True)
        if not (split_dir / f"{k}.index.npz").exists()
    ]
    eng.map(split_file, todo, "Splitting", labels=[t["path"] for t in todo])
    slices: dict[int, list] = {}
    n_rejected = 0
    for k in keys:
        z = workfiles.read_npz(split_dir / f"{k}.index.npz")
        n_rejected += int(z["rejected"])
        shard = split_dir / f"{k}.arrow"
        for b, d, s, n in zip(z["batch"], z["dest"], z["start"], z["length"], strict=True):
            slices.setdefault(int(d), []).append((shard, int(b), int(s), int(n)))
    return [slices.get(i, []) for i in range(max(slices, default=-1) + 1)], n_rejected


def rejected_tables(work: AnyPath, files: list[str]) -> list[pa.Table]:
    """Rows the split stage rejected (quarantine mode)."""
    parts = [work / "split" / f"{k}.rejected.parquet" for k in input_keys(files)]
    return [storage.read_parquet_table(p) for p in parts if p.exists()]


# A reduce stage writing at most this many rows runs in-process when no cluster is up yet (an
# append of a nightly batch): starting a local cluster takes longer than writing them.
SMALL_REDUCE_ROWS = 2_000_000


def reduce_stage(
    eng: Engine,
    destinations: list[tuple[int, int, int]],
    slices: list[list],
    targets: list,
    done_dir: AnyPath,
    sort_columns=(),
    compression: str | None = "zstd:3",
    row_group_rows: int = 1_048_576,
    subtile_order_delta: int | None = None,
) -> None:
    """Write every destination pixel from its slices to its target path (local or URL).

    ``subtile_order_delta`` D: one row group per order K+D sub-pixel of an order-K pixel."""
    workfiles.make_dir(done_dir)
    todo = []
    for i, ((order, pixel, rows), target) in enumerate(zip(destinations, targets, strict=True)):
        done = done_dir / f"{order}_{pixel}.done"
        if done.exists() or rows == 0:
            continue
        todo.append(
            {
                "order": order,
                "pixel": pixel,
                "rows": rows,
                "slices": slices[i] if i < len(slices) else [],
                "sort_columns": list(sort_columns),
                "compression": compression,
                "row_group_rows": row_group_rows,
                "subtile_order_delta": subtile_order_delta,
                "target": target,  # a path object: keeps a URL's storage options
                "done": done,
            }
        )
    todo.sort(key=lambda t: -t["rows"])  # the largest first: no large pixel left for the end
    eng.map(
        reduce_pixel,
        todo,
        "Reducing",
        labels=[f"Norder={t['order']}/Npix={t['pixel']}" for t in todo],
        small=sum(t["rows"] for t in todo) <= SMALL_REDUCE_ROWS,
    )


def alignment_of(mapped: dict, args) -> Alignment:
    """The partitions of an import (``args``: its ImportArguments) from its histogram pass."""
    return generate_alignment(
        mapped["pixels"],
        mapped["counts"],
        args.highest_order,
        args.lowest_order,
        args.max_bytes or args.threshold,
        args.drop_empty_siblings,
        weights=mapped.get("bytes"),
    )

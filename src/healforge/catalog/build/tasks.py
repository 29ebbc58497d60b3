"""Import stage tasks (sort, index, reduce; map and split for appends): plain functions run on
Dask workers.

Each task writes its result under the run's work directory with a temporary name and a rename,
so a task either finished (its output exists) or is redone on resume.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.build.column_types import cast_checked, row_bytes
from healforge.errors import BadInputError
from healforge.hats.layout import atomic_write_parquet, pixel_file
from healforge.io import storage, workfiles
from healforge.io.columns import check_columns
from healforge.io.readers import iter_batches, read_schema
from healforge.pixel import (
    SPATIAL_INDEX_COLUMN,
    bad_coordinate_mask,
    describe_bad_coordinate,
    index_to_order,
    spatial_index,
    wrap_lon,
)
from healforge.pixel.alignment import Alignment, merge_histograms, sparse_histogram


@dataclass(frozen=True)
class InputSpec:
    """How to read the input files of a run."""

    ra: str
    dec: str
    fmt: str | None = None
    batch_rows: int = 1_000_000
    on_bad_rows: str = "error"
    options: dict = field(default_factory=dict)
    columns: tuple[str, ...] | None = None
    dtypes: dict = field(default_factory=dict)
    measure_bytes: bool = False
    storage_options: dict | None = None

    def selected(self, names: list[str], path: str) -> list[str]:
        """Columns of a file to read, in file order: all, or the chosen ones plus ra, dec and an
        existing ``_healpix_29``; a chosen column the file lacks is an error listing what exists."""
        if self.columns is None:
            return list(names)
        wanted = [*self.columns, self.ra, self.dec]
        check_columns(path, names, wanted)
        keep = set(wanted) | {SPATIAL_INDEX_COLUMN}
        return [n for n in names if n in keep]

    def target_schema(self, schema: pa.Schema, path: str) -> pa.Schema:
        """A file's schema as imported: selected columns, ``--dtype`` types, no ``_healpix_29``."""
        names = self.selected(schema.names, path)
        fields = [schema.field(n) for n in names if n != SPATIAL_INDEX_COLUMN]
        return pa.schema(
            [f.with_type(self.dtypes[f.name]) if f.name in self.dtypes else f for f in fields]
        ).with_metadata(None)


def coordinates(table: pa.Table, spec: InputSpec, path: str, first_row: int) -> tuple[np.ndarray, ...]:
    """ra (wrapped to [0, 360)), dec and the bad-row mask of a batch; errors name the first bad row."""
    cols = []
    for name in (spec.ra, spec.dec):
        col = table.column(name)
        if not (
            pa.types.is_floating(col.type) or pa.types.is_integer(col.type) or pa.types.is_null(col.type)
        ):
            raise not_numeric(col, name, path, first_row)
        cols.append(col.cast(pa.float64()).to_numpy(zero_copy_only=False))
    ra, dec = cols
    bad = bad_coordinate_mask(ra, dec)
    if bad.any() and spec.on_bad_rows != "quarantine":
        i = int(np.argmax(bad))
        column, value = describe_bad_coordinate(ra[i], dec[i], spec.ra, spec.dec)
        is_null = table.column(column).is_null()[i].as_py()
        raise BadInputError(
            "bad coordinate (null, NaN, or out of range: ra/lon must be in [-180, 360], dec/lat in "
            "[-90, 90]); fix the input or pass --on-bad-rows quarantine",
            path=path,
            column=column,
            row=first_row + i,
            value="null" if is_null else float(value),
        )
    return wrap_lon(np.where(bad, 0.0, ra)), np.where(bad, 0.0, dec), bad


def not_numeric(col: pa.ChunkedArray, name: str, path: str, first_row: int) -> BadInputError:
    """The error for a coordinate column that is not numeric: its first value that is not a
    number (row and value), else its type."""
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        values = col.to_numpy(zero_copy_only=False)
        for i, v in enumerate(values):
            if v is None:
                continue
            try:
                float(v)
            except ValueError:
                return BadInputError(
                    "coordinate value is not a number", path=path, column=name, row=first_row + i, value=v
                )
    return BadInputError(f"coordinate column has type {col.type}, expected a number", path=path, column=name)


def existing_index(table: pa.Table, path: str, first_row: int) -> np.ndarray | None:
    """The batch's own ``_healpix_29`` values (reused, e.g. on re-import), or ``None``."""
    if SPATIAL_INDEX_COLUMN not in table.column_names:
        return None
    col = table.column(SPATIAL_INDEX_COLUMN)
    if not pa.types.is_integer(col.type):
        raise BadInputError(
            f"column has type {col.type}, expected int64", path=path, column=SPATIAL_INDEX_COLUMN
        )
    if col.null_count:
        i = int(np.argmax(col.is_null().to_numpy(zero_copy_only=False)))
        raise BadInputError("null spatial index", path=path, column=SPATIAL_INDEX_COLUMN, row=first_row + i)
    return col.to_numpy().astype(np.int64, copy=False)


def row_index(table: pa.Table, ra, dec, path: str, first_row: int) -> np.ndarray:
    """``_healpix_29`` of each row: the batch's own column if it has one, else from ra/dec."""
    h29 = existing_index(table, path, first_row)
    return spatial_index(ra, dec) if h29 is None else h29


def _weighted_histogram(pix: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(pix, return_inverse=True)
    return uniq, np.bincount(inverse.reshape(-1), weights=weights, minlength=len(uniq)).astype(np.int64)


def map_file(task: dict) -> dict:
    """Map stage: histogram of one input file at the mapping order (coordinates only).

    With ``spec.measure_bytes`` every imported column is read too, and a second histogram holds
    the estimated bytes of the rows in each pixel (``--max-bytes``).
    """
    spec: InputSpec = task["spec"]
    path, order, out = task["path"], task["order"], task["out"]
    file_schema = read_schema(path, spec.fmt, storage_options=spec.storage_options, **spec.options)
    schema = spec.target_schema(file_schema, path)
    names = spec.selected(file_schema.names, path)
    read = names if spec.measure_bytes else [spec.ra, spec.dec]
    if SPATIAL_INDEX_COLUMN in file_schema.names and SPATIAL_INDEX_COLUMN not in read:
        read = [*read, SPATIAL_INDEX_COLUMN]
    parts, weights, n_rows, n_bad = [], [], 0, 0
    for first, table in iter_batches(
        path, read, spec.batch_rows, spec.fmt, spec.storage_options, **spec.options
    ):
        ra, dec, bad = coordinates(table, spec, path, first)
        good = ~bad
        pix = index_to_order(row_index(table, ra, dec, path, first)[good], order)
        parts.append(sparse_histogram(pix))
        if spec.measure_bytes:
            data = table.select([n for n in table.column_names if n != SPATIAL_INDEX_COLUMN])
            data = cast_checked(data, schema, path, first)
            weights.append(_weighted_histogram(pix, row_bytes(data)[good]))
        n_rows += table.num_rows
        n_bad += int(bad.sum())
    pixels, counts = merge_histograms(parts)
    arrays = {"pixels": pixels, "counts": counts, "n_rows": n_rows, "n_bad": n_bad}
    if spec.measure_bytes:
        arrays["bytes"] = merge_histograms(weights)[1]
    workfiles.write_npz(out, **arrays)
    return {"rows": n_rows, "bad": n_bad, "schema": schema}


def _sorted_batches(spec: InputSpec, path: str, schema: pa.Schema, rejected: list, sizes: list | None = None):
    """Every input batch of ``path`` cast to ``schema``, rows sorted by ``_healpix_29`` (stable)
    and that column first: ``(h29, table)``. Rows with bad coordinates (quarantine mode) go to
    ``rejected`` with their file and row; with ``sizes``, the estimated bytes of the batch's rows
    as read (hats' estimator), in the sorted order, are appended to it."""
    file_names = read_schema(path, spec.fmt, storage_options=spec.storage_options, **spec.options).names
    check_columns(path, file_names, [spec.ra, spec.dec])
    names = spec.selected(file_names, path)
    for first, table in iter_batches(
        path, names, spec.batch_rows, spec.fmt, spec.storage_options, **spec.options
    ):
        ra, dec, bad = coordinates(table, spec, path, first)
        h29 = row_index(table, ra, dec, path, first)
        if SPATIAL_INDEX_COLUMN in table.column_names:
            table = table.drop_columns([SPATIAL_INDEX_COLUMN])
        if table.schema.names != schema.names:
            raise BadInputError("columns changed inside the file", path=path)
        table = cast_checked(table, schema, path, first)
        size = row_bytes(table) if sizes is not None else None
        if bad.any():
            bad_idx = np.flatnonzero(bad)
            rej = table.take(pa.array(bad_idx))
            rej = rej.append_column("_source_file", pa.array([path] * len(bad_idx), pa.string()))
            rejected.append(rej.append_column("_source_row", pa.array(first + bad_idx, pa.int64())))
            good = np.flatnonzero(~bad)
            table, h29 = table.take(pa.array(good)), h29[good]
            size = size[good] if size is not None else None
        if table.num_rows == 0:
            continue
        # sorted by _healpix_29: grouped by destination too, since every destination is one range
        # of _healpix_29 and destinations are numbered in that order; the reduce then merges
        # sorted runs instead of sorting again
        order, h29 = stable_sort(h29)
        if sizes is not None:
            sizes.append(size[order])
        table = table.take(pa.array(order)).add_column(0, SPATIAL_INDEX_COLUMN, pa.array(h29))
        yield h29, table.combine_chunks()


def stable_sort(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stable sorting permutation of ``keys`` and the sorted keys. numpy's default argsort
    (SIMD, several times faster than its stable one) gives it whenever no two keys are equal;
    with ties the stable sort decides, so equal keys keep their input order either way."""
    order = np.argsort(keys)
    ordered = keys[order]
    if len(ordered) > 1 and bool((ordered[1:] == ordered[:-1]).any()):
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
    return order, ordered


def _shard_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([pa.field(SPATIAL_INDEX_COLUMN, pa.int64())] + list(schema)).with_metadata(None)


def _write_rejected(rejected: list, work, key: str) -> int:
    n_rejected = sum(t.num_rows for t in rejected)
    if rejected:
        storage.write_parquet_table(pa.concat_tables(rejected), work / f"{key}.rejected.parquet")
    return n_rejected


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts) if parts else np.empty(0, np.int64)


def split_file(task: dict) -> dict:
    """Split stage: one input file, rows sorted by ``_healpix_29`` into an Arrow IPC shard file.

    Writes ``<key>.arrow`` (one record batch per input batch, ``_healpix_29`` first) and
    ``<key>.index.npz`` (batch, destination, start, length of each destination's run); the index
    file is written last and marks the task as done. Rejected rows (quarantine mode) go to
    ``<key>.rejected.parquet``.
    """
    spec: InputSpec = task["spec"]
    path, work, key = task["path"], task["work"], task["key"]
    alignment = Alignment.from_arrays(workfiles.read_npz(task["alignment"]))
    schema: pa.Schema = task["schema"]
    idx_batch, idx_dest, idx_start, idx_len, rejected = [], [], [], [], []
    with workfiles.ipc_writer(work / f"{key}.arrow", _shard_schema(schema)) as writer:
        for b, (h29, table) in enumerate(_sorted_batches(spec, path, schema, rejected)):
            dest_sorted = alignment.lookup(index_to_order(h29, alignment.mapping_order))
            starts = np.flatnonzero(np.r_[True, dest_sorted[1:] != dest_sorted[:-1]])
            writer.write_batch(table.to_batches(max_chunksize=table.num_rows)[0])
            idx_batch.append(np.full(len(starts), b))
            idx_dest.append(dest_sorted[starts])
            idx_start.append(starts)
            idx_len.append(np.diff(np.r_[starts, len(dest_sorted)]))
    n_rejected = _write_rejected(rejected, work, key)
    workfiles.write_npz(
        work / f"{key}.index.npz",
        batch=_cat(idx_batch),
        dest=_cat(idx_dest),
        start=_cat(idx_start),
        length=_cat(idx_len),
        rejected=n_rejected,
    )
    return {"rejected": n_rejected}


def sort_file(task: dict) -> dict:
    """First and only pass over an input file of an import: its rows sorted by ``_healpix_29``
    into an Arrow IPC shard (``<key>.arrow``, one record batch per input batch) and the file's
    histogram at the mapping order (``<key>.hist.npz``: ``pixels``, ``counts`` and, with
    ``spec.measure_bytes``, ``bytes``), written last: it marks the task as done. Since every
    batch is sorted, a destination's rows in it are one run, found later by :func:`index_shard`.
    """
    spec: InputSpec = task["spec"]
    path, work, key, order = task["path"], task["work"], task["key"], task["order"]
    file_schema = read_schema(path, spec.fmt, storage_options=spec.storage_options, **spec.options)
    schema = spec.target_schema(file_schema, path)
    pix_parts, count_parts, byte_parts, rejected = [], [], [], []
    sizes = [] if spec.measure_bytes else None
    n_rows = 0
    with workfiles.ipc_writer(work / f"{key}.arrow", _shard_schema(schema)) as writer:
        for h29, table in _sorted_batches(spec, path, schema, rejected, sizes):
            pix = index_to_order(h29, order)
            starts = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1]])
            pix_parts.append(pix[starts])
            count_parts.append(np.diff(np.r_[starts, len(pix)]))
            if sizes is not None:
                byte_parts.append(np.add.reduceat(sizes[-1], starts))
            n_rows += table.num_rows
            writer.write_batch(table.to_batches(max_chunksize=table.num_rows)[0])
    n_bad = _write_rejected(rejected, work, key)
    pixels, inverse = np.unique(_cat(pix_parts), return_inverse=True)
    arrays = {
        "pixels": pixels,
        "counts": np.bincount(inverse, weights=_cat(count_parts), minlength=len(pixels)).astype(np.int64),
    }
    if sizes is not None:  # summed per file, then truncated, as the map stage does
        arrays["bytes"] = np.bincount(inverse, weights=_cat(byte_parts), minlength=len(pixels)).astype(
            np.int64
        )
    workfiles.write_npz(work / f"{key}.hist.npz", **arrays, n_rows=n_rows + n_bad, n_bad=n_bad)
    return {"rows": n_rows + n_bad, "bad": n_bad, "schema": schema}


def index_shard(task: dict) -> dict[str, np.ndarray]:
    """Where each destination's rows are in a shard of :func:`sort_file`: ``batch``, ``dest``,
    ``start``, ``length`` of every non-empty run, found by binary search of the destinations'
    ``_healpix_29`` ranges (``low``, ``high``, ascending) in each batch's sorted index column.
    Every row must fall in a destination."""
    low, high = task["low"], task["high"]
    reader = workfiles.open_ipc(task["shard"], fields=[0])  # _healpix_29 alone: remote shards too
    out: dict[str, list] = {"batch": [], "dest": [], "start": [], "length": []}
    for b in range(reader.num_record_batches):
        h29 = reader.get_batch(b).column(0).to_numpy()
        start, end = np.searchsorted(h29, low), np.searchsorted(h29, high)
        found = np.flatnonzero(end > start)
        if int((end - start).sum()) != len(h29):
            raise RuntimeError(f"{task['shard']}: rows outside every partition: did the inputs change?")
        out["batch"].append(np.full(len(found), b))
        out["dest"].append(found)
        out["start"].append(start[found])
        out["length"].append((end - start)[found])
    return {k: _cat(v) for k, v in out.items()}


def reduce_pixel(task: dict) -> dict:
    """Reduce stage: gather one destination pixel's rows from every shard, sort, write atomically."""
    order, pixel, expected = task["order"], task["pixel"], task["rows"]
    pieces = []
    for shard, batch, start, length in task["slices"]:
        reader = workfiles.open_ipc(shard)
        pieces.append(reader.get_batch(int(batch)).slice(int(start), int(length)))
    table = pa.Table.from_batches(pieces)
    if table.num_rows != expected:
        raise RuntimeError(
            f"pixel Norder={order} Npix={pixel}: gathered {table.num_rows} rows, expected {expected}"
        )
    sort_cols = [SPATIAL_INDEX_COLUMN, *task["sort_columns"]]
    if task["sort_columns"]:
        indices = pc.sort_indices(table, sort_keys=[(c, "ascending") for c in sort_cols])
    else:  # slices already sorted by _healpix_29: a stable sort merges the runs
        indices = np.argsort(table[SPATIAL_INDEX_COLUMN].to_numpy(), kind="stable")
    table = table.take(indices)
    target = task.get("target") or pixel_file(task["root"], order, pixel)
    starts = None
    if task.get("subtile_order_delta") is not None:
        starts = subtile_starts(table[SPATIAL_INDEX_COLUMN].to_numpy(), order + task["subtile_order_delta"])
    size = atomic_write_parquet(
        table, target, sort_cols, task["compression"], task["row_group_rows"], row_group_starts=starts
    )
    storage.atomic_write_text(task["done"], f"{table.num_rows}\n")
    return {"rows": table.num_rows, "bytes": size}


def subtile_starts(h29: np.ndarray, order: int) -> np.ndarray:
    """First row of each run of sorted ``_healpix_29`` values sharing one pixel at ``order``."""
    sub = index_to_order(h29, order)
    return np.flatnonzero(np.r_[True, sub[1:] != sub[:-1]]) if len(sub) else np.zeros(1, np.int64)

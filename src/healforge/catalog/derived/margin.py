"""Margin caches: for every partition, the rows of other partitions within a radius of its boundary.

Method. Let ``r`` be the radius and ``M`` the *margin order*, the finest order whose pixels are at
least ``4 r`` across, so that the disk of radius ``r`` around a point always lies inside the point's
order-``M`` pixel and its (up to 8) neighbours. For each source partition ``S``:

1. rows whose order-``M+1`` pixel lies strictly inside ``S`` (not on its order-``M+1`` border,
   found by binary search of the border pixels' ranges) cannot be near another partition and are
   skipped: their order-``M+1`` neighbours all belong to ``S``, so the partition's boundary is at
   least one order-``M+1`` pixel width away, and HEALPix pixels are at least 0.65 of their
   square-root area wide (0.68 measured over all pixels at orders 3, 6 and 9), here
   ``0.65 * 2 r > r``;
2. for the remaining rows, the 9 pixels around the row's order-``M`` pixel ``q`` are intersected
   with the partition list
   (sorted ``_healpix_29`` ranges): each overlapping partition ``D != S`` yields a *cell*, the
   intersection of that pixel with ``D`` (the order-``M`` pixel itself, or ``D`` when ``D`` is
   finer than ``M``);
3. the exact angular distance from the row to each cell boundary is computed
   (:func:`healforge.pixel.geometry.within_radius`); the row belongs to ``D``'s margin when
   the distance to any of ``D``'s cells is below ``r``. Since the row is outside ``D``, this is
   its distance to ``D``'s boundary.

Map tasks (one per source partition) write the selected rows as Arrow shards per destination; reduce
tasks (one per destination) sort them by ``_healpix_29`` into ``Norder=K/Dir=D/Npix=P.parquet``.
As in hats-import, destinations with no margin rows get no file and are left out of
``partition_info.csv``.

Destinations are the partitions and, as in hats-import, the pixels of hats' *negative tree*: the
fewest pixels that cover the sky outside the partitions (:func:`negative_tree_pixels`). lsdb
aligns a crossmatch on the union of the primary's and the margin's pixels, so the rows near an
empty pixel must be in that pixel's margin for a catalog with data there to find them.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass

import numpy as np
import pandas  # noqa: F401  (pyarrow's conversions import it on first use; a task should not pay that)
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (Table.take and sort_by load it lazily, slowly, in each worker)
import pyarrow.parquet as pq

from healforge.arrays import concat_ranges
from healforge.catalog.change.snapshot import CatalogSnapshot
from healforge.catalog.change.transaction import (
    building_dir,
    fresh_scratch,
    swap_into_place,
    write_command_record,
)
from healforge.catalog.derived import members
from healforge.catalog.derived.collection import (
    margin_name,
)
from healforge.catalog.derived.member_command import add_member_command, member_place
from healforge.engine import SMALL_STAGE_ROWS, Engine, iter_chunks
from healforge.errors import CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath, as_path
from healforge.names import check_optional_name
from healforge.options import RunOptions, options_as_keywords
from healforge.pixel import (
    SPATIAL_INDEX_COLUMN,
    SPATIAL_INDEX_ORDER,
    border_cells,
    index29_range,
    index29_shift,
    index_to_order,
    neighbourhood,
)
from healforge.pixel.geometry import ARCSEC_PER_RAD, lonlat_to_xyz, within_radius

WORK_DIR = ".healforge-margin"
MAX_RADIUS_ARCSEC = 3 * 3600.0


@dataclass
class MarginResult:
    """What a margin build produced."""

    path: str
    rows: int
    radius_arcsec: float
    margin_order: int
    pixels: list[tuple[int, int]]
    complete: bool = False  # a rerun found it finished: nothing was written

    def __str__(self) -> str:
        return ("already complete: " if self.complete else "") + (
            f"{self.rows} margin rows within {self.radius_arcsec:g} arcsec in {len(self.pixels)} pixels "
            f"at {self.path}"
        )


def margin_order_for(radius_arcsec: float) -> int:
    """Finest order whose pixels (square root of the area) are at least ``4 * radius`` across."""
    if not 0 < radius_arcsec <= MAX_RADIUS_ARCSEC:
        raise OptionError(f"margin radius must be in (0, {MAX_RADIUS_ARCSEC:g}] arcsec, got {radius_arcsec}")
    size0 = math.sqrt(4 * math.pi / 12) * ARCSEC_PER_RAD
    return int(min(SPATIAL_INDEX_ORDER, max(0, math.floor(math.log2(size0 / (4 * radius_arcsec))))))


@options_as_keywords(run=RunOptions)
def margin(
    catalog: str | os.PathLike,
    output: str | os.PathLike | None,
    radius_arcsec: float,
    name: str | None = None,
    *,
    default: bool = False,
    overwrite: bool = False,
    run: RunOptions,
) -> MarginResult:
    """Build the margin cache of a HATS catalog or collection.

    Parameters
    ----------
    catalog
        Primary catalog directory, or a collection (its primary catalog gets the margin, which
        joins the collection as ``<name>_<R>arcs`` unless ``output`` says otherwise).
    output
        Margin catalog directory to create (optional for a collection).
    radius_arcsec
        Margin threshold: rows of other partitions closer than this to a partition's boundary.
    name
        ``obs_collection`` of the margin (default: the output directory name).
    default
        Make it the collection's default margin (the first margin of a collection always is).
    overwrite
        Replace an existing output.
    run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        How it runs: a :class:`healforge.options.RunOptions` and/or its fields as keywords
        (``engine``, ``workers``, ``scheduler``, ``synchronous``, ``quiet``; ``storage_options``:
        fsspec options of URL paths, catalog and output; ``tmp_dir``: local directory for
        intermediate files, by default inside a local output, else the system temp dir).

    Returns
    -------
    MarginResult
    """
    check_optional_name(name, "margin name")
    primary, coll, output = member_place(catalog, output, run, lambda base: margin_name(base, radius_arcsec))
    args = {"catalog": str(run.path(catalog)), "radius_arcsec": float(radius_arcsec), "name": name}

    def build(target: AnyPath, **common) -> MarginResult:
        return build_margin(primary, target, radius_arcsec, **common)

    def complete(done: dict) -> MarginResult:
        done["pixels"] = [tuple(p) for p in done["pixels"]]
        return MarginResult(**done, complete=True)

    member = members.Member("margin", output, float(radius_arcsec))
    return add_member_command(
        member, primary, coll, args, run, build, complete, overwrite=overwrite, default=default
    )


def build_margin(
    catalog: str | os.PathLike,
    output: str | os.PathLike,
    radius_arcsec: float,
    *,
    name: str | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
    tmp_dir: str | os.PathLike | None = None,
    engine: Engine,
    source: CatalogSnapshot | None = None,
    record: dict | None = None,
) -> MarginResult:
    """Build (or rebuild, with ``overwrite=True``) a margin with an existing engine.

    This is the entry point for pipelines that already hold an :class:`Engine` (import, append,
    compact); :func:`margin` wraps it. The margin is built in a hidden sibling directory and moved
    into place at the end, so an existing margin stays intact and readable until the new one is
    complete (a killed run leaves the old margin and a stale ``.NAME.building-*`` directory, removed
    by the next run). ``source`` gives the catalog's partitions and files when they differ from
    what is on disk (a change about to be committed); by default the catalog as it is. On object
    stores the finished margin is copied into place, its metadata files last. Intermediate files
    go to ``tmp_dir`` (see :func:`margin`). ``record``: the arguments of a ``margin`` command,
    kept in the margin so that a rerun with them answers "already complete".
    """
    catalog = as_path(catalog, storage_options)
    output = as_path(output, storage_options)
    radius = float(radius_arcsec)
    m_order = margin_order_for(radius)
    source = source or CatalogSnapshot.of(catalog)
    props = source.props
    ra, dec = props.get(Key.COL_RA), props.get(Key.COL_DEC)
    if not ra or not dec:
        raise CatalogError(f"{catalog} has no hats_col_ra/hats_col_dec properties; cannot build a margin")
    pixels = source.pixels
    if str(output) == str(catalog):
        raise CatalogError("the margin cannot be written over its primary catalog")
    final, output = output, building_dir(output, overwrite)
    work = fresh_scratch(output, WORK_DIR, tmp_dir)

    table = partition_table(pixels, negative_tree_pixels(pixels))
    if np.any(table["starts"][1:] < table["stops"][:-1]):
        raise CatalogError(f"{catalog}: partitions overlap; cannot build a margin")
    tasks = [
        {
            "catalog": catalog,
            "source": int(i),
            "table": table,
            "ra": ra,
            "dec": dec,
            "radius": radius,
            "margin_order": m_order,
            "work": work,
            "files": source.files[(int(table["orders"][i]), int(table["pixels"][i]))],
        }
        for i in _largest_first(source, table)
    ]
    labels = [f"Norder={o}/Npix={p}" for o, p in zip(table["orders"], table["pixels"], strict=True)]
    small = int(props.get(Key.NROWS, SMALL_STAGE_ROWS)) < SMALL_STAGE_ROWS
    task_labels = [labels[t["source"]] for t in tasks]
    counts = engine.map(_map_partition, tasks, "Margin map", labels=task_labels, small=small)
    per_dest = np.zeros(len(table["orders"]), dtype=np.int64)
    sources: dict[int, list[int]] = {}
    for task, c in zip(tasks, counts, strict=True):
        for d, n in c.items():
            per_dest[d] += n
            sources.setdefault(d, []).append(task["source"])
    dests = np.flatnonzero(per_dest)
    reduce_tasks = [
        {
            "shards": [_shard_path(work, int(d), s) for s in sorted(sources[int(d)])],
            "output": output,
            "dest": int(d),
            "order": int(table["orders"][d]),
            "pixel": int(table["pixels"][d]),
            "rows": int(per_dest[d]),
        }
        for d in dests
    ]
    # destinations in a few groups per worker: most reduce tasks are small, so one task each
    # would cost more in scheduling than in work
    size = max(1, math.ceil(len(reduce_tasks) / (4 * engine.parallelism)))
    groups = list(iter_chunks(reduce_tasks, size))
    engine.map(
        _reduce_group,
        groups,
        "Margin reduce",
        labels=[", ".join(labels[t["dest"]] for t in g) for g in groups],
        small=small,
    )

    out_pixels = [(int(table["orders"][d]), int(table["pixels"][d])) for d in dests]
    total = _finish(output, source, out_pixels, int(per_dest.sum()), radius, name or final.name)
    storage.rmtree(work)
    result = MarginResult(str(final), total, radius, m_order, out_pixels)
    if record is not None:
        fields = {k: v for k, v in asdict(result).items() if k != "complete"}
        write_command_record(output, "margin", record, fields)
    swap_into_place(output, final)
    return result


def partition_table(
    pixels: list[tuple[int, int]], empty: list[tuple[int, int]] = ()
) -> dict[str, np.ndarray]:
    """Partitions (and ``empty`` pixels, destinations only) sorted by their ``_healpix_29`` range:
    ``orders``, ``pixels``, ``starts``, ``stops``, and ``primary`` (True for a partition)."""
    both = [*pixels, *empty]
    orders = np.array([o for o, _ in both], dtype=np.int64)
    npix = np.array([p for _, p in both], dtype=np.int64)
    starts, stops = index29_range(npix, orders)
    order_idx = np.argsort(starts, kind="stable")
    return {
        "orders": orders[order_idx],
        "pixels": npix[order_idx],
        "starts": starts[order_idx],
        "stops": stops[order_idx],
        "primary": (np.arange(len(both)) < len(pixels))[order_idx],
    }


def negative_tree_pixels(pixels: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """hats' negative tree: the fewest nested pixels covering the sky outside ``pixels``, sorted
    by position (what ``hats.Catalog.generate_negative_tree_pixels`` returns, in another order).

    Each gap between the sorted partitions is cut into maximal aligned cells, coarsest first:
    at each order the cells inside the gap that the previous order's cells do not cover."""
    table = partition_table(pixels)
    full = np.int64(12) << np.int64(2 * SPATIAL_INDEX_ORDER)
    a = np.r_[np.int64(0), table["stops"]]
    b = np.r_[table["starts"], full]
    gap = b > a
    a, b = a[gap], b[gap]
    max_order = int(table["orders"].max()) if len(pixels) else 0
    found_o, found_p = [], []
    prev_lo = prev_hi = None
    for k in range(max_order + 1):
        shift = np.int64(index29_shift(k))
        lo, hi = -((-a) >> shift), b >> shift  # whole order-k cells inside [a, b)
        hi = np.maximum(hi, lo)
        if prev_lo is None:
            c_lo = c_hi = lo
        else:
            c_lo, c_hi = prev_lo * 4, prev_hi * 4
            none = c_hi <= c_lo
            c_lo, c_hi = np.where(none, lo, c_lo), np.where(none, lo, c_hi)
        for s, e in ((lo, c_lo), (c_hi, hi)):
            cells = concat_ranges(s, np.maximum(e - s, 0))
            found_o.append(np.full(len(cells), k, dtype=np.int64))
            found_p.append(cells)
        prev_lo, prev_hi = lo, hi
    orders, npix = np.concatenate(found_o), np.concatenate(found_p)
    by_start = np.argsort(index29_range(npix, orders)[0])
    return [(int(o), int(p)) for o, p in zip(orders[by_start], npix[by_start], strict=True)]


def pixel_data_files(root: str | AnyPath, order: int, pixel: int) -> list[AnyPath]:
    """Data files of one pixel: ``Npix=P.parquet``, or the parquet files of directory ``Npix=P/``."""
    single = layout.pixel_file(root, order, pixel)
    if single.is_file():
        return [single]
    directory = layout.pixel_file(root, order, pixel, "/")
    files = sorted(directory.glob("*.parquet"), key=str) if directory.is_dir() else []
    if not files:
        raise CatalogError(f"no data file for pixel Norder={order}/Npix={pixel} in {root}")
    return files


def read_pixel(root: str | AnyPath, order: int, pixel: int, columns: list[str] | None = None) -> pa.Table:
    """All rows of one pixel (all its files, in file-name order)."""
    tables = [storage.parquet_file(f).read(columns=columns) for f in pixel_data_files(root, order, pixel)]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


_EVEN_BITS = 0x5555555555555555


def _on_border(hp29: np.ndarray, m_order: int, order: int, pixel: int) -> np.ndarray:
    """Which rows (``_healpix_29`` inside pixel ``(order, pixel)``) have an order-``m_order`` pixel
    on the border of that pixel: their face coordinate x or y, at ``m_order``, is 0 or maximal.

    In a nested index x sits in the even bits and y in the odd bits, so only the bits between
    the index shifts of ``m_order`` and ``order`` matter."""
    low, high = index29_shift(m_order), index29_shift(order)
    if high <= low:
        return np.ones(len(hp29), dtype=bool)
    span = ((1 << high) - 1) ^ ((1 << low) - 1)
    mx, my = np.int64(span & _EVEN_BITS), np.int64(span & (_EVEN_BITS << 1))
    local = hp29 & np.int64((1 << high) - 1)
    x, y = local & mx, local & my
    return (x == 0) | (x == mx) | (y == 0) | (y == my)


def _border_rows(hp29: np.ndarray, m_order: int, order: int, pixel: int) -> np.ndarray:
    """Rows (of ``hp29`` inside pixel ``(order, pixel)``) whose order-``m_order`` pixel is on the
    border of that pixel: found by binary search of the border cells' ranges when the rows are
    sorted (a single data file), else by testing every row."""
    cells = border_cells(order, pixel, m_order)
    if cells.size > hp29.size or np.any(hp29[1:] < hp29[:-1]):
        return np.flatnonzero(_on_border(hp29, m_order, order, pixel))
    start, stop = index29_range(cells, m_order)
    lo, hi = np.searchsorted(hp29, start), np.searchsorted(hp29, stop)
    return concat_ranges(lo, hi - lo)


def margin_candidates(
    hp29: np.ndarray, source: int, table: dict, m_order: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of partition ``source`` that may be near other partitions, with the cells to test.

    Returns ``(row, dest, cell_order, cell_pixel)`` arrays, one entry per (row, cell) pair.
    """
    empty = np.empty(0, dtype=np.int64)
    s_order, s_pixel = int(table["orders"][source]), int(table["pixels"][source])
    if m_order >= s_order:
        # the border band one order finer than the margin order is wide enough (module docstring)
        rows = _border_rows(hp29, min(m_order + 1, SPATIAL_INDEX_ORDER), s_order, s_pixel)
    else:  # the margin order is coarser than the partition: every row is a candidate
        rows = np.arange(len(hp29))
    q = index_to_order(hp29[rows], m_order)
    if len(rows) == 0:
        return empty, empty, empty, empty
    uq, inv = np.unique(q, return_inverse=True)
    nb = neighbourhood(uq, m_order)  # (n, 9), includes uq itself
    u_idx = np.repeat(np.arange(len(uq)), nb.shape[1])
    cells = nb.ravel()
    keep = cells >= 0
    u_idx, cells = u_idx[keep], cells[keep]
    start, stop = index29_range(cells, m_order)
    lo = np.searchsorted(table["stops"], start, side="right")
    hi = np.searchsorted(table["starts"], stop, side="left")
    n_over = np.maximum(hi - lo, 0)
    rep = np.repeat(np.arange(len(cells)), n_over)
    first = np.cumsum(n_over) - n_over
    dest = lo[rep] + (np.arange(len(rep)) - first[rep])
    u_idx, cells = u_idx[rep], cells[rep]
    other = dest != source
    u_idx, cells, dest = u_idx[other], cells[other], dest[other]
    d_order = table["orders"][dest]
    finer = d_order > m_order
    cell_order = np.where(finer, d_order, m_order)
    cell_pixel = np.where(finer, table["pixels"][dest], cells)
    # (unique q, cell) pairs -> (row, cell) pairs
    by_u = np.argsort(u_idx, kind="stable")
    u_idx, dest, cell_order, cell_pixel = u_idx[by_u], dest[by_u], cell_order[by_u], cell_pixel[by_u]
    per_u = np.bincount(u_idx, minlength=len(uq))
    u_first = np.cumsum(per_u) - per_u
    n_pairs = per_u[inv]
    pair_row = np.repeat(rows, n_pairs)
    pair_first = np.cumsum(n_pairs) - n_pairs
    pair_k = u_first[np.repeat(inv, n_pairs)] + (np.arange(len(pair_row)) - np.repeat(pair_first, n_pairs))
    return pair_row, dest[pair_k], cell_order[pair_k], cell_pixel[pair_k]


def select_margin_rows(
    ra: np.ndarray, dec: np.ndarray, hp29: np.ndarray, source: int, table: dict, radius: float, m_order: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(row, dest)`` pairs: row of partition ``source`` within ``radius`` of partition ``dest``."""
    row, dest, c_order, c_pixel = margin_candidates(hp29, source, table, m_order)
    if len(row) == 0:
        return row, dest
    # rows come grouped (each with its cells): unit vectors once per row
    new_row = np.r_[True, row[1:] != row[:-1]]
    xyz = lonlat_to_xyz(ra[row[new_row]], dec[row[new_row]])[np.cumsum(new_row) - 1]
    near = within_radius(xyz, c_order, c_pixel, radius)
    key = np.unique(dest[near] * np.int64(len(hp29)) + row[near])
    return key % len(hp29), key // len(hp29)


def _shard_path(work: AnyPath, dest: int, source: int) -> AnyPath:
    return work / "shards" / f"{dest}" / f"{source}.arrow"


def _map_partition(task: dict) -> dict[int, int]:
    table, source = task["table"], task["source"]
    order, pixel = int(table["orders"][source]), int(table["pixels"][source])
    # one read of the whole partition: nearly every partition has some margin rows
    files = task["files"]
    if not files:
        raise CatalogError(f"no data file for pixel Norder={order}/Npix={pixel} in {task['catalog']}")
    full = _read_files(files)
    ra = np.asarray(full.column(task["ra"]).to_numpy(), dtype=np.float64)
    dec = np.asarray(full.column(task["dec"]).to_numpy(), dtype=np.float64)
    hp29 = np.asarray(full.column(SPATIAL_INDEX_COLUMN).to_numpy(), dtype=np.int64)
    rows, dests = select_margin_rows(ra, dec, hp29, source, table, task["radius"], task["margin_order"])
    if len(rows) == 0:
        return {}
    # one take for all destinations (each take walks every chunk of every column), then slices
    # (select_margin_rows returns the pairs sorted by destination)
    picked = full.take(pa.array(rows))
    uniq, first, n = np.unique(dests, return_index=True, return_counts=True)
    counts = {}
    for d, a, k in zip(uniq.tolist(), first.tolist(), n.tolist(), strict=True):
        part = picked.slice(a, k)
        with workfiles.ipc_writer(_shard_path(task["work"], d, source), part.schema) as writer:
            writer.write_table(part)
        counts[d] = k
    return counts


def _read_files(files: list) -> pa.Table:
    tables = [storage.read_parquet_table(f) for f in files]
    return pa.concat_tables(tables) if len(tables) > 1 else tables[0]


def _largest_first(source: CatalogSnapshot, table: dict) -> list[int]:
    """Source partitions (not the empty pixels) ordered by data size, largest first, so that the
    last tasks to run are short ones (the workers finish together)."""
    rows = np.flatnonzero(table["primary"]).tolist()
    sizes = {i: source.size_of((int(table["orders"][i]), int(table["pixels"][i]))) for i in rows}
    return sorted(rows, key=lambda i: -sizes[i])


def _reduce_group(tasks: list[dict]) -> list[int]:
    return [_reduce_partition(t) for t in tasks]


def _reduce_partition(task: dict) -> int:
    tables = [workfiles.open_ipc(path).read_all() for path in task["shards"]]
    data = pa.concat_tables(tables).sort_by(SPATIAL_INDEX_COLUMN)
    if len(data) != task["rows"]:
        raise RuntimeError(f"margin shards hold {len(data)} rows, expected {task['rows']}")
    layout.atomic_write_parquet(data, layout.pixel_file(task["output"], task["order"], task["pixel"]))
    return len(data)


def _finish(
    output: AnyPath,
    source: CatalogSnapshot,
    pixels: list[tuple[int, int]],
    expected_rows: int,
    radius: float,
    name: str,
) -> int:
    catalog, props = source.root, source.props

    layout.write_partition_info(output, pixels)
    if pixels:
        total = layout.write_dataset_metadata(output)
    else:
        schema = storage.read_parquet_schema(source.schema_file)
        for leaf in (layout.COMMON_METADATA_FILE, layout.METADATA_FILE):
            with storage.atomic_output(output / layout.DATASET_DIR / leaf) as tmp:
                pq.write_metadata(schema, tmp)
        total = 0
    if total != expected_rows:
        raise RuntimeError(f"margin metadata counts {total} rows, expected {expected_rows}")
    primary_order = max((o for o, _ in source.pixels), default=0)
    layout.write_properties(
        output,
        obs_collection=name,
        dataproduct_type="margin",
        **{
            **layout.partition_properties(pixels, total, empty_order=primary_order),
            Key.COL_RA: props[Key.COL_RA],
            Key.COL_DEC: props[Key.COL_DEC],
            Key.PRIMARY_TABLE_URL: catalog.name,
            Key.MARGIN_THRESHOLD: radius,
            Key.NPIX_SUFFIX: ".parquet",
        },
    )
    return total


__all__ = [
    "MarginResult",
    "build_margin",
    "margin",
    "margin_order_for",
    "negative_tree_pixels",
    "pixel_data_files",
    "read_pixel",
    "swap_into_place",
]

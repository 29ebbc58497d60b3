"""``compact``: merge each pixel's files, de-duplicate, split pixels over the threshold.

Run periodically on a catalog that grows by appends. The result has one file per pixel
(``Npix=P/compacted.parquet``), rows unique on the chosen id (keeping the latest row), no pixel
above the threshold (unless a single pixel at the mapping order holds more), and fresh metadata,
skymaps and margins. The change is a transaction like an append.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog import format as fmt
from healforge.catalog import transaction as txn
from healforge.catalog.alignment import generate_alignment, sparse_histogram
from healforge.catalog.append import _carry_properties, _rebuild_margins
from healforge.catalog.format import read_histogram
from healforge.engine import Engine, owned_engine
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.healpix import SPATIAL_INDEX_COLUMN
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path

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

    def __str__(self) -> str:
        return (
            f"compacted {self.path}: {self.files_before} files in {self.pixels_before} pixels -> "
            f"{self.pixels_after} pixels, {self.rows_before} -> {self.rows_after} rows "
            f"({self.rows_before - self.rows_after} duplicates removed)"
        )


def pixel_files(root: AnyPath, order: int, pixel: int) -> list[AnyPath]:
    """Data files of a pixel, oldest first (by modification time, then name; object stores
    keep modification times to the second, so same-second batches go by name)."""
    single = fmt.pixel_file(root, order, pixel, ".parquet")
    if single.is_file():
        return [single]
    folder = fmt.pixel_file(root, order, pixel, "/")
    files = [p for p in folder.glob("*.parquet") if p.is_file()]
    return sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))


def _read_keys(task: dict) -> dict:
    cols = [c for c in (task["id"], task["latest"]) if c]
    parts = [storage.read_parquet_table(f, columns=cols) for f in task["files"]]
    return {"table": pa.concat_tables(parts) if parts else None}


def _winners(tables: list[pa.Table], id_col: str, latest: str | None) -> list[np.ndarray]:
    """Keep-mask per table: one row per id, the one with the greatest ``latest`` (later rows win ties)."""
    sizes = [t.num_rows for t in tables]
    ids = pa.chunked_array([t[id_col] for t in tables])
    if ids.null_count:
        raise BadInputError(
            f"the id column has {ids.null_count} null value(s); cannot de-duplicate", column=id_col
        )
    codes = pc.dictionary_encode(ids).combine_chunks().indices
    columns = {"code": codes}
    keys = [("code", "ascending", "at_start")]
    if latest:
        columns["latest"] = pa.chunked_array([t[latest] for t in tables]).combine_chunks()
        keys.append(("latest", "ascending", "at_start"))
    columns["seq"] = pa.array(np.arange(sum(sizes), dtype=np.int64))
    keys.append(("seq", "ascending", "at_start"))
    order = pc.sort_indices(pa.table(columns), sort_keys=keys).to_numpy()
    code_sorted = codes.to_numpy(zero_copy_only=False)[order]
    last = np.flatnonzero(np.r_[code_sorted[1:] != code_sorted[:-1], True])
    keep = np.zeros(sum(sizes), dtype=bool)
    keep[order[last]] = True
    return np.split(keep, np.cumsum(sizes)[:-1])


def _compact_pixel(task: dict) -> dict:
    order, pixel = task["order"], task["pixel"]
    table = pa.concat_tables([storage.read_parquet_table(f) for f in task["files"]])
    table = table.replace_schema_metadata(None)
    if task.get("keep") is not None:
        table = table.filter(pa.array(np.load(task["keep"])))
    sort_cols = [SPATIAL_INDEX_COLUMN, *task["sort_columns"]]
    table = table.take(pc.sort_indices(table, sort_keys=[(c, "ascending") for c in sort_cols]))
    h29 = table[SPATIAL_INDEX_COLUMN].to_numpy()
    mapping, threshold = task["mapping_order"], task["threshold"]
    if table.num_rows > threshold and order < mapping:
        pix, cnt = sparse_histogram(h29 >> (2 * (29 - mapping)))
        alignment = generate_alignment(pix, cnt, mapping, order, threshold, True, use_lower_order=False)
        dests = alignment.destinations()
    else:
        dests = [(order, pixel, table.num_rows)]
    written = []
    start = 0
    for d_order, d_pixel, rows in dests:
        part = table.slice(start, rows)
        start += rows
        rel = fmt.pixel_file(Path(), d_order, d_pixel, "/") / COMPACTED_NAME
        name = f"{d_order}_{d_pixel}.parquet"
        fmt.atomic_write_parquet(part, task["staging"] / name, sort_cols, task["compression"])
        written.append((d_order, d_pixel, rows, [name, str(rel)]))
    sky = task["skymap_order"]
    return {"written": written, "histogram": sparse_histogram(h29 >> (2 * (29 - sky)))}


def compact(
    catalog: str | os.PathLike,
    dedupe_on: str | None = None,
    keep_latest_by: str | None = None,
    threshold: int | None = None,
    *,
    compression: str | None = "zstd:3",
    margin: str | os.PathLike | None = None,
    storage_options: dict | None = None,
    tmp_dir: str | os.PathLike | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
) -> CompactResult:
    """Compact a catalog in place.

    Parameters
    ----------
    catalog
        The catalog directory.
    dedupe_on
        Id column: keep one row per value.
    keep_latest_by
        Column whose greatest value marks the row to keep (ties: the most recently appended row).
    threshold
        Maximum rows per pixel (default: the catalog's ``hats_max_rows``).
    compression, margin, storage_options, tmp_dir, engine, workers, scheduler, synchronous, quiet
        As for :func:`healforge.append`.
    """
    root = fmt.require_catalog(as_path(catalog, storage_options))
    if keep_latest_by and not dedupe_on:
        raise OptionError("keep_latest_by needs dedupe_on")
    if threshold is not None and threshold < 1:
        raise OptionError(f"threshold must be a positive number of rows, got {threshold}")
    with txn.CatalogLock(root, "compact"):
        work = txn.begin(root, tmp_dir)
        props = fmt.read_properties(root)
        pixels = fmt.read_partition_info(root)
        names = storage.read_parquet_schema(root / fmt.DATASET_DIR / "_common_metadata").names
        for col in (dedupe_on, keep_latest_by):
            if col and col not in names:
                raise BadInputError(
                    f"column {col!r} not found; available columns: {', '.join(names)}", column=col
                )
        histogram = read_histogram(root)
        skymap_order = int(np.log2(len(histogram) // 12) // 2)
        mapping_order = max(skymap_order, max(o for o, _ in pixels))
        threshold = int(threshold or props.get("hats_max_rows", 1_000_000))
        files = [pixel_files(root, o, p) for o, p in pixels]
        rows_before = int(props["hats_nrows"])
        sort_columns = [c for c in props.get("hats_cols_sort", "").split(",") if c]

        with owned_engine(engine, workers, scheduler, synchronous, quiet) as eng:
            keep_files: list[str | None] = [None] * len(pixels)
            if dedupe_on:
                keys = eng.map(
                    _read_keys,
                    [{"files": fs, "id": dedupe_on, "latest": keep_latest_by} for fs in files],
                    "Reading ids",
                    labels=[f"Norder={o}/Npix={p}" for o, p in pixels],
                )
                masks = _winners([k["table"] for k in keys], dedupe_on, keep_latest_by)
                for i, mask in enumerate(masks):
                    keep_files[i] = str(work / f"keep_{i}.npy")
                    np.save(keep_files[i], mask)
            results = eng.map(
                _compact_pixel,
                [
                    {
                        "order": o,
                        "pixel": p,
                        "files": fs,
                        "keep": keep_files[i],
                        "sort_columns": sort_columns,
                        "mapping_order": mapping_order,
                        "skymap_order": skymap_order,
                        "threshold": threshold,
                        "staging": txn.staging_dir(root),
                        "compression": compression,
                    }
                    for i, ((o, p), fs) in enumerate(zip(pixels, files, strict=True))
                ],
                "Compacting",
                labels=[f"Norder={o}/Npix={p}" for o, p in pixels],
            )

        written = [w for r in results for w in r["written"] if w[2] > 0]
        new_hist = np.zeros_like(histogram)
        for r in results:
            pix, cnt = r["histogram"]
            np.add.at(new_hist, pix, cnt)
        txn.save_array(txn.txn_dir(root) / "point_map.npy", new_hist)
        rows_after = sum(w[2] for w in written)
        new_pixels = [(o, p) for o, p, _, _ in written]
        if not new_pixels:
            raise CatalogError("compaction would leave an empty catalog")

        sky = fmt.sky_fraction(new_pixels)
        properties = _carry_properties(props)
        properties.update(
            {
                "hats_nrows": rows_after,
                "hats_npix_suffix": "/",
                "hats_order": max(o for o, _ in new_pixels),
                "hats_max_rows": threshold,
                "moc_sky_fraction": f"{sky:0.5f}",
            }
        )
        retire = []
        for o, p in pixels:
            single = fmt.pixel_file(root, o, p, ".parquet")
            path = single if single.is_file() else fmt.pixel_file(root, o, p, "/")
            retire.append(str(path.relative_to(root)))
        manifest = {
            "kind": "compact",
            "retire": retire,
            "move": [move for _, _, _, move in written],
            "pixels": [list(p) for p in new_pixels],
            "properties": properties,
        }
        txn.commit(root, manifest)
        shutil.rmtree(work, ignore_errors=True)
        _rebuild_margins(
            root,
            margin,
            storage_options=storage_options,
            tmp_dir=tmp_dir,
            engine=engine,
            workers=workers,
            scheduler=scheduler,
            synchronous=synchronous,
            quiet=quiet,
        )
    return CompactResult(
        str(root), rows_before, rows_after, sum(len(f) for f in files), len(pixels), len(new_pixels)
    )

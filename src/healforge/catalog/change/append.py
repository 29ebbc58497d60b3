"""``append``: add a batch of rows to an existing catalog, keeping its partitioning.

Rows falling in an existing partition become a new file ``Npix=P/<batch>.parquet`` in that
pixel's directory; rows outside the coverage get new partitions by the drop-empty-siblings rule.
The change is a transaction (see :mod:`healforge.catalog.change.transaction`).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from healforge.catalog.build.stages import map_stage, reduce_stage, rejected_tables, split_stage
from healforge.catalog.build.tasks import InputSpec
from healforge.catalog.change import transaction as txn
from healforge.catalog.change.casting import check_schema
from healforge.catalog.change.delete import convert_nested_layout
from healforge.catalog.change.writer import (
    carry_properties,
    catalog_schema,
    changing,
    commit_change,
    write_beside,
)
from healforge.catalog.check.unseen import check_pixel_dirs
from healforge.catalog.derived.collection import resolve_catalog
from healforge.hats import Key, layout
from healforge.hats.layout import read_histogram
from healforge.io import storage, workfiles
from healforge.io.readers import expand_inputs
from healforge.io.storage import AnyPath
from healforge.names import check_optional_name
from healforge.options import ChangeOptions, RunOptions, options_as_keywords
from healforge.pixel.alignment import coarsen_histogram, dense_histogram, incremental_alignment


@dataclass
class AppendResult:
    """What an append did."""

    path: str
    label: str
    rows: int
    rejected: int
    touched_pixels: int
    new_pixels: list[tuple[int, int]]
    total_rows: int
    skipped: bool = False
    rejected_path: str | None = None
    converted: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        if self.skipped:
            return f"batch {self.label!r} was already appended to {self.path}; nothing to do"
        text = (
            f"appended {self.rows} rows as batch {self.label!r}: {self.touched_pixels} existing pixels "
            f"got a new file, {len(self.new_pixels)} new pixels; catalog now {self.total_rows} rows"
        )
        if self.rejected:
            text += f"; {self.rejected} rejected rows in {self.rejected_path}"
        from healforge.catalog.derived.nested_columns import with_conversion_note

        return with_conversion_note(text, self.converted)


def batch_key(files: list[str], label: str | None) -> str:
    h = hashlib.sha256()
    for f in files:
        try:
            st = os.stat(f)
            h.update(f"{os.path.abspath(f)}|{st.st_size}|{st.st_mtime_ns}".encode())
        except OSError:
            h.update(f.encode())
    h.update(str(label).encode())
    return h.hexdigest()[:24]


@options_as_keywords(change=ChangeOptions, run=RunOptions)
def append(
    catalog: str | os.PathLike,
    inputs: list[str] | str,
    batch: str | None = None,
    *,
    change: ChangeOptions,
    run: RunOptions,
    input_format: str | None = None,
    reader_options: dict | None = None,
    on_bad_rows: str = "error",
    cast: str = "safe",
    batch_rows: int = 500_000,
) -> AppendResult:
    """Append input tables to an existing catalog.

    Parameters
    ----------
    catalog
        HATS catalog made by healforge (or any catalog with ``point_map.fits``), or a collection
        (its primary catalog is appended to).
    inputs
        Files, directories or globs with the catalog's columns and types.
    batch
        Label of the batch; its files are named ``<batch>.parquet`` (default: UTC timestamp).
        It must be one safe path component (:data:`healforge.names.NAME_RULE`), else nothing
        is written.
        Appending the same files with the same label twice is detected and skipped.
    cast
        ``"safe"`` (default): a column of another type that keeps every value when cast to the
        catalog's type (float32 for float64, large_string for string...) is cast; ``"none"``:
        any type difference is refused.
    on_bad_rows, input_format, reader_options, batch_rows
        As for :func:`healforge.import_catalog`.
    change, compression, margin
        What every change shares: a :class:`healforge.options.ChangeOptions` and/or its fields
        as keywords (``compression`` of the new files, a ``margin`` to rebuild besides the
        recorded members).
    run, engine, workers, scheduler, synchronous, quiet, storage_options, tmp_dir
        How it runs: a :class:`healforge.options.RunOptions` and/or its fields as keywords
        (``engine``, ``workers``, ``scheduler``, ``synchronous``, ``quiet``, ``storage_options``:
        fsspec options of a URL catalog and margin, ``tmp_dir``: local directory for
        intermediate files).

    Raises
    ------
    BadInputError
        When the inputs' schema differs from the catalog's (the message lists the columns).
    CatalogError
        When another writer holds the catalog.
    OptionError
        When ``batch`` is not one safe path component (:func:`healforge.names.check_name`).
    """
    check_optional_name(batch, "batch label")
    root = layout.require_catalog(resolve_catalog(run.path(catalog)))
    files = expand_inputs([inputs] if isinstance(inputs, str | os.PathLike) else inputs, run.storage_options)
    # list<struct> nested columns of an older catalog are first rewritten packed (one transaction)
    converted = convert_nested_layout(root, change=change, run=run)
    if converted:  # the conversion committed a new version: work on it
        root = layout.require_catalog(resolve_catalog(root))
    with changing(root, "append", run) as work:
        label = batch or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        batch_id = batch_key(files, batch)
        if batch_id in txn.applied_batches(root):
            storage.rmtree(txn.txn_dir(root))
            total = int(layout.read_properties(root)[Key.NROWS])
            return AppendResult(str(root), label, 0, 0, 0, [], total, skipped=True, converted=converted)
        reading = {"input_format": input_format, "reader_options": reader_options}
        reading |= {"on_bad_rows": on_bad_rows, "batch_rows": batch_rows}
        result = stage_and_commit(
            root,
            work,
            files,
            label,
            batch_id,
            reading=reading,
            cast=cast,
            change=change,
            run=run,
        )
    result.converted = converted
    return result


def stage_and_commit(
    root: AnyPath,
    work: Path,
    files: list[str],
    label: str,
    batch_id: str,
    *,
    run: RunOptions,
    kind: str = "append",
    state: dict | None = None,
    reading: dict | None = None,
    cast: str = "safe",
    change: ChangeOptions | None = None,
) -> AppendResult:
    """Add prepared input files to a catalog as one transaction (the caller is inside
    :func:`healforge.catalog.change.writer.changing`, which gave ``work``).

    Rows in covered pixels become ``Npix=P/<label>.parquet``, rows outside get new pixels by the
    alignment rule. Every member of the catalog (its collection's margins and indexes, or those
    recorded beside it, and ``change.margin``) is rebuilt from the catalog-to-be into the staging area
    (:func:`healforge.catalog.change.writer.stage_members`), and the manifest commit swaps in the rows
    and the members together. ``state`` holds extra ``.healforge/<name>`` JSON files written by
    the commit; ``reading``: how the inputs are read (``input_format``, ``reader_options``,
    ``on_bad_rows``, ``batch_rows`` as for :func:`append`). Shared by :func:`append` and
    :func:`healforge.increment`.
    """
    change = change or ChangeOptions()
    reading = {
        "input_format": None,
        "reader_options": None,
        "on_bad_rows": "error",
        "batch_rows": 500_000,
    } | (reading or {})
    check_pixel_dirs(root, kind)
    props = layout.read_properties(root)
    existing = layout.read_partition_info(root)
    ra, dec = props[Key.COL_RA], props[Key.COL_DEC]
    histogram = read_histogram(root)
    skymap_order = int(np.log2(len(histogram) // 12) // 2)
    mapping_order = max(skymap_order, max(o for o, _ in existing))
    threshold = int(props.get(Key.MAX_ROWS, 1_000_000))
    spec = InputSpec(
        ra,
        dec,
        reading["input_format"],
        reading["batch_rows"],
        reading["on_bad_rows"],
        dict(reading["reader_options"] or {}),
        storage_options=run.storage_options,
    )

    with run.engine_scope() as eng:
        mapped = map_stage(eng, files, spec, mapping_order, work)
        schema = catalog_schema(root)
        for f, s in zip(files, mapped["schemas"], strict=True):
            check_schema(s, schema, cast, f)
        alignment = incremental_alignment(
            mapped["pixels"], mapped["counts"], existing, mapping_order, 0, threshold
        )
        align_file = work / "alignment.npz"
        workfiles.write_npz(align_file, **alignment.arrays())
        destinations = alignment.destinations()
        slices, n_rejected = split_stage(eng, files, spec, work, align_file, schema)
        label = _free_label(root, label, destinations)
        rels = [layout.pixel_file(Path(), o, p, "/") / f"{label}.parquet" for o, p, _ in destinations]
        staged = [f"{o}_{p}.parquet" for o, p, _ in destinations]
        targets = [txn.staging_dir(root) / name for name in staged]
        reduce_stage(eng, destinations, slices, targets, work / "reduce", (), change.compression)

        new_rows = sum(r for _, _, r in destinations)
        existing_set = set(existing)
        new_pixels = [(o, p) for o, p, _ in destinations if (o, p) not in existing_set]
        all_pixels = existing + new_pixels
        new_hist = dense_histogram(
            *coarsen_histogram(mapped["pixels"], mapped["counts"], mapping_order - skymap_order), skymap_order
        )
        txn.save_array(txn.txn_dir(root) / "point_map.npy", histogram + new_hist)
        rejected_path = None
        if n_rejected:
            rejected_path = write_beside(root, f"{label}.rejected.parquet", rejected_tables(work, files))

        properties = carry_properties(props)
        properties.update(
            {
                **layout.partition_properties(all_pixels, int(props[Key.NROWS]) + new_rows),
                Key.NPIX_SUFFIX: "/",
                Key.SKYMAP_ORDER: skymap_order,
            }
        )
        manifest = {
            "kind": kind,
            "batch_id": batch_id,
            "label": label,
            "convert": [list(p) for p in existing] if props.get(Key.NPIX_SUFFIX, ".parquet") != "/" else [],
            "move": [[name, str(rel)] for name, rel in zip(staged, rels, strict=True)],
            "pixels": [list(p) for p in all_pixels],
            "properties": properties,
            "state": state or {},
        }
        # margins and indexes rebuilt from the catalog-to-be, swapped in by the same commit
        root = commit_change(root, manifest, eng, change.margin, run)
    return AppendResult(
        str(root),
        label,
        new_rows,
        n_rejected,
        len(destinations) - len(new_pixels),
        new_pixels,
        properties[Key.NROWS],
        rejected_path=str(rejected_path) if rejected_path else None,
    )


def _free_label(root: AnyPath, label: str, destinations) -> str:
    """``label``, or ``label-2``, ``label-3``... if a pixel already has a file of that name."""
    candidate, n = label, 1
    while any(
        (layout.pixel_file(root, o, p, "/") / f"{candidate}.parquet").exists() for o, p, _ in destinations
    ):
        n += 1
        candidate = f"{label}-{n}"
    return candidate

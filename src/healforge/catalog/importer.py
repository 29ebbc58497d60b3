"""``import_catalog``: point tables -> HATS catalog (map, binning, split, reduce, finish).

The run keeps its state in ``OUTPUT/.healforge-import/``: the arguments (``plan.json``), one
histogram per input file (map), the alignment (binning), one shard and index per input file
(split) and a marker per written pixel (reduce). Rerunning with the same arguments picks up where
a crashed or killed run stopped; the work directory is removed when the catalog is finished.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge import __version__
from healforge.catalog import format as fmt
from healforge.catalog.alignment import Alignment, dense_histogram, generate_alignment
from healforge.catalog.pipeline import common_schema, map_stage, reduce_stage, rejected_tables, split_stage
from healforge.catalog.stages import InputSpec
from healforge.engine import Engine, Progress, owned_engine
from healforge.errors import CatalogError
from healforge.healpix import check_order
from healforge.io import storage
from healforge.io.readers import expand_inputs
from healforge.io.storage import AnyPath, as_path

WORK_DIR = ".healforge-import"
CATALOG_TYPES = ("object", "source")


@dataclass
class ImportResult:
    """What an import produced."""

    path: str
    rows: int
    rejected: int
    pixels: list[tuple[int, int]]
    rejected_path: str | None = None
    resumed: bool = False
    stage_seconds: dict = field(default_factory=dict)
    margin: object = None

    def __str__(self) -> str:
        orders = sorted({o for o, _ in self.pixels})
        text = f"{self.rows} rows in {len(self.pixels)} pixels (orders {orders}) at {self.path}"
        if self.rejected:
            text += f"; {self.rejected} rejected rows in {self.rejected_path}"
        if self.margin is not None:
            text += f"; margin: {self.margin}"
        return text


def rejected_path_for(output: str | AnyPath) -> AnyPath:
    """Where quarantined rows of an import into ``output`` are written (beside the catalog)."""
    output = as_path(output)
    return output.with_name(output.name + ".rejected.parquet")


def import_catalog(
    inputs: list[str] | str,
    output: str | os.PathLike,
    ra: str = "ra",
    dec: str = "dec",
    *,
    id_column: str | None = None,
    threshold: int = 1_000_000,
    highest_order: int = 10,
    lowest_order: int = 0,
    name: str | None = None,
    catalog_type: str = "object",
    sort_columns: list[str] | tuple[str, ...] = (),
    compression: str | None = "zstd:3",
    drop_empty_siblings: bool = True,
    input_format: str | None = None,
    reader_options: dict | None = None,
    batch_rows: int = 500_000,
    row_group_rows: int = 1_048_576,
    on_bad_rows: str = "error",
    margin_arcsec: float | None = None,
    margin_path: str | os.PathLike | None = None,
    resume: bool | None = None,
    overwrite: bool = False,
    storage_options: dict | None = None,
    tmp_dir: str | os.PathLike | None = None,
    engine: Engine | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    synchronous: bool = False,
    quiet: bool = False,
) -> ImportResult:
    """Import point tables into a HATS catalog.

    Parameters
    ----------
    inputs
        Files, directories or glob patterns (CSV, Parquet, FITS, HDF5; local or fsspec URLs).
    output
        Catalog directory to create: a local path or an fsspec URL (``s3://bucket/cat``).
    ra, dec
        Coordinate columns, degrees.
    id_column
        Optional unique-id column; checked to exist and recorded in the properties.
    threshold
        Maximum rows per partition.
    highest_order, lowest_order
        Range of partition orders; equal values give a fixed-order catalog.
    name
        ``obs_collection`` (default: the output directory name).
    catalog_type
        ``object`` or ``source``.
    input_format, reader_options
        Input format (guessed from the suffix by default) and reader options: ``hdu`` (FITS
        extension), ``group`` (HDF5 group of column datasets), ``delimiter`` (CSV).
    sort_columns
        Columns sorting rows after ``_healpix_29`` inside each file.
    compression
        Parquet codec and level, ``"zstd:3"`` style (codec[:level]).
    on_bad_rows
        ``"error"`` (default: stop at the first bad row, naming file, column, row, value) or
        ``"quarantine"`` (write bad rows to ``OUTPUT.rejected.parquet`` and count them).
    margin_arcsec, margin_path
        Also build a margin cache of this radius, at ``margin_path`` (default ``OUTPUT_margin``
        beside the catalog); append and compact keep it up to date.
    resume
        ``None``: continue an unfinished run with the same arguments if there is one.
        ``True``: there must be one. ``False``: start afresh (needs ``overwrite`` if output exists).
    overwrite
        Delete an existing output first.
    storage_options
        fsspec options for a URL ``output`` (and ``margin_path``): credentials, endpoint...
    tmp_dir
        Local directory for the intermediate files (default: inside a local output, the system
        temp dir for a URL output). A rerun with the same output finds them there and resumes.
    engine, workers, scheduler, synchronous, quiet
        Where tasks run (see :class:`healforge.engine.Engine`) and whether to show progress.

    Returns
    -------
    ImportResult
    """
    check_order(highest_order)
    check_order(lowest_order)
    if lowest_order > highest_order:
        raise ValueError(f"lowest order {lowest_order} is above highest order {highest_order}")
    if catalog_type not in CATALOG_TYPES:
        raise ValueError(f"catalog type must be one of {CATALOG_TYPES}, got {catalog_type!r}")
    if on_bad_rows not in ("error", "quarantine"):
        raise ValueError("on_bad_rows must be 'error' or 'quarantine'")
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    files = expand_inputs(inputs)
    output = as_path(output, storage_options)
    work = storage.scratch_dir(output, WORK_DIR, tmp_dir)
    args = {
        "files": files,
        "ra": ra,
        "dec": dec,
        "id_column": id_column,
        "threshold": int(threshold),
        "highest_order": int(highest_order),
        "lowest_order": int(lowest_order),
        "catalog_type": catalog_type,
        "sort_columns": list(sort_columns),
        "compression": compression,
        "drop_empty_siblings": bool(drop_empty_siblings),
        "input_format": input_format,
        "reader_options": reader_options or {},
        "on_bad_rows": on_bad_rows,
        "version": __version__,
    }
    resumed = _prepare_output(output, work, args, resume, overwrite)
    spec = InputSpec(ra, dec, input_format, batch_rows, on_bad_rows, dict(reader_options or {}))
    timings: dict[str, float] = {}

    with owned_engine(engine, workers, scheduler, synchronous, quiet) as eng:
        t0 = time.perf_counter()
        mapped = map_stage(eng, files, spec, highest_order, work)
        timings["map"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        binning = Progress(1, "Binning", quiet=quiet)
        schema = common_schema(files, mapped["schemas"], [id_column, *sort_columns])
        pixels, counts = mapped["pixels"], mapped["counts"]
        align_file = work / "alignment.npz"
        if align_file.exists():
            alignment = Alignment.load(align_file)
        else:
            alignment = generate_alignment(
                pixels, counts, highest_order, lowest_order, threshold, drop_empty_siblings
            )
            tmp = work / f".alignment.{uuid.uuid4().hex}.npz"
            alignment.save(tmp)
            os.replace(tmp, align_file)
        destinations = alignment.destinations()
        binning.update()
        binning.close()
        timings["binning"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        slices, n_rejected = split_stage(eng, files, spec, work, align_file, schema)
        if n_rejected != mapped["bad"]:
            raise RuntimeError(
                f"split rejected {n_rejected} rows but mapping found {mapped['bad']}: did the inputs change?"
            )
        timings["split"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        targets = [fmt.pixel_file(output, o, p) for o, p, _ in destinations]
        reduce_stage(
            eng, destinations, slices, targets, work / "reduce", sort_columns, compression, row_group_rows
        )
        timings["reduce"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    finishing = Progress(2, "Finishing", quiet=quiet)
    pixels_out = [(o, p) for o, p, _ in destinations]
    rejected_file = _write_rejected(output, rejected_tables(work, files)) if n_rejected else None
    written = finish_catalog(
        output,
        pixels_out,
        dense_histogram(pixels, counts, highest_order),
        name=name or output.name,
        catalog_type=catalog_type,
        ra=ra,
        dec=dec,
        threshold=threshold,
        sort_columns=sort_columns,
        extra={"hats_col_id": id_column} if id_column else None,
    )
    finishing.update()
    n_rows = mapped["rows"]
    if written + n_rejected != n_rows:
        raise RuntimeError(f"row count mismatch: read {n_rows}, rejected {n_rejected}, wrote {written}")
    shutil.rmtree(work, ignore_errors=True)
    finishing.update()
    finishing.close()
    timings["finish"] = time.perf_counter() - t0
    result = ImportResult(
        str(output), written, n_rejected, pixels_out, str(rejected_file) if rejected_file else None, resumed
    )
    result.stage_seconds = timings
    if margin_arcsec:
        from healforge.catalog.margin import margin

        target = (
            as_path(margin_path, storage_options)
            if margin_path
            else output.with_name(output.name + "_margin")
        )
        t0 = time.perf_counter()
        result.margin = margin(
            output,
            target,
            margin_arcsec,
            overwrite=True,
            tmp_dir=tmp_dir,
            engine=engine,
            workers=workers,
            scheduler=scheduler,
            synchronous=synchronous,
            quiet=quiet,
        )
        timings["margin"] = time.perf_counter() - t0
    return result


def finish_catalog(
    root: AnyPath,
    pixels: list[tuple[int, int]],
    histogram: np.ndarray,
    *,
    name: str,
    catalog_type: str,
    ra: str,
    dec: str,
    threshold: int | None,
    sort_columns=(),
    npix_suffix: str = ".parquet",
    extra: dict | None = None,
) -> int:
    """Write the catalog-level files of a catalog whose data files are in place; returns its rows."""

    root = as_path(root)
    fmt.write_partition_info(root, pixels)
    total = fmt.write_dataset_metadata(root)
    fmt.write_skymaps(root, histogram)
    max_order = max((o for o, _ in pixels), default=0)

    sky = fmt.sky_fraction(pixels)
    props = {
        "obs_collection": name,
        "dataproduct_type": catalog_type,
        "hats_nrows": total,
        "hats_col_ra": ra,
        "hats_col_dec": dec,
        "hats_cols_sort": ",".join(sort_columns) or None,
        "hats_max_rows": threshold,
        "hats_order": max_order,
        "moc_sky_fraction": f"{sky:0.5f}",
        "hats_npix_suffix": npix_suffix,
        "hats_skymap_order": int(np.log2(len(histogram) // 12) // 2),
    }
    props.update(extra or {})
    fmt.write_properties(root, **props)
    return total


def _prepare_output(output: AnyPath, work, args: dict, resume: bool | None, overwrite: bool) -> bool:
    plan = work / "plan.json"
    if overwrite:
        if output.exists():
            storage.rmtree(output)
        if work.exists():  # intermediate files kept apart from the output (--tmp-dir, URL output)
            shutil.rmtree(work)
    if plan.exists():
        previous = json.loads(plan.read_text())
        if previous == args and resume is not False:
            return True
        if resume:
            diff = sorted(k for k in args if previous.get(k) != args[k])
            raise CatalogError(
                f"cannot resume the unfinished import in {output}: arguments differ ({', '.join(diff)}); "
                "use --overwrite to start again"
            )
        raise CatalogError(
            f"{output} holds an unfinished import with other arguments; rerun with the same arguments "
            "to resume it, or use --overwrite"
        )
    if resume:
        raise CatalogError(f"nothing to resume: {output} has no unfinished import")
    if not storage.is_empty_dir(output):
        raise CatalogError(f"output {output} exists and is not empty; use --overwrite to replace it")
    rejected = rejected_path_for(output)
    if rejected.exists():
        storage.rmtree(rejected)
    work.mkdir(parents=True, exist_ok=True)
    fmt.atomic_write_text(plan, json.dumps(args, indent=1))
    return False


def _write_rejected(output: AnyPath, tables: list[pa.Table]) -> AnyPath:
    target = rejected_path_for(output)
    with storage.atomic_output(target) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)
    return target


__all__ = ["ImportResult", "finish_catalog", "import_catalog", "rejected_path_for"]

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
from pathlib import Path

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
from healforge.io.readers import expand_inputs

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
    collection: str | None = None
    members: list = field(default_factory=list)

    def __str__(self) -> str:
        orders = sorted({o for o, _ in self.pixels})
        text = f"{self.rows} rows in {len(self.pixels)} pixels (orders {orders}) at {self.path}"
        if self.rejected:
            text += f"; {self.rejected} rejected rows in {self.rejected_path}"
        if self.collection:
            text += f"; collection {self.collection}"
        for member in self.members or ([self.margin] if self.margin is not None else []):
            text += f"\n  {member}"
        return text


def rejected_path_for(output: str | Path) -> Path:
    """Where quarantined rows of an import into ``output`` are written (beside the catalog)."""
    output = Path(output)
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
    collection: bool = False,
    margins: list[float] | tuple[float, ...] = (),
    indexes: list[str] | tuple[str, ...] = (),
    resume: bool | None = None,
    overwrite: bool = False,
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
        Catalog directory to create.
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
    collection
        Write a HATS collection at ``output``: the catalog in ``OUTPUT/<name>``, each margin in
        ``OUTPUT/<name>_<R>arcs`` and each index in ``OUTPUT/<name>_<column>`` (hats-import's
        names), and ``OUTPUT/collection.properties`` (the first margin and index are the defaults).
        Rerunning after a crash resumes the catalog, or keeps it if it is complete.
    margins
        Margin radii (arcsec) to build (several only in a collection).
    indexes
        Columns to build index catalogs on (beside a stand-alone catalog as ``OUTPUT_<col>_index``).
    resume
        ``None``: continue an unfinished run with the same arguments if there is one.
        ``True``: there must be one. ``False``: start afresh (needs ``overwrite`` if output exists).
    overwrite
        Delete an existing output first.
    engine, workers, scheduler, synchronous, quiet
        Where tasks run (see :class:`healforge.engine.Engine`) and whether to show progress.

    Returns
    -------
    ImportResult
    """
    margins = [float(m) for m in margins] + ([float(margin_arcsec)] if margin_arcsec else [])
    if collection:
        return _import_collection(
            inputs,
            output,
            dict(
                ra=ra,
                dec=dec,
                id_column=id_column,
                threshold=threshold,
                highest_order=highest_order,
                lowest_order=lowest_order,
                catalog_type=catalog_type,
                sort_columns=sort_columns,
                compression=compression,
                drop_empty_siblings=drop_empty_siblings,
                input_format=input_format,
                reader_options=reader_options,
                batch_rows=batch_rows,
                row_group_rows=row_group_rows,
                on_bad_rows=on_bad_rows,
            ),
            name=name,
            margins=margins,
            indexes=list(indexes),
            resume=resume,
            overwrite=overwrite,
            engine_args=dict(
                engine=engine, workers=workers, scheduler=scheduler, synchronous=synchronous, quiet=quiet
            ),
        )
    if len(margins) > 1:
        raise ValueError("several margins need a collection (collection=True / --collection)")
    margin_arcsec = margins[0] if margins else None
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
    output = Path(output).absolute()
    work = output / WORK_DIR
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

        target = Path(margin_path) if margin_path else output.with_name(output.name + "_margin")
        t0 = time.perf_counter()
        result.margin = margin(
            output,
            target,
            margin_arcsec,
            overwrite=True,
            engine=engine,
            workers=workers,
            scheduler=scheduler,
            synchronous=synchronous,
            quiet=quiet,
        )
        timings["margin"] = time.perf_counter() - t0
    if indexes:
        from healforge.catalog.index import index_catalog

        t0 = time.perf_counter()
        result.members = [result.margin] if result.margin is not None else []
        for col in indexes:
            result.members.append(
                index_catalog(
                    output,
                    col,
                    engine=engine,
                    workers=workers,
                    scheduler=scheduler,
                    synchronous=synchronous,
                    quiet=quiet,
                )
            )
        timings["index"] = time.perf_counter() - t0
    return result


def _import_collection(
    inputs, output, options: dict, *, name, margins, indexes, resume, overwrite, engine_args
) -> ImportResult:
    """``import_catalog(collection=True)``: the catalog, its margins and indexes, the properties."""
    from healforge.catalog.collection import COLLECTION_FILE, index_name, margin_name, write_collection
    from healforge.catalog.index import build_index
    from healforge.catalog.margin import build_margin
    from healforge.catalog.snapshot import CatalogSnapshot

    root = Path(output).absolute()
    cat_name = name or root.name
    primary = root / cat_name
    if overwrite and root.exists():
        shutil.rmtree(root)
    if (root / COLLECTION_FILE).exists():
        raise CatalogError(f"collection {root} exists; use --overwrite to replace it")
    complete = (primary / "hats.properties").exists() and not (primary / WORK_DIR).exists()
    with owned_engine(**engine_args) as eng:
        if complete and resume is not False:
            props = fmt.read_properties(primary)
            result = ImportResult(str(primary), int(props["hats_nrows"]), 0, fmt.read_partition_info(primary))
            result.resumed = True
        else:
            result = import_catalog(
                inputs, primary, name=cat_name, resume=resume, engine=eng, quiet=eng.quiet, **options
            )
        margin_dirs, index_dirs = [], {}
        for radius in margins:
            target = root / margin_name(cat_name, radius)
            result.members.append(build_margin(primary, target, radius, overwrite=True, engine=eng))
            margin_dirs.append(target.name)
        for col in indexes:
            target = root / index_name(cat_name, col)
            snapshot = CatalogSnapshot.of(primary)
            result.members.append(build_index(snapshot, target, col, overwrite=True, engine=eng))
            index_dirs[col] = target.name
    write_collection(
        root,
        root.name,
        cat_name,
        margin_dirs,
        margin_dirs[0] if margin_dirs else None,
        index_dirs,
        indexes[0] if indexes else None,
    )
    result.collection = str(root)
    result.margin = result.members[0] if margins else None
    return result


def finish_catalog(
    root: Path,
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

    root = Path(root)
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


def _prepare_output(output: Path, work: Path, args: dict, resume: bool | None, overwrite: bool) -> bool:
    plan = work / "plan.json"
    if overwrite and output.exists():
        shutil.rmtree(output)
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
    if output.exists() and any(output.iterdir()):
        raise CatalogError(f"output {output} exists and is not empty; use --overwrite to replace it")
    rejected = rejected_path_for(output)
    if rejected.exists():
        rejected.unlink()
    work.mkdir(parents=True, exist_ok=True)
    fmt.atomic_write_text(plan, json.dumps(args, indent=1))
    return False


def _write_rejected(output: Path, tables: list[pa.Table]) -> Path:
    target = rejected_path_for(output)
    tmp = target.with_name(f".{target.name}.tmp")
    pq.write_table(pa.concat_tables(tables), tmp)
    os.replace(tmp, target)
    return target


__all__ = ["ImportResult", "finish_catalog", "import_catalog", "rejected_path_for"]

"""``import_catalog``: point tables -> HATS catalog (map, binning, split, reduce, finish).

The run keeps its state in ``OUTPUT/.healforge-import/``: the arguments (``plan.json``), one
histogram per input file (map), the alignment (binning), one shard and index per input file
(split) and a marker per written pixel (reduce). Rerunning with the same arguments picks up where
a crashed or killed run stopped; the work directory is removed when the catalog is finished.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge import __version__
from healforge.catalog import format as fmt
from healforge.catalog.alignment import Alignment, dense_histogram, generate_alignment
from healforge.catalog.build import ancillary
from healforge.catalog.build import duplicate_ids as duplicates
from healforge.catalog.build.column_types import parse_dtypes, parse_size, schema_types
from healforge.catalog.build.importrun import (
    build_members,
    prepare_output,
    read_record,
    record_fields,
    rejected_path_for,
    remove_work_dir,
    write_record,
)
from healforge.catalog.build.reimport import SourceCatalog, source_catalog
from healforge.catalog.build.stages import (
    common_schema,
    map_stage,
    reduce_stage,
    rejected_tables,
    split_stage,
)
from healforge.catalog.build.tasks import InputSpec
from healforge.engine import Engine, Progress, owned_engine
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.healpix import check_order
from healforge.io import storage
from healforge.io.readers import expand_inputs
from healforge.io.storage import AnyPath, as_path
from healforge.names import check_name, check_optional_name

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
    complete: bool = False
    stage_seconds: dict = field(default_factory=dict)
    margin: object = None
    collection: str | None = None
    members: list = field(default_factory=list)
    duplicate_ids: object = None  # duplicates.DuplicateIds of the --id column, when it repeats
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        orders = sorted({o for o, _ in self.pixels})
        text = f"{self.rows} rows in {len(self.pixels)} pixels (orders {orders}) at {self.path}"
        if self.rejected:
            text += f"; {self.rejected} rejected rows in {self.rejected_path}"
        if self.collection:
            text += f"; collection {self.collection}"
        for member in self.members or ([self.margin] if self.margin is not None else []):
            text += f"\n  {member}"
        for warning in self.warnings:
            text += f"\nwarning: {warning}"
        return text


def import_catalog(
    inputs: list[str] | str,
    output: str | os.PathLike,
    ra: str | None = None,
    dec: str | None = None,
    *,
    id_column: str | None = None,
    threshold: int | None = None,
    max_bytes: int | str | None = None,
    highest_order: int = 10,
    lowest_order: int = 0,
    name: str | None = None,
    catalog_type: str | None = None,
    sort_columns: list[str] | tuple[str, ...] | None = None,
    compression: str | None = "zstd:3",
    drop_empty_siblings: bool = True,
    input_format: str | None = None,
    reader_options: dict | None = None,
    columns: list[str] | tuple[str, ...] | None = None,
    schema: str | os.PathLike | pa.Schema | None = None,
    dtype: dict | list[str] | None = None,
    batch_rows: int = 500_000,
    row_group_rows: int = 1_048_576,
    subtile_order_delta: int | None = None,
    on_bad_rows: str = "error",
    on_duplicate_ids: str = "report",
    margin_arcsec: float | None = None,
    margin_path: str | os.PathLike | None = None,
    collection: bool = False,
    margins: list[float] | tuple[float, ...] = (),
    indexes: list[str] | tuple[str, ...] = (),
    skymap_alt_orders: Sequence[int] = (),
    thumbnail: bool = False,
    per_partition_stats: bool = False,
    default_columns: Sequence[str] | None = None,
    properties: dict[str, str] | None = None,
    summary: bool = False,
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
        Files, directories or glob patterns (CSV, Parquet, FITS, HDF5, ECSV; local or fsspec
        URLs), or one existing HATS catalog or collection directory to re-import (repartition):
        its rows, ``_healpix_29`` and properties are kept, sizes, orders and dates are new.
    output
        Catalog directory to create: a local path or an fsspec URL (``s3://bucket/cat``).
    ra, dec
        Coordinate columns, degrees (default ``ra``/``dec``, or the re-imported catalog's).
    id_column
        Optional unique-id column; checked to exist and recorded in the properties.
    on_duplicate_ids
        What repeated values of ``id_column`` do: ``report`` (default; the count and a few
        examples go to ``ImportResult.duplicate_ids`` and a warning line) or ``error`` (stop
        before any data file is written).
    threshold
        Maximum rows per partition (default 1,000,000).
    max_bytes
        Instead of ``threshold``: maximum estimated in-memory bytes per partition (``500MB``,
        ``1GiB`` or an int; hats-import's ``byte_pixel_threshold``), recorded as
        ``hats_max_bytes``. Every data file written is checked to be at most 10% over it.
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
        Columns sorting rows after ``_healpix_29`` inside each file (default: none, or the
        re-imported catalog's ``hats_cols_sort``).
    columns
        Import only these columns (plus ra, dec, the id and sort columns).
    schema, dtype
        Column types to use, from a parquet file's schema and/or ``{column: type}`` (or
        ``["col=type", ...]``; ``dtype`` wins). Inputs whose types differ are cast to them; a
        cast that would change a value is an error naming the file, column and row.
    row_group_rows, subtile_order_delta
        Rows per parquet row group, or (D) one row group per order K+D sub-pixel of an order K
        partition instead.
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
    skymap_alt_orders, thumbnail, per_partition_stats, default_columns, properties, summary
        hats-import's optional outputs: ``skymap.K.fits`` maps at these orders (at most
        ``highest_order``), ``data_thumbnail.parquet``, ``per_partition_statistics.parquet``,
        ``hats_cols_default``, extra ``hats.properties`` entries, and a ``README.md`` summary.
        Append and compact keep them current (see :mod:`healforge.catalog.build.ancillary`).
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
    margins = [float(m) for m in margins] + ([float(margin_arcsec)] if margin_arcsec else [])
    check_optional_name(name, "catalog name")
    if collection:
        # members are directories of the collection named after the catalog (and index columns)
        check_name(name or as_path(output, storage_options).name, "catalog name")
        for col in indexes:
            check_name(col, "index column name")
        options = dict(
            ra=ra,
            dec=dec,
            id_column=id_column,
            threshold=threshold,
            max_bytes=max_bytes,
            highest_order=highest_order,
            lowest_order=lowest_order,
            catalog_type=catalog_type,
            sort_columns=sort_columns,
            compression=compression,
            drop_empty_siblings=drop_empty_siblings,
            input_format=input_format,
            reader_options=reader_options,
            columns=columns,
            schema=schema,
            dtype=dtype,
            batch_rows=batch_rows,
            row_group_rows=row_group_rows,
            subtile_order_delta=subtile_order_delta,
            on_bad_rows=on_bad_rows,
            on_duplicate_ids=on_duplicate_ids,
            skymap_alt_orders=skymap_alt_orders,
            thumbnail=thumbnail,
            per_partition_stats=per_partition_stats,
            default_columns=default_columns,
            properties=properties,
            summary=summary,
            tmp_dir=tmp_dir,
        )
        return _import_collection(
            inputs,
            as_path(output, storage_options),
            options,
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
        raise OptionError(f"lowest order {lowest_order} is above highest order {highest_order}")
    if on_bad_rows not in ("error", "quarantine"):
        raise OptionError("on_bad_rows must be 'error' or 'quarantine'")
    duplicates.check_mode(on_duplicate_ids)
    if max_bytes is not None:
        if threshold is not None:
            raise OptionError("give either a row threshold or max_bytes, not both")
        if lowest_order == highest_order:
            raise OptionError(
                "max_bytes has no effect on a fixed-order catalog (lowest order = highest order)"
            )
        max_bytes = parse_size(max_bytes)
    threshold = int(threshold) if threshold is not None else (None if max_bytes else 1_000_000)
    if threshold is not None and threshold < 1:
        raise OptionError(f"threshold must be a positive number of rows, got {threshold}")
    if row_group_rows is None or int(row_group_rows) < 1:
        raise OptionError(f"row_group_rows must be at least 1, got {row_group_rows}")
    if subtile_order_delta is not None and not 0 <= int(subtile_order_delta) <= 29 - highest_order:
        raise OptionError(
            f"subtile_order_delta must be in [0, {29 - highest_order}] (order + delta at most 29), "
            f"got {subtile_order_delta}"
        )
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    outputs = ancillary.import_outputs(
        skymap_order=highest_order,
        skymap_alt_orders=skymap_alt_orders,
        thumbnail=thumbnail,
        per_partition_stats=per_partition_stats,
        summary=summary,
        default_columns=default_columns,
        properties=properties,
    )
    output = as_path(output, storage_options)
    source = _source_catalog(inputs, output, storage_options)
    extra: dict = {}
    if source is not None:
        props = source.properties
        files, input_format = source.files, "parquet"
        ra, dec = ra or props.get("hats_col_ra"), dec or props.get("hats_col_dec")
        name = name or props.get("obs_collection")
        id_column = id_column or props.get("hats_col_id")
        catalog_type = catalog_type or props.get("dataproduct_type")
        if sort_columns is None and props.get("hats_cols_sort"):
            sort_columns = [c for c in props["hats_cols_sort"].split(",") if c]
        extra = source.carried_properties()
    else:
        files = expand_inputs(inputs, storage_options)
    ra, dec, catalog_type = ra or "ra", dec or "dec", catalog_type or "object"
    sort_columns = list(sort_columns or ())
    if catalog_type not in CATALOG_TYPES:
        raise OptionError(f"catalog type must be one of {CATALOG_TYPES}, got {catalog_type!r}")
    explicit_types = parse_dtypes(dtype)
    dtypes = {**(schema_types(schema) if schema is not None else {}), **explicit_types}
    if columns is not None:
        columns = list(dict.fromkeys([*columns, *([id_column] if id_column else []), *sort_columns]))
    if id_column:
        extra["hats_col_id"] = id_column
    work = storage.scratch_dir(output, WORK_DIR, tmp_dir)
    args = {
        "files": files,
        "ra": ra,
        "dec": dec,
        "id_column": id_column,
        "threshold": threshold,
        "max_bytes": max_bytes,
        "highest_order": int(highest_order),
        "lowest_order": int(lowest_order),
        "catalog_type": catalog_type,
        "sort_columns": list(sort_columns),
        "compression": compression,
        "drop_empty_siblings": bool(drop_empty_siblings),
        "input_format": input_format,
        "reader_options": reader_options or {},
        "columns": columns,
        "dtypes": {c: str(t) for c, t in dtypes.items()},
        "row_group_rows": int(row_group_rows),
        "subtile_order_delta": subtile_order_delta,
        "on_bad_rows": on_bad_rows,
        "version": __version__,
    }
    state = prepare_output(output, work, args, resume, overwrite)
    members = partial(
        build_members,
        output=output,
        margin_arcsec=margin_arcsec,
        margin_path=margin_path,
        indexes=indexes,
        args=args,
        storage_options=storage_options,
        tmp_dir=tmp_dir,
        engine=engine,
        workers=workers,
        scheduler=scheduler,
        synchronous=synchronous,
        quiet=quiet,
    )
    if state in ("complete", "members"):
        result = _completed_result(output)
        if state == "complete":
            return result
        return members(result)
    resumed = state == "resumed"
    spec = InputSpec(
        ra,
        dec,
        input_format,
        batch_rows,
        on_bad_rows,
        dict(reader_options or {}),
        tuple(columns) if columns is not None else None,
        dtypes,
        measure_bytes=max_bytes is not None,
        storage_options=storage_options,
    )
    timings: dict[str, float] = {}

    with owned_engine(engine, workers, scheduler, synchronous, quiet) as eng:
        t0 = time.perf_counter()
        mapped = map_stage(eng, files, spec, highest_order, work)
        timings["map"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        binning = Progress(1, "Binning", quiet=quiet)
        schema = common_schema(files, mapped["schemas"], [id_column, *sort_columns])
        ancillary.check_columns(outputs, schema.names)
        unknown = [c for c in explicit_types if c not in schema.names]
        if unknown:
            raise BadInputError(
                f"--dtype column(s) {', '.join(map(repr, unknown))} not found; imported columns: "
                f"{', '.join(schema.names)}",
                path=files[0],
            )
        pixels, counts = mapped["pixels"], mapped["counts"]
        align_file = work / "alignment.npz"
        if align_file.exists():
            alignment = Alignment.load(align_file)
        else:
            alignment = generate_alignment(
                pixels,
                counts,
                highest_order,
                lowest_order,
                max_bytes or threshold,
                drop_empty_siblings,
                weights=mapped.get("bytes"),
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
        shards = sorted({piece[0] for pieces in slices for piece in pieces})
        try:
            dup = duplicates.check_shards(shards, id_column, on_duplicate_ids) if id_column else None
        except BadInputError:
            remove_work_dir(work)  # nothing written: a corrected rerun starts afresh
            raise
        timings["split"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        targets = [fmt.pixel_file(output, o, p) for o, p, _ in destinations]
        reduce_stage(
            eng,
            destinations,
            slices,
            targets,
            work / "reduce",
            sort_columns,
            compression,
            int(row_group_rows),
            subtile_order_delta,
        )
        timings["reduce"] = time.perf_counter() - t0
        if max_bytes is not None:
            check_file_sizes(targets, max_bytes)

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
        extra={
            **extra,
            **outputs.hats_properties(),
            **({"hats_max_bytes": max_bytes} if max_bytes is not None else {}),
        },
    )
    ancillary.write_at_import(output, outputs)
    finishing.update()
    n_rows = mapped["rows"]
    if written + n_rejected != n_rows:
        raise RuntimeError(f"row count mismatch: read {n_rows}, rejected {n_rejected}, wrote {written}")
    storage.clean_leftovers(output, fmt.DATASET_DIR)
    result = ImportResult(
        str(output), written, n_rejected, pixels_out, str(rejected_file) if rejected_file else None, resumed
    )
    # the point of completion: a rerun finds this record and answers "already complete"
    write_record(output, args, record_fields(result), members_done=not (margin_arcsec or indexes))
    remove_work_dir(work)
    finishing.update()
    finishing.close()
    timings["finish"] = time.perf_counter() - t0
    result.stage_seconds = timings
    if dup is not None:
        result.duplicate_ids = dup
        result.warnings.append(str(dup))
    return members(result)


def _import_collection(
    inputs, output, options: dict, *, name, margins, indexes, resume, overwrite, engine_args
) -> ImportResult:
    """``import_catalog(collection=True)``: the catalog, its margins and indexes, the properties."""
    from healforge.catalog.change.snapshot import CatalogSnapshot
    from healforge.catalog.derived.collection import (
        COLLECTION_FILE,
        index_name,
        margin_name,
        write_collection,
    )
    from healforge.catalog.derived.index import build_index
    from healforge.catalog.derived.margin import build_margin

    root = output
    tmp_dir = options.get("tmp_dir")
    cat_name = name or root.name
    primary = root / cat_name
    if overwrite and root.exists():
        storage.rmtree(root)
    with owned_engine(**engine_args) as eng:
        # the catalog: finished already (its record matches), resumed, or imported afresh
        result = import_catalog(
            inputs, primary, name=cat_name, resume=resume, engine=eng, quiet=eng.quiet, **options
        )
        if (root / COLLECTION_FILE).exists():
            _check_collection_members(root, cat_name, margins, indexes)
            result.complete = True
            result.collection = str(root)
            return result
        if result.complete:  # a kill while building the members: they are built again
            result.complete, result.resumed = False, True
        margin_dirs, index_dirs = [], {}
        for radius in margins:
            target = root / margin_name(cat_name, radius)
            result.members.append(
                build_margin(primary, target, radius, overwrite=True, tmp_dir=tmp_dir, engine=eng)
            )
            margin_dirs.append(target.name)
        for col in indexes:
            target = root / index_name(cat_name, col)
            snapshot = CatalogSnapshot.of(primary)
            result.members.append(
                build_index(snapshot, target, col, overwrite=True, tmp_dir=tmp_dir, engine=eng)
            )
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


def _check_collection_members(root: AnyPath, cat_name: str, margins: list, indexes: list) -> None:
    """A finished collection import rerun: it must hold the margins and indexes asked for."""
    from hats.catalog.dataset.collection_properties import CollectionProperties

    from healforge.catalog.derived.collection import margin_name

    props = CollectionProperties.read_from_dir(str(root) if storage.is_local(root) else root)
    have_margins = {PurePosixPath(m).name for m in props.all_margins or []}
    have_indexes = set(props.all_indexes or {})
    missing = [margin_name(cat_name, r) for r in margins if margin_name(cat_name, r) not in have_margins]
    missing += [f"index on {c}" for c in indexes if c not in have_indexes]
    if missing:
        raise CatalogError(
            f"collection {root} exists without {', '.join(missing)}; use --overwrite to rebuild it"
        )


def check_file_sizes(files: list[AnyPath], max_bytes: int, slack: float = 0.1) -> None:
    """Every data file at most ``slack`` over ``max_bytes`` (the row-size estimate held)."""
    for f in map(as_path, files):
        if f.exists() and (size := f.stat().st_size) > max_bytes * (1 + slack):
            raise CatalogError(
                f"data file {f} has {size} bytes, more than 10% over --max-bytes {max_bytes}: the "
                "row sizes estimated from the input were too small; use a smaller --max-bytes"
            )


def _source_catalog(
    inputs: list, output: AnyPath, storage_options: dict | None = None
) -> SourceCatalog | None:
    """The HATS catalog to re-import when the input is one (it must then be the only input)."""
    found = [(p, c) for p in inputs if (c := source_catalog(p, storage_options)) is not None]
    if not found:
        return None
    if len(inputs) != 1:
        raise OptionError(
            f"{found[0][0]} is a HATS catalog: re-import takes it as the only input, got {len(inputs)} inputs"
        )
    cat = found[0][1]
    if output == cat.root or cat.root in output.parents or output in cat.root.parents:
        raise OptionError(f"the output {output} must not overlap the catalog being re-imported ({cat.root})")
    return cat


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


def _completed_result(output: AnyPath) -> ImportResult:
    record = read_record(output)
    pixels = [(int(o), int(p)) for o, p in record["pixels"]]
    result = ImportResult(str(output), record["rows"], record["rejected"], pixels, record["rejected_path"])
    result.complete = True
    return result


def _write_rejected(output: AnyPath, tables: list[pa.Table]) -> AnyPath:
    target = rejected_path_for(output)
    with storage.atomic_output(target) as tmp:
        pq.write_table(pa.concat_tables(tables), tmp)
    return target


__all__ = ["ImportResult", "finish_catalog", "import_catalog", "rejected_path_for"]

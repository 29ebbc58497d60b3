"""``import_catalog``: point tables -> HATS catalog (one split pass, binning, reduce, finish).

The run keeps its state in ``OUTPUT/.healforge-import/``: the arguments (``plan.json``), one
histogram per input file (map), the alignment (binning), one shard and index per input file
(split) and a marker per written pixel (reduce). Rerunning with the same arguments picks up where
a crashed or killed run stopped; the work directory is removed when the catalog is finished.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields, replace
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge import __version__
from healforge.catalog.build import ancillary
from healforge.catalog.build import duplicate_ids as duplicates
from healforge.catalog.build.arguments import CATALOG_TYPES, ImportArguments
from healforge.catalog.build.column_types import parse_dtypes, schema_types
from healforge.catalog.build.importrun import (
    build_members,
    prepare_output,
    read_record,
    record_fields,
    rejected_path_for,
    write_record,
)
from healforge.catalog.build.reimport import SourceCatalog, source_catalog
from healforge.catalog.build.stages import (
    alignment_of,
    common_schema,
    reduce_stage,
    rejected_tables,
    slices_of,
    sort_stage,
)
from healforge.catalog.build.tasks import InputSpec
from healforge.catalog.change.snapshot import CatalogSnapshot
from healforge.catalog.derived.collection import (
    COLLECTION_FILE,
    index_name,
    margin_name,
    open_collection,
    write_collection,
)
from healforge.engine import Engine, Progress
from healforge.errors import BadInputError, CatalogError, OptionError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.readers import expand_inputs
from healforge.io.storage import AnyPath, as_path
from healforge.options import RunOptions
from healforge.pixel.alignment import Alignment, dense_histogram

WORK_DIR = ".healforge-import"
RUN_FIELDS = {f.name for f in fields(RunOptions)}


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
    run: RunOptions | None = None,
    **options,
) -> ImportResult:
    """Import point tables into a HATS catalog.

    Parameters
    ----------
    inputs, output, ra, dec, **options
        The fields of :class:`healforge.catalog.build.arguments.ImportArguments` (``threshold``,
        ``highest_order``, ``margins``, ``collection``, ``resume``...), checked before anything
        is read.
    run, **options
        How it runs: a :class:`healforge.options.RunOptions` and/or its fields as keywords
        (``engine``, ``workers``, ``scheduler``, ``synchronous``, ``quiet``,
        ``storage_options``, ``tmp_dir``).

    Returns
    -------
    ImportResult
    """
    return run_import(_arguments(inputs, output, ra, dec, run, options))


def _arguments(inputs, output, ra, dec, run: RunOptions | None, options: dict) -> ImportArguments:
    """The checked arguments of an import: the run options split from the import's own."""
    run_fields = {k: options.pop(k) for k in list(options) if k in RUN_FIELDS}
    return ImportArguments(inputs, output, ra, dec, run=RunOptions.of(run, **run_fields), **options)


def plan_import(
    inputs: list[str] | str,
    output: str | os.PathLike,
    ra: str | None = None,
    dec: str | None = None,
    *,
    run: RunOptions | None = None,
    **options,
):
    """What :func:`import_catalog` with the same arguments would make and cost (partitions,
    output and scratch size, memory per worker, wall time), from the inputs' footers and one
    map pass; writes nothing (:mod:`healforge.catalog.build.estimate`)."""
    from healforge.catalog.build.estimate import estimate_import

    return estimate_import(_arguments(inputs, output, ra, dec, run, options), _resolve)


def run_import(args: ImportArguments) -> ImportResult:
    """Run the import ``args`` describe: resume or start it, or answer that it is complete."""
    if args.collection:
        return _import_collection(args)
    output = args.run.path(args.output)
    plan = _resolve(args, output)
    work = workfiles.scratch_dir(output, WORK_DIR, args.run.scratch(output))
    state = prepare_output(output, work, plan.record, args.resume, args.overwrite)
    members = partial(
        build_members,
        output=output,
        margin_arcsec=args.margin_radius,
        margin_path=args.margin_path,
        indexes=args.indexes,
        args=plan.record,
        run=args.run,
    )
    if state in ("complete", "members"):
        result = _completed_result(output)
        if state == "complete":
            return result
        return members(result)
    timings: dict[str, float] = {}
    with args.run.engine_scope() as eng:
        done = _run_stages(eng, args, plan, work, timings)
        if args.max_bytes is not None:
            check_file_sizes(done["targets"], args.max_bytes)

    t0 = time.perf_counter()
    finishing = Progress(2, "Finishing", quiet=args.run.quiet)
    result = _finish_import(args, plan, output, work, done)
    result.resumed = state == "resumed"
    finishing.update()
    # the point of completion: a rerun finds this record and answers "already complete"
    write_record(output, plan.record, record_fields(result), members_done=not (args.margins or args.indexes))
    workfiles.remove_dir(work)
    finishing.update()
    finishing.close()
    timings["finish"] = time.perf_counter() - t0
    result.stage_seconds = timings
    if done["duplicates"] is not None:
        result.duplicate_ids = done["duplicates"]
        result.warnings.append(str(done["duplicates"]))
    return members(result)


@dataclass
class _Plan:
    """An import's inputs resolved: files, columns and types, what the re-imported catalog
    carries, the optional outputs, and ``record``: the arguments a rerun must repeat."""

    files: list
    ra: str
    dec: str
    name: str | None
    catalog_type: str
    sort_columns: list[str]
    spec: InputSpec
    explicit_types: dict
    extra: dict
    outputs: object
    record: dict


def _resolve(args: ImportArguments, output: AnyPath) -> _Plan:
    """Expand the inputs (or open the catalog re-imported) and settle the columns and types."""
    outputs = ancillary.import_outputs(
        skymap_order=args.highest_order,
        skymap_alt_orders=args.skymap_alt_orders,
        thumbnail=args.thumbnail,
        per_partition_stats=args.per_partition_stats,
        summary=args.summary,
        default_columns=args.default_columns,
        properties=args.properties,
        plots=args.plots,
    )
    ra, dec, name, id_column = args.ra, args.dec, args.name, args.id_column
    catalog_type, sort_columns, input_format = args.catalog_type, args.sort_columns, args.input_format
    source = _source_catalog(args.inputs, output, args.run.storage_options)
    extra: dict = {}
    if source is not None:
        props = source.properties
        files, input_format = source.files, "parquet"
        ra, dec = ra or props.get(Key.COL_RA), dec or props.get(Key.COL_DEC)
        name = name or props.get("obs_collection")
        id_column = id_column or props.get(Key.COL_ID)
        catalog_type = catalog_type or props.get("dataproduct_type")
        if sort_columns is None and props.get(Key.COLS_SORT):
            sort_columns = [c for c in props[Key.COLS_SORT].split(",") if c]
        extra = source.carried_properties()
    else:
        files = expand_inputs(args.inputs, args.run.storage_options)
    ra, dec, catalog_type = ra or "ra", dec or "dec", catalog_type or "object"
    sort_columns = list(sort_columns or ())
    if catalog_type not in CATALOG_TYPES:
        raise OptionError(f"catalog type must be one of {CATALOG_TYPES}, got {catalog_type!r}")
    explicit_types = parse_dtypes(args.dtype)
    dtypes = {**(schema_types(args.schema) if args.schema is not None else {}), **explicit_types}
    columns = args.columns
    if columns is not None:
        columns = list(dict.fromkeys([*columns, *([id_column] if id_column else []), *sort_columns]))
    if id_column:
        extra[Key.COL_ID] = id_column
    record = {
        "files": files,
        "ra": ra,
        "dec": dec,
        "id_column": id_column,
        "threshold": args.threshold,
        "max_bytes": args.max_bytes,
        "highest_order": int(args.highest_order),
        "lowest_order": int(args.lowest_order),
        "catalog_type": catalog_type,
        "sort_columns": list(sort_columns),
        "compression": args.compression,
        "drop_empty_siblings": bool(args.drop_empty_siblings),
        "input_format": input_format,
        "reader_options": args.reader_options or {},
        "columns": columns,
        "dtypes": {c: str(t) for c, t in dtypes.items()},
        "row_group_rows": int(args.row_group_rows),
        "subtile_order_delta": args.subtile_order_delta,
        "on_bad_rows": args.on_bad_rows,
        "version": __version__,
    }
    spec = InputSpec(
        ra,
        dec,
        input_format,
        args.batch_rows,
        args.on_bad_rows,
        dict(args.reader_options or {}),
        tuple(columns) if columns is not None else None,
        dtypes,
        measure_bytes=args.max_bytes is not None,
        storage_options=args.run.storage_options,
    )
    return _Plan(
        files, ra, dec, name, catalog_type, sort_columns, spec, explicit_types, extra, outputs, record
    )


def _run_stages(eng: Engine, args: ImportArguments, plan: _Plan, work: AnyPath, timings: dict) -> dict:
    """Split (the one pass over the inputs), binning, indexing and reduce; returns what the finish needs (``mapped``,
    ``destinations``, ``rejected``, ``targets``, ``duplicates``)."""
    files, id_column = plan.files, plan.record["id_column"]
    t0 = time.perf_counter()
    mapped = sort_stage(eng, files, plan.spec, args.highest_order, work)
    timings["sort"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    binning = Progress(1, "Binning", quiet=args.run.quiet)
    schema = common_schema(files, mapped["schemas"], [id_column, *plan.sort_columns])
    ancillary.check_columns(plan.outputs, schema.names)
    unknown = [c for c in plan.explicit_types if c not in schema.names]
    if unknown:
        raise BadInputError(
            f"--dtype column(s) {', '.join(map(repr, unknown))} not found; imported columns: "
            f"{', '.join(schema.names)}",
            path=files[0],
        )
    align_file = work / "alignment.npz"
    if align_file.exists():
        alignment = Alignment.from_arrays(workfiles.read_npz(align_file))
    else:
        alignment = alignment_of(mapped, args)
        workfiles.write_npz(align_file, **alignment.arrays())
    destinations = alignment.destinations()
    binning.update()
    binning.close()
    timings["binning"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    slices, n_rejected = slices_of(eng, work, files, destinations), mapped["bad"]
    shards = sorted({piece[0] for pieces in slices for piece in pieces})
    try:
        dup = (
            duplicates.check_shards(
                eng, shards, id_column, args.on_duplicate_ids, work / "dupids", mapped["rows"]
            )
            if id_column
            else None
        )
    except BadInputError:
        workfiles.remove_dir(work)  # nothing written: a corrected rerun starts afresh
        raise
    timings["slices"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    output = args.run.path(args.output)
    targets = [layout.pixel_file(output, o, p) for o, p, _ in destinations]
    reduce_stage(
        eng,
        destinations,
        slices,
        targets,
        work / "reduce",
        plan.sort_columns,
        args.compression,
        int(args.row_group_rows),
        args.subtile_order_delta,
    )
    timings["reduce"] = time.perf_counter() - t0
    return {
        "mapped": mapped,
        "destinations": destinations,
        "rejected": n_rejected,
        "targets": targets,
        "duplicates": dup,
    }


def _finish_import(args: ImportArguments, plan: _Plan, output: AnyPath, work, done: dict) -> ImportResult:
    """The catalog-level files, the quarantined rows and the row-count check."""
    mapped, n_rejected = done["mapped"], done["rejected"]
    pixels_out = [(o, p) for o, p, _ in done["destinations"]]
    rejected_file = _write_rejected(output, rejected_tables(work, plan.files)) if n_rejected else None
    written = finish_catalog(
        output,
        pixels_out,
        dense_histogram(mapped["pixels"], mapped["counts"], args.highest_order),
        name=plan.name or output.name,
        catalog_type=plan.catalog_type,
        ra=plan.ra,
        dec=plan.dec,
        threshold=args.threshold,
        sort_columns=plan.sort_columns,
        extra={
            **plan.extra,
            **plan.outputs.hats_properties(),
            **({Key.MAX_BYTES: args.max_bytes} if args.max_bytes is not None else {}),
        },
    )
    ancillary.write_at_import(output, plan.outputs)
    n_rows = mapped["rows"]
    if written + n_rejected != n_rows:
        raise RuntimeError(f"row count mismatch: read {n_rows}, rejected {n_rejected}, wrote {written}")
    storage.clean_leftovers(output, layout.DATASET_DIR)
    rejected = str(rejected_file) if rejected_file else None
    return ImportResult(str(output), written, n_rejected, pixels_out, rejected)


def _import_collection(args: ImportArguments) -> ImportResult:
    """``import_catalog(collection=True)``: the catalog, its margins and indexes, the properties."""
    root = args.run.path(args.output)
    tmp_dir = args.run.scratch(root)
    cat_name = args.name or root.name
    primary = root / cat_name
    margins, indexes = list(args.margins), list(args.indexes)
    if args.overwrite and root.exists():
        storage.rmtree(root)
    with args.run.engine_scope() as eng:
        # the catalog: finished already (its record matches), resumed, or imported afresh
        catalog_args = replace(
            args,
            output=primary,
            name=cat_name,
            collection=False,
            margins=(),
            indexes=(),
            margin_path=None,
            overwrite=False,
            run=args.run.using(eng),
        )
        result = run_import(catalog_args)
        if (root / COLLECTION_FILE).exists():
            _check_collection_members(root, cat_name, margins, indexes)
            result.complete = True
            result.collection = str(root)
            return result
        if result.complete:  # a kill while building the members: they are built again
            result.complete, result.resumed = False, True
        from healforge.catalog.derived.index import build_index  # margins bring pandas: only here
        from healforge.catalog.derived.margin import build_margin

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
    coll = open_collection(root)
    have_margins = {m.name for m in coll.margins.values()}
    have_indexes = set(coll.indexes)
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
    layout.write_partition_info(root, pixels)
    total = layout.write_dataset_metadata(root)
    layout.write_skymaps(root, histogram)
    props = {
        "obs_collection": name,
        "dataproduct_type": catalog_type,
        **layout.partition_properties(pixels, total),
        Key.COL_RA: ra,
        Key.COL_DEC: dec,
        Key.COLS_SORT: ",".join(sort_columns) or None,
        Key.MAX_ROWS: threshold,
        Key.NPIX_SUFFIX: npix_suffix,
        Key.SKYMAP_ORDER: int(np.log2(len(histogram) // 12) // 2),
    }
    props.update(extra or {})
    layout.write_properties(root, **props)
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


__all__ = [
    "ImportArguments",
    "ImportResult",
    "finish_catalog",
    "import_catalog",
    "rejected_path_for",
    "run_import",
]

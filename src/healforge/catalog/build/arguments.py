"""The arguments of an import, checked before anything is read or written.

:class:`ImportArguments` holds every option of :func:`healforge.import_catalog` (as hats-import's
``ImportArguments`` does for its pipeline); ``__post_init__`` checks them and puts them in one
form, so that the runner (:mod:`healforge.catalog.build.importer`) only runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from healforge.catalog.build import duplicate_ids as duplicates
from healforge.catalog.build.column_types import parse_size
from healforge.errors import OptionError
from healforge.names import check_name, check_optional_name
from healforge.options import RunOptions
from healforge.pixel import check_order

CATALOG_TYPES = ("object", "source")


@dataclass
class ImportArguments:
    """Everything an import is asked to do.

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
    plots
        hats-import's ``skymap.png`` (row density) and ``partition_info.png`` (partition orders).
    resume
        ``None``: continue an unfinished run with the same arguments if there is one.
        ``True``: there must be one. ``False``: start afresh (needs ``overwrite`` if output exists).
    overwrite
        Delete an existing output first.
    run
        How it runs (:class:`healforge.options.RunOptions`): ``storage_options`` are the fsspec
        options of a URL ``output`` (and ``margin_path``): credentials, endpoint...; ``tmp_dir``
        the local directory for the intermediate files (default: inside a local output, the
        system temp dir for a URL output; a rerun with the same output finds them there and
        resumes); ``engine``, ``workers``, ``scheduler``, ``synchronous``, ``quiet``: where tasks
        run (see :class:`healforge.engine.Engine`) and whether to show progress.


    After ``__post_init__``: ``inputs`` is a list, ``margins`` holds every margin radius
    (``margin_arcsec`` included, which is then ``None``), ``max_bytes`` is a number of bytes and
    ``threshold`` is the row threshold (1,000,000 by default, ``None`` with ``max_bytes``).

    Raises
    ------
    OptionError
        For an option out of range, a name that is not one safe path component, or options that
        do not go together.
    """

    inputs: list[str] | str
    output: str | os.PathLike
    ra: str | None = None
    dec: str | None = None
    id_column: str | None = None
    threshold: int | None = None
    max_bytes: int | str | None = None
    highest_order: int = 10
    lowest_order: int = 0
    name: str | None = None
    catalog_type: str | None = None
    sort_columns: list[str] | tuple[str, ...] | None = None
    compression: str | None = "zstd:3"
    drop_empty_siblings: bool = True
    input_format: str | None = None
    reader_options: dict | None = None
    columns: list[str] | tuple[str, ...] | None = None
    schema: str | os.PathLike | pa.Schema | None = None
    dtype: dict | list[str] | None = None
    batch_rows: int = 500_000
    row_group_rows: int = 1_048_576
    subtile_order_delta: int | None = None
    on_bad_rows: str = "error"
    on_duplicate_ids: str = "report"
    margin_arcsec: float | None = None
    margin_path: str | os.PathLike | None = None
    collection: bool = False
    margins: list[float] | tuple[float, ...] = ()
    indexes: list[str] | tuple[str, ...] = ()
    skymap_alt_orders: Sequence[int] = ()
    thumbnail: bool = False
    per_partition_stats: bool = False
    default_columns: Sequence[str] | None = None
    properties: dict[str, str] | None = None
    summary: bool = False
    plots: bool = False
    resume: bool | None = None
    overwrite: bool = False
    run: RunOptions = field(default_factory=RunOptions)

    def __post_init__(self) -> None:
        if isinstance(self.inputs, str | os.PathLike):
            self.inputs = [self.inputs]
        self.inputs = list(self.inputs)
        extra = (float(self.margin_arcsec),) if self.margin_arcsec else ()
        self.margins = tuple(float(m) for m in self.margins) + extra
        self.margin_arcsec = None
        self.indexes = tuple(self.indexes)
        check_optional_name(self.name, "catalog name")
        if self.collection:
            # members are directories of the collection named after the catalog (and index columns)
            check_name(self.name or self.run.path(self.output).name, "catalog name")
            for col in self.indexes:
                check_name(col, "index column name")
        elif len(self.margins) > 1:
            raise ValueError("several margins need a collection (collection=True / --collection)")
        self._check_orders()
        if self.on_bad_rows not in ("error", "quarantine"):
            raise OptionError("on_bad_rows must be 'error' or 'quarantine'")
        duplicates.check_mode(self.on_duplicate_ids)
        self._check_sizes()

    def _check_orders(self) -> None:
        check_order(self.highest_order)
        check_order(self.lowest_order)
        if self.lowest_order > self.highest_order:
            raise OptionError(f"lowest order {self.lowest_order} is above highest order {self.highest_order}")
        delta = self.subtile_order_delta
        if delta is not None and not 0 <= int(delta) <= 29 - self.highest_order:
            raise OptionError(
                f"subtile_order_delta must be in [0, {29 - self.highest_order}] (order + delta at most 29), "
                f"got {delta}"
            )

    def _check_sizes(self) -> None:
        if self.max_bytes is not None:
            if self.threshold is not None:
                raise OptionError("give either a row threshold or max_bytes, not both")
            if self.lowest_order == self.highest_order:
                raise OptionError(
                    "max_bytes has no effect on a fixed-order catalog (lowest order = highest order)"
                )
            self.max_bytes = parse_size(self.max_bytes)
        if self.threshold is not None:
            self.threshold = int(self.threshold)
        elif not self.max_bytes:
            self.threshold = 1_000_000
        if self.threshold is not None and self.threshold < 1:
            raise OptionError(f"threshold must be a positive number of rows, got {self.threshold}")
        if self.row_group_rows is None or int(self.row_group_rows) < 1:
            raise OptionError(f"row_group_rows must be at least 1, got {self.row_group_rows}")

    @property
    def margin_radius(self) -> float | None:
        """The margin of a stand-alone import (``None``: none)."""
        return self.margins[0] if self.margins else None


__all__ = ["CATALOG_TYPES", "ImportArguments"]

"""The one input model of the aggregation tools and ``healforge run``.

Inputs are files (any format of the reader registry :data:`healforge.io.readers.READERS`),
globs, directories, URLs (fsspec, with ``storage_options``), HATS catalogs, HDF5 files read through
dataset templates (``/{group}/land_ice_segments/h_li``) or in-memory tables. Each file is one
:class:`Source`, hence one unit of work for the :class:`~healforge.engine.Engine`; a HATS catalog
directory (one holding ``hats.properties``) stands for its partition files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.hats import Key
from healforge.io.readers import DEFAULT_BATCH_ROWS, detect_format, expand_inputs, iter_batches


@dataclass
class Source:
    """One unit of input: a file path, or a table held in memory (``label`` names it in errors).

    ``format`` (else detected from the suffix), ``columns`` (output name -> source column, or
    HDF5 dataset template with ``{group}`` expanded over ``groups``), reader ``options`` and
    fsspec ``storage_options`` say how a file is read.
    """

    label: str
    path: str | None = None
    table: pa.Table | None = None
    shapely_geometry: dict | None = None  # column -> shapely array, for GeoDataFrame inputs
    format: str | None = None
    columns: dict[str, str] = field(default_factory=dict)
    groups: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def batches(
        self, columns: Sequence[str] | None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[tuple[int, pa.Table]]:
        """``(first_row, table)`` batches with the (renamed) ``columns`` (all when ``None``)."""
        if self.path is not None:
            yield from self._file_batches(columns, batch_rows)
            return
        from healforge.errors import BadInputError

        table = self.table
        if columns:
            missing = [c for c in columns if c not in table.column_names]
            if missing:
                raise BadInputError(
                    f"column(s) {', '.join(map(repr, missing))} not found; available columns: "
                    f"{', '.join(table.column_names)}",
                    path=self.label,
                    column=missing[0],
                )
            table = table.select(list(columns))
        if table.num_rows == 0:
            raise BadInputError("input table has no rows", path=self.label)
        for start in range(0, table.num_rows, batch_rows):
            yield start, table.slice(start, batch_rows)

    def _file_batches(self, columns, batch_rows):
        if "reader" in self.options:  # one of healforge's own readers (zagg layouts), by name
            from healforge.registry import reader as registered_reader

            reader = registered_reader(self.options["reader"])
            yield from reader(
                self.path, self.options, batch_rows=batch_rows, storage_options=self.storage_options
            )
            return
        fmt = detect_format(self.path, self.format)
        if fmt == "hdf5" and self.columns:
            from healforge.io.hdf5 import iter_hdf5_template

            yield from iter_hdf5_template(
                self.path,
                self.columns,
                list(self.groups) or None,
                batch_rows=batch_rows,
                storage_options=self.storage_options,
                **{k: v for k, v in self.options.items() if k in ("on_missing_group", "mask_fill")},
            )
            return
        wanted = None
        if self.columns:
            wanted = list(self.columns.values())
        elif columns:
            wanted = list(columns)
        for first, table in iter_batches(
            self.path,
            columns=wanted,
            batch_rows=batch_rows,
            fmt=fmt,
            storage_options=self.storage_options or None,
            **self.options,
        ):
            if self.columns:
                table = table.rename_columns(list(self.columns))
            yield first, table


def file_sources(
    paths: Sequence[str],
    *,
    format: str | None = None,
    columns: dict[str, str] | None = None,
    groups: Sequence[str] = (),
    options: dict[str, Any] | None = None,
    storage_options: dict[str, Any] | None = None,
) -> list[Source]:
    """Sources of one input entry: its paths (files, globs, directories, URLs) expanded, all read
    the same way (lists files; reads no data)."""
    so = dict(storage_options or {})
    return [
        Source(
            label=p,
            path=p,
            format=format,
            columns=dict(columns or {}),
            groups=tuple(groups),
            options=dict(options or {}),
            storage_options=so,
        )
        for p in _expand(paths, so)
    ]


def _expand(paths: Sequence[str], storage_options: dict[str, Any]) -> list[str]:
    """Files of ``paths`` in order: a HATS catalog (local or URL) gives its partition files."""
    out: dict[str, None] = {}
    for p in paths:
        so = storage_options or None
        files = catalog_files(p, so) if is_hats_catalog(p, so) else expand_inputs([p], so)
        out.update(dict.fromkeys(files))
    return list(out)


def to_sources(inputs, storage_options: dict[str, Any] | None = None) -> list[Source]:
    """Sources from a path, a list of paths/globs/directories/HATS catalogs (local or URLs, read
    with ``storage_options``), a pyarrow Table or a (Geo)DataFrame."""
    if isinstance(inputs, pa.Table | pa.RecordBatch) or _is_frame(inputs):
        return [_table_source(inputs, "<table>")]
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    items = list(inputs)
    if items and all(isinstance(x, Source) for x in items):
        return items
    if items and all(isinstance(x, pa.Table) or _is_frame(x) for x in items):
        return [_table_source(x, f"<table {i}>") for i, x in enumerate(items)]
    so = dict(storage_options or {})
    return [Source(label=p, path=p, storage_options=so) for p in _expand([os.fspath(x) for x in items], so)]


def is_hats_catalog(path, storage_options: dict[str, Any] | None = None) -> bool:
    """Whether ``path`` (local or URL) is a HATS catalog, or a collection (read as its primary
    catalog); decided by the one opener (:func:`healforge.catalog.opener.open_path`)."""
    if not isinstance(path, str | os.PathLike):
        return False
    from healforge.catalog.opener import open_path

    return open_path(path, storage_options).is_hats


def catalog_files(path: str, storage_options: dict[str, Any] | None = None) -> list[str]:
    """The data files of a HATS catalog, one per partition (or several for a split pixel)."""
    from healforge.catalog.opener import open_path
    from healforge.errors import BadInputError
    from healforge.hats.layout import list_data_files

    table = open_path(path, storage_options).table
    files = [str(p) for p in list_data_files(table)] if table is not None else []
    if not files:
        raise BadInputError("HATS catalog has no data files", path=str(table or path))
    return files


def catalog_position_columns(inputs, storage_options: dict[str, Any] | None = None) -> tuple[str, str] | None:
    """``(hats_col_ra, hats_col_dec)`` of the HATS catalogs among ``inputs`` (None if there are none).

    Raises when catalogs disagree or a catalog does not name its position columns.
    """
    from healforge.catalog.opener import open_path
    from healforge.errors import BadInputError

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    elif isinstance(inputs, pa.Table | pa.RecordBatch) or _is_frame(inputs):
        return None
    found: set[tuple[str, str]] = set()
    for x in inputs:
        opened = open_path(x, storage_options) if isinstance(x, str | os.PathLike) else None
        if opened is not None and opened.is_hats:
            props = opened.properties
            ra, dec = props.get(Key.COL_RA), props.get(Key.COL_DEC)
            if not ra or not dec:
                raise BadInputError(
                    "HATS catalog properties name no hats_col_ra/hats_col_dec: give lon and lat", path=x
                )
            found.add((ra, dec))
    if not found:
        return None
    if len(found) > 1:
        raise BadInputError(
            f"HATS catalogs use different position columns {sorted(found)}: give lon and lat explicitly"
        )
    return found.pop()


def _is_frame(x) -> bool:
    import pandas as pd

    return isinstance(x, pd.DataFrame)


def _table_source(obj, label: str) -> Source:
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        return Source(label=label, table=obj)
    geoms = {}
    try:
        import geopandas as gpd

        if isinstance(obj, gpd.GeoDataFrame):
            for col in obj.columns:
                if isinstance(obj[col].dtype, gpd.array.GeometryDtype):
                    geoms[col] = np.asarray(obj[col].values, dtype=object)
            obj = obj.drop(columns=list(geoms))
            import pandas as pd

            obj = pd.DataFrame(obj)
    except ImportError:
        pass
    table = pa.Table.from_pandas(obj, preserve_index=False).replace_schema_metadata(None)
    if geoms:
        import shapely

        for col, arr in geoms.items():
            table = table.append_column(col, pa.array(shapely.to_wkb(arr), type=pa.binary()))
    return Source(label=label, table=table)


def default_position(
    inputs, lon: str | None, lat: str | None, geometry: str | None, storage_options: dict | None = None
) -> tuple:
    """lon/lat, defaulting to a HATS catalog's ``hats_col_ra`` / ``hats_col_dec``."""
    if geometry is not None or (lon is not None and lat is not None):
        return lon, lat
    cols = catalog_position_columns(inputs, storage_options)
    if cols is None:
        return lon, lat
    return lon or cols[0], lat or cols[1]

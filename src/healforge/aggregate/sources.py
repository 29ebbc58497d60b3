"""Inputs of the aggregation tools: files (any reader format), HATS catalogs or in-memory tables.

A HATS catalog directory (one holding ``hats.properties``) stands for its data files: each
partition file is one source, hence one unit of work for the :class:`~healforge.engine.Engine`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from healforge.io.readers import DEFAULT_BATCH_ROWS, expand_inputs, iter_batches


@dataclass
class Source:
    """One unit of input: a file path, or a table held in memory (``label`` names it in errors)."""

    label: str
    path: str | None = None
    table: pa.Table | None = None
    shapely_geometry: dict | None = None  # column -> shapely array, for GeoDataFrame inputs

    def batches(
        self, columns: Sequence[str] | None, batch_rows: int = DEFAULT_BATCH_ROWS
    ) -> Iterator[tuple[int, pa.Table]]:
        if self.path is not None:
            yield from iter_batches(self.path, columns=columns, batch_rows=batch_rows)
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


def to_sources(inputs) -> list[Source]:
    """Sources from a path, a list of paths/globs/directories, a pyarrow Table or a (Geo)DataFrame."""
    if isinstance(inputs, pa.Table | pa.RecordBatch) or _is_frame(inputs):
        return [_table_source(inputs, "<table>")]
    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    items = list(inputs)
    if items and all(isinstance(x, pa.Table) or _is_frame(x) for x in items):
        return [_table_source(x, f"<table {i}>") for i, x in enumerate(items)]
    out: list[Source] = []
    plain: list[str] = []
    for x in items:
        x = os.fspath(x)
        if is_hats_catalog(x):
            if plain:  # keep the order of the inputs
                out.extend(Source(label=p, path=p) for p in expand_inputs(plain))
                plain = []
            out.extend(Source(label=p, path=p) for p in catalog_files(x))
        else:
            plain.append(x)
    if plain:
        out.extend(Source(label=p, path=p) for p in expand_inputs(plain))
    return out


def is_hats_catalog(path) -> bool:
    """Whether ``path`` is a local HATS catalog directory (it holds ``hats.properties``) or a
    collection (read as its primary catalog)."""
    if not isinstance(path, str | os.PathLike):
        return False
    path = _primary(os.fspath(path))
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "hats.properties"))


def _primary(path: str) -> str:
    """A collection's primary catalog; any other path as it is."""
    from healforge.catalog.collection import is_collection, resolve_catalog

    return str(resolve_catalog(path)) if os.path.isdir(path) and is_collection(path) else path


def catalog_files(path: str) -> list[str]:
    """The data files of a HATS catalog, one per partition (or several for a split pixel)."""
    from healforge.catalog.format import list_data_files
    from healforge.errors import BadInputError

    path = _primary(os.fspath(path))
    files = [str(p) for p in list_data_files(path)]
    if not files:
        raise BadInputError("HATS catalog has no data files", path=path)
    return files


def catalog_position_columns(inputs) -> tuple[str, str] | None:
    """``(hats_col_ra, hats_col_dec)`` of the HATS catalogs among ``inputs`` (None if there are none).

    Raises when catalogs disagree or a catalog does not name its position columns.
    """
    from healforge.catalog.format import read_properties
    from healforge.errors import BadInputError

    if isinstance(inputs, str | os.PathLike):
        inputs = [inputs]
    elif isinstance(inputs, pa.Table | pa.RecordBatch) or _is_frame(inputs):
        return None
    found: set[tuple[str, str]] = set()
    for x in inputs:
        if is_hats_catalog(x):
            props = read_properties(_primary(os.fspath(x)))
            ra, dec = props.get("hats_col_ra"), props.get("hats_col_dec")
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


def default_position(inputs, lon: str | None, lat: str | None, geometry: str | None) -> tuple:
    """lon/lat, defaulting to a HATS catalog's ``hats_col_ra`` / ``hats_col_dec``."""
    if geometry is not None or (lon is not None and lat is not None):
        return lon, lat
    cols = catalog_position_columns(inputs)
    if cols is None:
        return lon, lat
    return lon or cols[0], lat or cols[1]

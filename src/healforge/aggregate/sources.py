"""Inputs of the aggregation tools: files (any reader format) or in-memory tables."""

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
    return [Source(label=p, path=p) for p in expand_inputs([os.fspath(x) for x in items])]


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

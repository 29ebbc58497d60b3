"""Position checks, latitude conventions and quarantine of rejected rows."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from healforge.errors import BadInputError, OptionError
from healforge.io.storage import write_parquet_table
from healforge.pixel import bad_coordinate_mask, describe_bad_coordinate, wrap_lon
from healforge.pixel.latitude import geodetic_to_authalic

ON_BAD_ROWS = ("error", "quarantine")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


@dataclass
class Rejects:
    """Rows rejected as bad input in quarantine mode, kept to be written beside the output."""

    tables: list[pa.Table] = field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(t.num_rows for t in self.tables)

    def add(
        self,
        table: pa.Table,
        rows: np.ndarray,
        path: str | None,
        reason: np.ndarray | str,
        first_row: int = 0,
    ) -> None:
        """Keep ``rows`` (indices within ``table``) with their file, row in file and reason."""
        if len(rows) == 0:
            return
        sub = table.take(pa.array(rows))
        sub = _plain(sub)
        n = sub.num_rows
        reasons = np.broadcast_to(np.asarray(reason, dtype=object), (n,))
        sub = sub.append_column("_source_file", pa.array([str(path)] * n, type=pa.string()))
        sub = sub.append_column("_source_row", pa.array(np.asarray(rows, dtype=np.int64) + first_row))
        sub = sub.append_column("_reason", pa.array(list(reasons), type=pa.string()))
        self.tables.append(sub)

    def extend(self, other: Rejects) -> None:
        self.tables.extend(other.tables)

    def write(self, path: str) -> str | None:
        """Write the rejected rows to ``path`` (nothing written when there are none)."""
        if not self.tables:
            return None
        table = pa.concat_tables(self.tables, promote_options="permissive")
        write_parquet_table(table, path)
        return path


def _plain(table: pa.Table) -> pa.Table:
    """Drop extension/geometry metadata so that rejected rows of any input concatenate."""
    return table.replace_schema_metadata(None)


def quarantine_path(output: str | os.PathLike) -> str:
    """Where rejected rows go: beside the output, ``<output>.rejected.parquet``."""
    out = str(output).rstrip("/")
    base = out[: -len(".parquet")] if out.endswith(".parquet") else out
    return f"{base}.rejected.parquet"


def positions(
    table: pa.Table,
    lon_col: str,
    lat_col: str,
    *,
    path: str | None = None,
    first_row: int = 0,
    on_bad_rows: str = "error",
    latitude: str = "spherical",
    rejects: Rejects | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Checked positions of a batch.

    Returns ``(good_rows, lon, lat)``: indices (within the batch) of the usable rows and their
    longitude wrapped to [0, 360) and latitude (authalic when asked). Bad rows raise
    :class:`BadInputError` naming file, column, row and value, or go to ``rejects``.
    """
    for col in (lon_col, lat_col):
        if col not in table.column_names:
            raise BadInputError(
                f"column {col!r} not found; available columns: {', '.join(table.column_names)}",
                path=path,
                column=col,
            )
    lon = _float_column(table, lon_col, path)
    lat = _float_column(table, lat_col, path)
    bad = bad_coordinate_mask(lon, lat)
    if bad.any():
        bad_rows = np.flatnonzero(bad)
        if on_bad_rows != "quarantine":
            i = int(bad_rows[0])
            col, val = describe_bad_coordinate(lon[i], lat[i], lon_col, lat_col)
            raise BadInputError(
                f"bad coordinate ({bad_rows.size} bad row(s) in this batch; "
                "use on_bad_rows='quarantine' / --on-bad-rows quarantine to set them aside)",
                path=path,
                column=col,
                row=first_row + i,
                value=float(val),
            )
        if rejects is not None:
            reasons = np.array(
                [f"bad {describe_bad_coordinate(lon[i], lat[i], lon_col, lat_col)[0]}" for i in bad_rows],
                dtype=object,
            )
            rejects.add(table, bad_rows, path, reasons, first_row)
    good = np.flatnonzero(~bad)
    lon_g = wrap_lon(lon[good])
    lat_g = lat[good]
    if latitude == "authalic":
        lat_g = geodetic_to_authalic(lat_g)
    return good, lon_g, lat_g


def _float_column(table: pa.Table, col: str, path: str | None) -> np.ndarray:
    arr = table.column(col)
    if pa.types.is_boolean(arr.type):
        arr = arr.cast(pa.float64())
    if not (pa.types.is_floating(arr.type) or pa.types.is_integer(arr.type) or pa.types.is_decimal(arr.type)):
        raise BadInputError(f"column {col!r} must be numeric, found type {arr.type}", path=path, column=col)
    return (
        arr.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        if arr.null_count == 0
        else (arr.cast(pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False))
    )


def value_column(table: pa.Table, col: str, path: str | None = None) -> np.ndarray:
    """A numeric column as float64 with nulls as NaN (missing or non-numeric: BadInputError)."""
    if col not in table.column_names:
        raise BadInputError(
            f"column {col!r} not found; available columns: {', '.join(table.column_names)}",
            path=path,
            column=col,
        )
    return _float_column(table, col, path)

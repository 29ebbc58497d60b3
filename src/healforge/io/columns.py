"""Column helpers shared by the readers: arrays to Arrow, and the missing-column error."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa

from healforge.errors import BadInputError


def check_columns(path: str, available: Sequence[str], wanted: Sequence[str] | None) -> None:
    """A :class:`BadInputError` naming the first of ``wanted`` that the file lacks and listing
    what it has."""
    if not wanted:
        return
    missing = [c for c in wanted if c not in available]
    if missing:
        raise BadInputError(
            f"column(s) {', '.join(map(repr, missing))} not found; available columns: {', '.join(available)}",
            path=path,
            column=missing[0],
        )


def to_arrow(col: np.ndarray) -> pa.Array:
    """A numpy column (FITS or HDF5) as an Arrow array: bytes decoded to text, native byte
    order, 2-D columns as lists."""
    arr = np.asarray(col)
    if arr.dtype.kind == "S":
        return pa.array(np.char.rstrip(np.char.decode(arr, "ascii")).astype(object), type=pa.string())
    if arr.dtype.kind == "U":
        return pa.array(arr.astype(object), type=pa.string())
    if arr.ndim > 1:
        native = arr.astype(arr.dtype.newbyteorder("="))
        return pa.array(list(native))
    return pa.array(arr.astype(arr.dtype.newbyteorder("="), copy=False))

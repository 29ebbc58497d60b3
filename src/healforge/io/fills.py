"""Fill values: numbers that mean "no value" and must never enter a statistic.

Readers honour the fills a file states (HDF5 and netCDF ``_FillValue`` / ``missing_value``
attributes, FITS ``TNULL``): such values are read as nulls, and the column's Arrow field metadata
(:data:`FILL_KEY`) lists the declared fills, so that its nulls are known to be fills and are
counted. Users add fills of their own (:class:`FillRules`: ``--fill-value COL=V``,
``--sentinel-above X``), which the aggregation core turns into missing values
(:func:`mask_fills`) before any filter or statistic.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.errors import OptionError

#: Arrow field metadata key: JSON list of the fill values a file declares for the column.
FILL_KEY = b"healforge_fill"


def declared_fills(attrs: Mapping[str, Any]) -> list[float]:
    """Fill values stated by HDF5 / netCDF attributes (``_FillValue``, ``missing_value``)."""
    out: list[float] = []
    for key in ("_FillValue", "missing_value"):
        if key in attrs:
            for v in np.asarray(attrs[key]).ravel():
                if np.issubdtype(np.asarray(v).dtype, np.number) and float(v) not in out:
                    out.append(float(v))
    return out


def annotated(data: Mapping[str, Any], fills: Mapping[str, Sequence[float]]) -> pa.Table:
    """A table of ``data`` (numpy or Arrow arrays) in which the values of a column equal to one
    of its ``fills`` are nulls, and that column's field metadata lists them."""
    arrays, fields = [], []
    for name, values in data.items():
        declared = [float(v) for v in fills.get(name) or ()]
        arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
        if declared and (pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type)):
            v = np.asarray(arr.to_numpy(zero_copy_only=False))
            hit = np.zeros(v.shape, dtype=bool)
            for f in declared:
                hit |= v == np.asarray(f, dtype=v.dtype)
            arr = pa.array(v, mask=hit | np.asarray(arr.is_null().to_numpy(zero_copy_only=False)))
        meta = {FILL_KEY: json.dumps(declared).encode()} if declared else None
        arrays.append(arr)
        fields.append(pa.field(name, arr.type, metadata=meta))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def has_declared_fills(table: pa.Table, name: str) -> bool:
    """Whether column ``name`` came from a reader that read its declared fills as nulls."""
    return FILL_KEY in (table.schema.field(name).metadata or {})


@dataclass(frozen=True)
class FillRules:
    """Fill values given by the user: per column (``values``) and a magnitude above which any
    value is a sentinel (``sentinel_above``, healpyxel's ``sentinel_threshold``). ``drop_rows``:
    a row with a fill in any value column is left out whole (zagg files, whose numpy meanings
    would turn a missing value into a NaN statistic), instead of that one value."""

    values: tuple[tuple[str, tuple[float, ...]], ...] = ()
    sentinel_above: float | None = None
    drop_rows: bool = False

    @classmethod
    def parse(
        cls,
        values: Mapping[str, Any] | Sequence[str] | None = None,
        sentinel_above: float | None = None,
        drop_rows: bool = False,
    ) -> FillRules:
        """From ``{column: value or [values]}`` or ``["COLUMN=VALUE", ...]`` and a threshold."""
        pairs: dict[str, list[float]] = {}
        items = values.items() if isinstance(values, Mapping) else [_split(s) for s in values or ()]
        for column, given in items:
            for v in given if isinstance(given, list | tuple) else [given]:
                try:
                    number = float(v)
                except (TypeError, ValueError):
                    raise OptionError(f"fill value {v!r} of column {column!r} is not a number") from None
                pairs.setdefault(str(column), []).append(number)
        if sentinel_above is not None:
            sentinel_above = float(sentinel_above)
            if not (sentinel_above > 0 and math.isfinite(sentinel_above)):
                raise OptionError(f"sentinel threshold must be a positive number, got {sentinel_above!r}")
        return cls(tuple((c, tuple(v)) for c, v in pairs.items()), sentinel_above, bool(drop_rows))

    def of(self, column: str) -> tuple[float, ...]:
        return next((v for c, v in self.values if c == column), ())

    def describe(self) -> dict[str, Any]:
        """For the product metadata."""
        out: dict[str, Any] = {}
        if self.values:
            out["fill_values_given"] = {c: list(v) for c, v in self.values}
        if self.sentinel_above is not None:
            out["sentinel_above"] = self.sentinel_above
        if self.drop_rows:
            out["fill_rows_dropped"] = True
        return out


def _split(spec: str) -> tuple[str, str]:
    if "=" not in str(spec):
        raise OptionError(f"fill value {spec!r} must be COLUMN=VALUE")
    column, value = str(spec).split("=", 1)
    return column.strip(), value.strip()


def mask_fills(
    values: np.ndarray, fills: Sequence[float], sentinel_above: float | None, dtype: np.dtype | None = None
) -> tuple[np.ndarray, int]:
    """``values`` as float64 with every fill NaN, and how many values were fills.

    A fill matches as the column's own type holds it (``dtype``: a float32 column's fill
    3.4028235e38 is float32's largest value); the sentinel test is ``abs(value) > sentinel``."""
    v = np.asarray(values)
    mask = np.zeros(v.shape, dtype=bool)
    for f in fills:
        exact = np.asarray(f, dtype=dtype).astype(np.float64) if dtype is not None else np.float64(f)
        mask |= v == exact
    if sentinel_above is not None:
        with np.errstate(invalid="ignore"):
            mask |= np.abs(v) > sentinel_above
    n = int(mask.sum())
    if not n:
        return v, 0
    out = v.astype(np.float64, copy=True)
    out[mask] = np.nan
    return out, n

"""Fill values: numbers that mean "no value" and must never enter a statistic.

Readers declare the fills a file states (HDF5 and netCDF ``_FillValue`` / ``missing_value``
attributes, FITS ``TNULL``) in the Arrow field metadata of the column (:data:`FILL_KEY`), without
changing the values; users add fills of their own (:class:`FillRules`: ``--fill-value COL=V``,
``--sentinel-above X``). The aggregation core turns both into missing values before any statistic
(:func:`mask_fills`) and counts them.
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


def annotated(data: Mapping[str, pa.Array], fills: Mapping[str, Sequence[float]]) -> pa.Table:
    """A table of ``data`` whose columns named in ``fills`` carry their declared fill values."""
    fields = []
    for name, arr in data.items():
        meta = {FILL_KEY: json.dumps([float(v) for v in fills[name]]).encode()} if fills.get(name) else None
        fields.append(pa.field(name, arr.type, metadata=meta))
    return pa.Table.from_arrays(list(data.values()), schema=pa.schema(fields))


def column_fills(table: pa.Table, name: str) -> list[float]:
    """The fill values a reader found declared for column ``name`` (empty when none)."""
    meta = table.schema.field(name).metadata or {}
    return json.loads(meta[FILL_KEY]) if FILL_KEY in meta else []


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

"""The healforge pipeline schema (``healforge run PIPELINE.yaml``): keys, types, defaults.

The configuration objects built by :mod:`healforge.run.validate`; see :mod:`healforge.run`
for the YAML file. Statistic names are those of :mod:`healforge.aggregate.statistics` (aliases
included); expressions are those of :mod:`healforge.expressions`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from healforge.aggregate.statistics import ALIASES, PARAMETERS, REGISTERED, canonical_name, quantile_level
from healforge.errors import HealforgeError
from healforge.expressions import CellExpression, RowExpression
from healforge.io.fills import FillRules

ASSIGNMENT_MODES = ("points", "strict", "center", "fuzzy", "overlap")
ON_BAD_ROWS = ("error", "quarantine")
DTYPES = ("float64", "float32", "int64", "int32")
# Built-in statistics (canonical names of the vocabulary) and their parameters: name -> (allowed, required).
FUNCTIONS: dict[str, tuple[set[str], set[str]]] = PARAMETERS
NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TOP_KEYS = (
    "name",
    "inputs",
    "filter",
    "coordinates",
    "assignment",
    "statistics",
    "outputs",
    "storage_options",
    "exact",
    "fills",
)
INPUT_KEYS = ("paths", "format", "groups", "columns", "options", "storage_options")
STAT_KEYS = ("function", "column", "expression", "parameters", "dtype")
EXACT_KEYS = ("work_dir", "shard_order")
ASSIGNMENT_KEYS = ("order", "nside", "mode", "lon_convention", "latitude", "on_bad_rows", "radius_km")


def builtin_parameters(func: str) -> tuple[set[str], set[str]] | None:
    """``(allowed, required)`` parameters of a built-in statistic name or alias (``None``: a user
    function)."""
    if func in PARAMETERS:
        return PARAMETERS[func]
    if func in ALIASES:
        return PARAMETERS[ALIASES[func]]
    canon = canonical_name(func)
    if canon == "quantile" and quantile_level(func) is not None:
        return set(), set()
    if canon in REGISTERED:
        return set(), set()
    return None


class ConfigError(HealforgeError, ValueError):
    """A pipeline configuration that cannot be run; ``errors`` lists ``(key path, message)``."""

    def __init__(self, errors: Sequence[tuple[str, str]], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        lines = [f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}" for key, msg in self.errors]
        head = "invalid pipeline configuration" if len(lines) > 1 else ""
        super().__init__("\n  ".join([head, *lines]) if head else lines[0])


def resolve_callable(name: str) -> Callable:
    """A user statistic function by registered numpy name (:mod:`healforge.registry`;
    ``ValueError`` otherwise, and nothing is imported)."""
    from healforge.registry import user_statistic

    return user_statistic(name)[1]


@dataclass(frozen=True)
class InputSpec:
    """One input entry: files, format and column mapping."""

    paths: tuple[str, ...]
    format: str | None = None
    groups: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def sources(self) -> list:
        """One :class:`~healforge.aggregate.sources.Source` per file (globs and directories
        expanded; lists files, reads no data)."""
        from healforge.aggregate.sources import file_sources

        return file_sources(
            self.paths,
            format=self.format,
            columns=self.columns,
            groups=self.groups,
            options=self.options,
            storage_options=self.storage_options,
        )

    def files(self) -> list[str]:
        """The input files (globs and directories expanded)."""
        return [s.path for s in self.sources()]

    def iter_tables(self, batch_rows: int = 1_000_000) -> Iterator[tuple[str, int, Any]]:
        """Yield ``(path, first_row, pyarrow table)`` for every input file, columns renamed as configured."""
        for source in self.sources():
            for first, table in source.batches(None, batch_rows):
                yield source.path, first, table


@dataclass(frozen=True)
class Coordinates:
    lon: str = "lon"
    lat: str = "lat"
    geometry: str | None = None


@dataclass(frozen=True)
class Assignment:
    order: int
    mode: str = "points"
    lon_convention: str = "0_360"
    latitude: str = "spherical"
    on_bad_rows: str = "error"
    radius_km: float | None = None  # gives cell expressions' ``area`` in km2 (default steradians)


@dataclass(frozen=True)
class Statistic:
    """One output variable: ``function`` applied per cell to ``column`` or ``expression`` (a row
    expression), or a cell expression ``cell`` (function ``expression``)."""

    name: str
    function: str
    column: str | None = None
    expression: RowExpression | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float64"
    cell: CellExpression | None = None

    @property
    def weight(self) -> RowExpression | None:
        w = self.parameters.get("weight")
        return w if isinstance(w, RowExpression) else None

    @property
    def output_names(self) -> list[str]:
        q = self.parameters.get("q")
        if canonical_name(self.function) == "quantile" and isinstance(q, list | tuple):
            return [f"{self.name}_p{100 * float(v):g}" for v in q]
        return [self.name]

    def values(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The per-row input values of this statistic (column or expression) as float64."""
        if self.expression is not None:
            return np.asarray(self.expression.evaluate(columns), dtype=np.float64)
        if self.column is None:
            n = len(next(iter(columns.values())))
            return np.ones(n)
        col = columns[self.column]
        return np.asarray(col.to_numpy() if hasattr(col, "to_numpy") else col, dtype=np.float64)


@dataclass(frozen=True)
class ZarrOutput:
    path: str
    orders: tuple[int, ...]
    chunk_cells: int = 1 << 18


@dataclass(frozen=True)
class ParquetOutput:
    path: str
    orders: tuple[int, ...]


@dataclass(frozen=True)
class GeoParquetOutput:
    path: str
    order: int
    edge_points: int = 1


@dataclass(frozen=True)
class PlotOutput:
    path: str
    variable: str
    order: int
    projection: str = "mollweide"
    center: tuple[float, float] | None = None
    cmap: str = "viridis"
    range: tuple[float, float] | None = None
    bounding_lat: float | None = None
    width: int = 2000
    frame: str | None = None
    scale: str = "linear"
    extent: float | None = None
    graticule: float | None = None


@dataclass(frozen=True)
class Outputs:
    state: str | None = None
    zarr: ZarrOutput | None = None
    parquet: ParquetOutput | None = None
    geoparquet: GeoParquetOutput | None = None
    plots: tuple[PlotOutput, ...] = ()
    storage_options: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> str:
        """The path the run's side products are named after: the state, else the Zarr store, the
        Parquet map, the GeoParquet map or the first plot."""
        for path in (self.state, self.zarr and self.zarr.path, self.parquet and self.parquet.path):
            if path:
                return str(path).rstrip("/")
        return self.geoparquet.path if self.geoparquet else self.plots[0].path

    @property
    def orders(self) -> list[int]:
        """Every order some output needs, ascending."""
        found = set()
        if self.zarr:
            found.update(self.zarr.orders)
        if self.parquet:
            found.update(self.parquet.orders)
        if self.geoparquet:
            found.add(self.geoparquet.order)
        found.update(p.order for p in self.plots)
        return sorted(found)


@dataclass(frozen=True)
class Exact:
    """``exact:``: exact statistics at scale, rows shuffled by shard through ``work_dir``
    (default: beside the first output, ``.work``) with shards at ``shard_order``
    (see :mod:`healforge.aggregate.shuffle`)."""

    work_dir: str | None = None
    shard_order: int | None = None


def check_exact(c: Any, value: Any, base_dir: str | None, coarsest: int) -> Exact | None:
    """The ``exact`` key: ``true``, ``false`` or ``{work_dir, shard_order}``; problems are
    recorded on the validation checker ``c`` (:class:`healforge.run.validate.Checker`)."""
    if value is None or value is False:
        return None
    if value is True:
        return Exact()
    if not isinstance(value, Mapping):
        c.error("exact", f"must be true, false or a mapping with keys {', '.join(EXACT_KEYS)}; got {value!r}")
        return None
    d = c.mapping(value, "exact", EXACT_KEYS)
    work = c.string(d["work_dir"], "exact.work_dir") if d.get("work_dir") is not None else None
    if work and "://" not in work and base_dir and not os.path.isabs(work):
        work = os.path.normpath(os.path.join(base_dir, os.path.expanduser(work)))
    shard = None
    if d.get("shard_order") is not None:
        shard = c.integer(d["shard_order"], "exact.shard_order", 0, coarsest, " (the coarsest output order)")
    return Exact(work, shard)


@dataclass(frozen=True)
class PipelineConfig:
    """A validated pipeline; build with :func:`load_pipeline`."""

    name: str
    inputs: tuple[InputSpec, ...]
    coordinates: Coordinates
    assignment: Assignment
    statistics: tuple[Statistic, ...]
    outputs: Outputs
    filter: RowExpression | None = None
    source: str | None = None
    exact: Exact | None = None
    fills: FillRules = FillRules()

    def with_storage_options(self, options: Mapping[str, Any] | None) -> PipelineConfig:
        """This configuration with ``options`` (e.g. ``--storage-options``) for every input and
        the outputs that set none of their own."""
        if not options:
            return self
        inputs = tuple(
            s if s.storage_options else replace(s, storage_options=dict(options)) for s in self.inputs
        )
        outputs = self.outputs
        if not outputs.storage_options:
            outputs = replace(outputs, storage_options=dict(options))
        return replace(self, inputs=inputs, outputs=outputs)

    @property
    def min_order(self) -> int:
        """Coarsest order any output needs (the pyramid goes down to it)."""
        return min(self.outputs.orders or [self.assignment.order])

    @property
    def variables(self) -> list[str]:
        return [n for s in self.statistics for n in s.output_names]

    @property
    def needed_columns(self) -> set[str]:
        """Input columns the pipeline reads (coordinates, filter, statistics, weights)."""
        cols = {self.coordinates.lon, self.coordinates.lat}
        if self.coordinates.geometry:
            cols.add(self.coordinates.geometry)
        if self.filter:
            cols |= self.filter.names
        for s in self.statistics:
            if s.column:
                cols.add(s.column)
            if s.expression:
                cols |= s.expression.names
            if s.weight:
                cols |= s.weight.names
            if s.cell:
                for a in s.cell.aggregates:
                    cols |= a.row.names
        return cols

    def filter_mask(self, columns: Mapping[str, Any]) -> np.ndarray | None:
        """Boolean mask of rows passing the quality filter (``None`` without a filter)."""
        if self.filter is None:
            return None
        return np.asarray(self.filter.evaluate(columns), dtype=bool)

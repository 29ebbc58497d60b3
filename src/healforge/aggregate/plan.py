"""One description of an aggregation, built by every front end and executed by :mod:`~.core`.

A :class:`Plan` says which inputs are read, which rows pass the quality ``filter``, how rows are
assigned to cells (:class:`Assignment`), which **state columns** (row expression x weight) are
accumulated, and which statistics (:class:`PlanStatistic`, vocabulary of
:mod:`~.statistics`) and cell expressions (:class:`CellStatistic`) are computed from them.

The CLI commands (``aggregate``, ``accumulate``, ``finalize``) build a plan with
:class:`PlanBuilder`; ``healforge run`` builds one from its YAML file (:mod:`healforge.run.load`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from healforge.aggregate.assign import Spec
from healforge.aggregate.coords import ON_BAD_ROWS, check_choice
from healforge.aggregate.sketch import DEFAULT_DELTA
from healforge.aggregate.sources import Source
from healforge.aggregate.statistics import Stat
from healforge.errors import OptionError
from healforge.expressions import CellExpression, RowExpression, parse_cell, parse_row
from healforge.io.fills import FillRules
from healforge.pixel.latitude import LATITUDES, LON_CONVENTIONS

ROWS_KEY = "_rows"


@dataclass(frozen=True)
class StateColumn:
    """One column of the state: the values of the row expression ``values`` (``None``: row
    counts) with weights ``weight`` (``None``: unit or area weights)."""

    key: str
    values: RowExpression | None
    weight: RowExpression | None = None

    def describe(self) -> dict:
        return {
            "key": self.key,
            "values": self.values.source if self.values is not None else None,
            "weight": self.weight.source if self.weight is not None else None,
        }


@dataclass(frozen=True)
class PlanStatistic:
    """Output variable ``name``: statistic ``stat`` of state column ``column``."""

    name: str
    column: str
    stat: Stat
    dtype: str = "float64"


@dataclass(frozen=True)
class CellStatistic:
    """Output variable ``name``: a cell expression; ``columns`` maps each aggregate's row source to
    the state column holding its values."""

    name: str
    expression: CellExpression
    columns: dict[str, str]
    dtype: str = "float64"


@dataclass(frozen=True)
class Assignment:
    """How rows become cells: points (``lon``/``lat``) or footprints (``geometry`` with ``mode``
    strict/center or fuzzy/overlap) at ``order``, with the coordinate conventions."""

    order: int
    lon: str | None = None
    lat: str | None = None
    geometry: str | None = None
    mode: str = "strict"
    lon_convention: str = "0_360"
    latitude: str = "spherical"
    on_bad_rows: str = "error"

    def __post_init__(self):
        check_choice("lon_convention", self.lon_convention, LON_CONVENTIONS)
        check_choice("latitude", self.latitude, LATITUDES)
        check_choice("on_bad_rows", self.on_bad_rows, ON_BAD_ROWS)

    @property
    def fuzzy(self) -> bool:
        """Whether a row spreads over several cells with area weights."""
        return self.geometry is not None and self.mode in ("fuzzy", "overlap")

    def spec(self) -> Spec:
        return Spec(
            lon=None if self.geometry else self.lon,
            lat=None if self.geometry else self.lat,
            geometry=self.geometry,
            mode=self.mode,
            latitude=self.latitude,
            on_bad_rows=self.on_bad_rows,
        )

    def conventions(self) -> dict[str, str]:
        return {"lon_convention": self.lon_convention, "latitude": self.latitude}


@dataclass(frozen=True)
class Plan:
    """An aggregation: inputs, filter, assignment, state columns, statistics (see module doc)."""

    sources: tuple[Source, ...]
    assignment: Assignment | None
    state_columns: tuple[StateColumn, ...]
    statistics: tuple[PlanStatistic, ...] = ()
    cell_statistics: tuple[CellStatistic, ...] = ()
    filter: RowExpression | None = None
    delta: float = DEFAULT_DELTA
    ddof: int = 1
    min_count: int = 1
    radius_km: float | None = None
    name: str = "aggregate"
    fills: FillRules = FillRules()

    @property
    def keys(self) -> list[str]:
        return [c.key for c in self.state_columns]

    @property
    def variables(self) -> list[str]:
        return [s.name for s in self.statistics] + [c.name for c in self.cell_statistics]

    @property
    def value_names(self) -> list[str]:
        """Input columns the state columns, weights and filter read."""
        names: list[str] = []
        for c in self.state_columns:
            for e in (c.values, c.weight):
                if e is not None:
                    names.extend(sorted(e.names))
        if self.filter is not None:
            names.extend(sorted(self.filter.names))
        return list(dict.fromkeys(names))

    @property
    def read_columns(self) -> list[str] | None:
        """Columns to read from each source (``None``: all, to keep whole rejected rows)."""
        a = self.assignment
        if a is not None and a.on_bad_rows == "quarantine":
            return None
        pos = [] if a is None else a.spec().columns
        return list(dict.fromkeys(pos + self.value_names))

    def describe(self) -> dict[str, Any]:
        """What the accumulated states depend on (JSON-able; compared on resume)."""
        a = self.assignment
        return {
            "filter": self.filter.source if self.filter is not None else None,
            "assignment": None
            if a is None
            else {
                "order": a.order,
                "lon": a.lon,
                "lat": a.lat,
                "geometry": a.geometry,
                "mode": a.mode,
                "lon_convention": a.lon_convention,
                "latitude": a.latitude,
                "on_bad_rows": a.on_bad_rows,
            },
            "state_columns": [c.describe() for c in self.state_columns],
        }


@dataclass
class PlanBuilder:
    """Collects state columns (deduplicated by values x weight) and the statistics reading them."""

    columns: dict[tuple, StateColumn] = field(default_factory=dict)
    statistics: list[PlanStatistic] = field(default_factory=list)
    cells: list[CellStatistic] = field(default_factory=list)

    def column(
        self,
        values: str | RowExpression | None,
        weight: str | RowExpression | None = None,
        key: str | None = None,
    ) -> str:
        """The key of the state column of ``values`` x ``weight`` (added when new)."""
        v = parse_row(values) if isinstance(values, str) else values
        w = parse_row(weight) if isinstance(weight, str) else weight
        ident = (v.source if v is not None else None, w.source if w is not None else None)
        if ident not in self.columns:
            if key is None:
                key = ident[0] if ident[0] is not None else ROWS_KEY
                if w is not None and any(c.key == key for c in self.columns.values()):
                    key = f"{key}@{w.source}"
            self.columns[ident] = StateColumn(key, v, w)
        return self.columns[ident].key

    def statistic(self, name: str, key: str, stat: Stat, dtype: str = "float64") -> None:
        self.statistics.append(PlanStatistic(name, key, stat, dtype))

    def cell_expression(
        self,
        name: str,
        src: str | CellExpression,
        weight: RowExpression | None = None,
        dtype: str = "float64",
    ) -> CellStatistic:
        """Add a cell expression; each aggregate's row expression becomes (or reuses) a state column
        named by its source text."""
        expr = parse_cell(src) if isinstance(src, str) else src
        keys = {}
        existing = {c.key: c for c in self.columns.values()}
        for a in expr.aggregates:
            src_row = a.row.source
            if src_row in existing:
                keys[src_row] = src_row
            else:
                keys[src_row] = self.column(a.row, weight, key=src_row)
                existing = {c.key: c for c in self.columns.values()}
        cs = CellStatistic(name, expr, keys, dtype)
        self.cells.append(cs)
        return cs

    def build(self, sources: Sequence[Source], assignment: Assignment | None, **kwargs: Any) -> Plan:
        return Plan(
            sources=tuple(sources),
            assignment=assignment,
            state_columns=tuple(self.columns.values()),
            statistics=tuple(self.statistics),
            cell_statistics=tuple(self.cells),
            **kwargs,
        )


def parse_cell_specs(specs: Sequence[str] | dict[str, str] | None) -> dict[str, CellExpression]:
    """``["NAME=EXPR", ...]`` or ``{NAME: EXPR}`` as parsed cell expressions."""
    if not specs:
        return {}
    if isinstance(specs, dict):
        items = list(specs.items())
    else:
        items = []
        for s in specs:
            if "=" not in s:
                raise OptionError(f"cell expression {s!r} must be NAME=EXPRESSION")
            name, expr = s.split("=", 1)
            items.append((name.strip(), expr.strip()))
    return {name: parse_cell(expr) for name, expr in items}

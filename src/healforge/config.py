"""Validated YAML pipeline configuration (``healforge run PIPELINE.yaml``).

A pipeline goes from raw files to finished map products. Every key is checked before any data is
read; all problems are reported at once, each naming the file and the key path (for example
``pipeline.yaml: outputs.zarr.orders[1]: ...``). Relative local paths are resolved against the
directory of the YAML file. Example::

    name: atl06-elevation
    inputs:
      - paths: ["granules/*.h5"]            # local paths, globs or s3:// URLs
        format: hdf5                        # csv | parquet | geoparquet | fits | hdf5 (from suffix)
        groups: [gt1l, gt1r, gt2l, gt2r, gt3l, gt3r]   # or a pattern such as "gt*"
        columns:                            # output column -> dataset template / source column
          latitude: /{group}/land_ice_segments/latitude
          longitude: /{group}/land_ice_segments/longitude
          h_li: /{group}/land_ice_segments/h_li
          h_li_sigma: /{group}/land_ice_segments/h_li_sigma
          quality: /{group}/land_ice_segments/atl06_quality_summary
        storage_options: {anon: true}       # fsspec options (s3 endpoint, credentials)
    filter: "quality == 0 and h_li_sigma > 0"
    coordinates: {lon: longitude, lat: latitude}
    assignment: {order: 12, mode: points, lon_convention: "-180_180", latitude: authalic}
    statistics:
      h_mean: {function: mean, column: h_li}
      h_wmean: {function: weighted_mean, column: h_li, parameters: {weight: "1 / h_li_sigma**2"}}
      h_q: {function: quantile, column: h_li, parameters: {q: [0.1, 0.5, 0.9]}}
      h_span: {function: numpy.ptp, column: h_li, dtype: float32}
      n: {function: count}
    outputs:
      state: out/state                      # streaming state: reruns resume from it
      zarr: {path: out/atl06.zarr, orders: [12, 10, 8]}
      parquet: {path: out/atl06.parquet, orders: [12]}
      geoparquet: {path: out/atl06.geoparquet, order: 8}
      plots:
        - {path: out/h.png, variable: h_mean, order: 10, projection: polar-south, range: [0, 3000]}

Statistic variables: a quantile with a list ``q`` gives one variable per level, named
``{name}_p{100 q}`` (``h_q_p10``, ``h_q_p50``, ``h_q_p90``); every other statistic gives ``{name}``.
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.errors import HealforgeError
from healforge.expressions import ExpressionError, RowExpression, parse_filter, parse_row
from healforge.healpix import MAX_ORDER
from healforge.io.readers import SUFFIXES as READER_SUFFIXES

INPUT_FORMATS = ("csv", "parquet", "geoparquet", "fits", "hdf5")
ASSIGNMENT_MODES = ("points", "strict", "center", "fuzzy", "overlap")
LON_CONVENTIONS = ("0_360", "-180_180")
LATITUDES = ("spherical", "authalic")
ON_BAD_ROWS = ("error", "quarantine")
PROJECTIONS = ("mollweide", "polar-north", "polar-south", "orthographic")
DTYPES = ("float64", "float32", "int64", "int32")
# Built-in statistics and their parameters: name -> (allowed parameters, required parameters).
FUNCTIONS: dict[str, tuple[set[str], set[str]]] = {
    "count": (set(), set()),
    "sum": (set(), set()),
    "mean": (set(), set()),
    "var": ({"ddof"}, set()),
    "std": ({"ddof"}, set()),
    "min": (set(), set()),
    "max": (set(), set()),
    "median": (set(), set()),
    "quantile": ({"q"}, {"q"}),
    "mad": (set(), set()),
    "robust_std": (set(), set()),
    "weighted_mean": ({"weight"}, set()),
    "weighted_var": ({"weight", "ddof"}, set()),
    "weighted_std": ({"weight", "ddof"}, set()),
}
_SUFFIXES = {**READER_SUFFIXES, ".geoparquet": "geoparquet"}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ConfigError(HealforgeError, ValueError):
    """A pipeline configuration that cannot be run; ``errors`` lists ``(key path, message)``."""

    def __init__(self, errors: Sequence[tuple[str, str]], source: str | None = None):
        self.errors = list(errors)
        self.source = source
        prefix = f"{source}: " if source else ""
        lines = [f"{prefix}{key}: {msg}" if key else f"{prefix}{msg}" for key, msg in self.errors]
        head = "invalid pipeline configuration" if len(lines) > 1 else ""
        super().__init__("\n  ".join([head, *lines]) if head else lines[0])


# ---------------------------------------------------------------------------------------------
# Configuration objects


@dataclass(frozen=True)
class InputSpec:
    """One input entry: files, format and column mapping."""

    paths: tuple[str, ...]
    format: str | None = None
    groups: tuple[str, ...] = ()
    columns: dict[str, str] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    storage_options: dict[str, Any] = field(default_factory=dict)

    def files(self) -> list[str]:
        """Expand globs and directories (lists files; reads no data)."""
        import fsspec

        out: list[str] = []
        for p in self.paths:
            fs, fs_path = fsspec.core.url_to_fs(p, **self.storage_options)
            proto = fs.protocol[0] if isinstance(fs.protocol, tuple) else fs.protocol
            prefix = "" if proto in ("file", "local") else f"{proto}://"
            if any(ch in fs_path for ch in "*?["):
                matches = sorted(fs.glob(fs_path))
            elif fs.isdir(fs_path):
                matches = sorted(
                    f for f in fs.find(fs_path) if not os.path.basename(f).startswith((".", "_"))
                )
            else:
                matches = [fs_path]
            if not matches:
                from healforge.errors import BadInputError

                raise BadInputError("no input files match", path=p)
            out.extend(prefix + m for m in matches if prefix + m not in out)
        return out

    def format_of(self, path: str) -> str:
        if self.format:
            return self.format
        name = path.lower()
        for suffix in sorted(_SUFFIXES, key=len, reverse=True):
            if name.endswith(suffix):
                return _SUFFIXES[suffix]
        raise ValueError(f"cannot tell the format of {path}")

    def iter_tables(self, batch_rows: int = 1_000_000) -> Iterator[tuple[str, int, Any]]:
        """Yield ``(path, first_row, pyarrow table)`` for every input file, columns renamed as configured."""
        for path in self.files():
            for first, table in self.iter_file(path, batch_rows):
                yield path, first, table

    def iter_file(self, path: str, batch_rows: int = 1_000_000) -> Iterator[tuple[int, Any]]:
        """Yield ``(first_row, pyarrow table)`` batches of one input file, columns renamed as configured."""
        from healforge.io.readers import iter_batches

        fmt = self.format_of(path)
        if "reader" in self.options:  # a reader function named by dotted path (e.g. zagg layouts)
            module, _, attr = str(self.options["reader"]).partition(":")
            reader = getattr(importlib.import_module(module), attr)
            yield from reader(path, self.options, batch_rows=batch_rows, storage_options=self.storage_options)
            return
        if fmt == "hdf5" and self.columns:
            from healforge.io.hdf5 import iter_hdf5_template

            yield from iter_hdf5_template(
                path,
                self.columns,
                list(self.groups) or None,
                batch_rows=batch_rows,
                storage_options=self.storage_options,
                **{k: v for k, v in self.options.items() if k in ("on_missing_group", "mask_fill")},
            )
            return
        fmt = "parquet" if fmt == "geoparquet" else fmt
        sources = list(self.columns.values()) or None
        for first, table in iter_batches(
            path,
            columns=sources,
            batch_rows=batch_rows,
            fmt=fmt,
            storage_options=self.storage_options or None,
            **self.options,
        ):
            if self.columns:
                table = table.rename_columns(list(self.columns))
            yield first, table


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


@dataclass(frozen=True)
class Statistic:
    """One output variable: ``function`` applied per cell to ``column`` or ``expression``."""

    name: str
    function: str
    column: str | None = None
    expression: RowExpression | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    dtype: str = "float64"

    @property
    def weight(self) -> RowExpression | None:
        w = self.parameters.get("weight")
        return w if isinstance(w, RowExpression) else None

    @property
    def output_names(self) -> list[str]:
        q = self.parameters.get("q")
        if self.function == "quantile" and isinstance(q, list | tuple):
            return [f"{self.name}_p{100 * float(v):g}" for v in q]
        return [self.name]

    def resolve_function(self) -> Callable | None:
        """The callable of a user function (numpy name or dotted path); ``None`` for built-ins."""
        if self.function in FUNCTIONS:
            return None
        return _resolve_callable(self.function)

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


@dataclass(frozen=True)
class Outputs:
    state: str | None = None
    zarr: ZarrOutput | None = None
    parquet: ParquetOutput | None = None
    geoparquet: GeoParquetOutput | None = None
    plots: tuple[PlotOutput, ...] = ()
    storage_options: dict[str, Any] = field(default_factory=dict)

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
        return cols

    def filter_mask(self, columns: Mapping[str, Any]) -> np.ndarray | None:
        """Boolean mask of rows passing the quality filter (``None`` without a filter)."""
        if self.filter is None:
            return None
        return np.asarray(self.filter.evaluate(columns), dtype=bool)


# ---------------------------------------------------------------------------------------------
# Validation


class _Checker:
    def __init__(self):
        self.errors: list[tuple[str, str]] = []

    def error(self, key: str, message: str) -> None:
        self.errors.append((key, message))

    def mapping(
        self, value: Any, key: str, allowed: Sequence[str], required: Sequence[str] = ()
    ) -> dict | None:
        if not isinstance(value, Mapping):
            self.error(key, f"must be a mapping with keys {', '.join(allowed)}; got {_kind(value)}")
            return None
        for k in value:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(_join(key, k), f"unknown key{hint} (allowed: {', '.join(allowed)})")
        for k in required:
            if k not in value or value[k] is None:
                self.error(_join(key, k), "is required")
        return dict(value)

    def string(self, value: Any, key: str, choices: Sequence[str] | None = None) -> str | None:
        if not isinstance(value, str) or not value:
            self.error(key, f"must be a non-empty string; got {_kind(value)}")
            return None
        if choices is not None and value not in choices:
            close = difflib.get_close_matches(value, choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            self.error(key, f"must be one of {', '.join(choices)}; got {value!r}{hint}")
            return None
        return value

    def integer(self, value: Any, key: str, lo: int, hi: int, what: str = "") -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(key, f"must be an integer in [{lo}, {hi}]{what}; got {_kind(value)}")
            return None
        if not lo <= value <= hi:
            self.error(key, f"must be an integer in [{lo}, {hi}]{what}; got {value}")
            return None
        return value

    def number(self, value: Any, key: str) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.error(key, f"must be a number; got {_kind(value)}")
            return None
        return float(value)

    def number_pair(self, value: Any, key: str, shape: str) -> tuple[float | None, float | None] | None:
        """A ``[a, b]`` list of two numbers as a tuple (``None`` for an item that is no number);
        ``None`` when the value is absent, or not such a list (an error naming ``shape``, e.g.
        ``"[lon, lat]"``)."""
        if value is None:
            return None
        if not isinstance(value, list) or len(value) != 2:
            self.error(key, f"must be {shape}; got {_kind(value)}")
            return None
        return self.number(value[0], f"{key}[0]"), self.number(value[1], f"{key}[1]")

    def string_list(self, value: Any, key: str) -> list[str]:
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not value:
            self.error(key, f"must be a string or a non-empty list of strings; got {_kind(value)}")
            return []
        out = []
        for i, v in enumerate(value):
            s = self.string(v, f"{key}[{i}]")
            if s is not None:
                out.append(s)
        return out

    def expression(
        self, value: Any, key: str, known: set[str] | None, parse: Callable = parse_row
    ) -> RowExpression | None:
        try:
            expr = parse(value)
        except ExpressionError as exc:
            self.error(key, str(exc))
            return None
        self.columns_known(expr.names, key, known)
        return expr

    def columns_known(self, names, key: str, known: set[str] | None) -> None:
        if known is None:
            return
        for name in sorted(names):
            if name not in known:
                close = difflib.get_close_matches(name, sorted(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.error(
                    key,
                    f"column {name!r} is not an input column{hint} (inputs give: {', '.join(sorted(known))})",
                )


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return (
        f"{type(value).__name__} {value!r}" if not isinstance(value, Mapping | list) else type(value).__name__
    )


def _join(key: str, sub: Any) -> str:
    return f"{key}.{sub}" if key else str(sub)


def _resolve_callable(name: str) -> Callable:
    if "." not in name:
        func = getattr(np, name, None)
        if callable(func):
            return func
        raise ValueError(f"unknown function {name!r}")
    module, _, attr = name.rpartition(".")
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import {name!r}: {exc}") from None
    if not callable(func):
        raise ValueError(f"{name!r} is not callable")
    return func


def _resolve_path(path: str, base: str | None) -> str:
    if "://" in path or base is None or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, os.path.expanduser(path)))


_TOP = ("name", "inputs", "filter", "coordinates", "assignment", "statistics", "outputs", "storage_options")
_INPUT = ("paths", "format", "groups", "columns", "options", "storage_options")
_STAT = ("function", "column", "expression", "parameters", "dtype")


def _check_inputs(
    c: _Checker, raw: Any, base: str | None, default_so: dict
) -> tuple[list[InputSpec], set[str] | None]:
    specs: list[InputSpec] = []
    known: set[str] | None = set()
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        c.error("inputs", f"must be a non-empty list of input entries; got {_kind(raw)}")
        return specs, None
    for i, entry in enumerate(raw):
        key = f"inputs[{i}]"
        d = c.mapping(entry, key, _INPUT, ("paths",))
        if d is None:
            known = None
            continue
        paths = c.string_list(d.get("paths"), f"{key}.paths") if d.get("paths") is not None else []
        fmt = d.get("format")
        if fmt is not None:
            fmt = c.string(fmt, f"{key}.format", INPUT_FORMATS)
        else:
            for j, p in enumerate(paths):
                if not any(p.lower().endswith(s) for s in _SUFFIXES):
                    c.error(
                        f"{key}.paths[{j}]",
                        f"cannot tell the format of {p!r} from its suffix; set {key}.format",
                    )
                    break
        groups = d.get("groups")
        groups = tuple(c.string_list(groups, f"{key}.groups")) if groups is not None else ()
        columns = d.get("columns") or {}
        if isinstance(columns, list):
            columns = {str(n): str(n) for n in columns}
        if not isinstance(columns, Mapping):
            c.error(
                f"{key}.columns",
                f"must be a mapping of column name -> source (or a list of names); got {_kind(columns)}",
            )
            columns = {}
        columns = {str(k): v for k, v in columns.items()}
        for name, src in columns.items():
            if not _NAME.match(name):
                c.error(f"{key}.columns.{name}", "column names must be identifiers (letters, digits, _)")
            if not isinstance(src, str) or not src:
                c.error(f"{key}.columns.{name}", f"must be a source column or dataset path; got {_kind(src)}")
        templated = [n for n, s in columns.items() if isinstance(s, str) and "{group}" in s]
        if templated and not groups:
            c.error(f"{key}.groups", f"is required: columns {templated} use {{group}} in their dataset paths")
        if groups and not templated:
            c.error(f"{key}.groups", "is given but no column's dataset path contains {group}")
        for name, src in columns.items():
            if isinstance(src, str):
                bad = set(re.findall(r"{([^}]*)}", src)) - {"group"}
                if bad:
                    c.error(
                        f"{key}.columns.{name}",
                        f"unknown template field(s) {sorted(bad)}; only {{group}} is supported",
                    )
        if fmt not in (None, "hdf5") and templated:
            c.error(f"{key}.columns", f"dataset path templates need format hdf5, not {fmt}")
        if (
            fmt == "hdf5"
            and columns
            and not all(isinstance(s, str) and s.startswith("/") for s in columns.values())
        ):
            c.error(
                f"{key}.columns",
                "HDF5 sources must be absolute dataset paths such as /gt1l/land_ice_segments/h_li",
            )
        options = d.get("options") or {}
        if not isinstance(options, Mapping):
            c.error(f"{key}.options", f"must be a mapping; got {_kind(options)}")
            options = {}
        so = d.get("storage_options", default_so) or {}
        if not isinstance(so, Mapping):
            c.error(f"{key}.storage_options", f"must be a mapping; got {_kind(so)}")
            so = {}
        if known is not None:
            if columns:
                known |= set(columns) | ({"group"} if groups else set())
            else:
                known = None  # columns only known once files are opened
        specs.append(
            InputSpec(
                paths=tuple(_resolve_path(p, base) for p in paths),
                format=fmt,
                groups=groups,
                columns=dict(columns),
                options=dict(options),
                storage_options=dict(so),
            )
        )
    return specs, known


def _check_statistics(c: _Checker, raw: Any, known: set[str] | None) -> list[Statistic]:
    out: list[Statistic] = []
    if not isinstance(raw, Mapping) or not raw:
        c.error(
            "statistics", f"must be a non-empty mapping of output variable -> statistic; got {_kind(raw)}"
        )
        return out
    for name, spec in raw.items():
        key = f"statistics.{name}"
        if not isinstance(name, str) or not _NAME.match(name) or name == "cell_ids":
            c.error(key, "output variable names must be identifiers other than 'cell_ids'")
        if isinstance(spec, str):
            spec = {"function": spec}
        d = c.mapping(spec, key, _STAT, ("function",))
        if d is None:
            continue
        func = d.get("function")
        if not isinstance(func, str):
            if func is not None:
                c.error(f"{key}.function", f"must be a string; got {_kind(func)}")
            continue
        if func not in FUNCTIONS:
            try:
                _resolve_callable(func)
            except ValueError as exc:
                close = difflib.get_close_matches(func, list(FUNCTIONS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                c.error(
                    f"{key}.function",
                    f"{exc}{hint}; use one of {', '.join(FUNCTIONS)}, a numpy function name or a dotted import path",
                )
        column, expression = d.get("column"), d.get("expression")
        if column is not None and expression is not None:
            c.error(key, "give either 'column' or 'expression', not both")
        elif column is None and expression is None and func != "count":
            c.error(key, f"needs a 'column' or an 'expression' for function {func!r}")
        if column is not None and c.string(column, f"{key}.column") is not None:
            c.columns_known({column}, f"{key}.column", known)
        expr = c.expression(expression, f"{key}.expression", known) if expression is not None else None
        params = d.get("parameters") or {}
        if not isinstance(params, Mapping):
            c.error(f"{key}.parameters", f"must be a mapping; got {_kind(params)}")
            params = {}
        params = dict(params)
        if func in FUNCTIONS:
            allowed, required = FUNCTIONS[func]
            for p in params:
                if p not in allowed:
                    what = f"allowed: {', '.join(sorted(allowed))}" if allowed else "it takes none"
                    c.error(f"{key}.parameters.{p}", f"unknown parameter for {func} ({what})")
            for p in sorted(required - set(params)):
                c.error(f"{key}.parameters.{p}", f"is required for {func}")
        if "q" in params:
            qs = params["q"] if isinstance(params["q"], list) else [params["q"]]
            for j, q in enumerate(qs):
                qkey = f"{key}.parameters.q" + (f"[{j}]" if isinstance(params["q"], list) else "")
                if isinstance(q, bool) or not isinstance(q, int | float) or not 0 <= q <= 1:
                    c.error(qkey, f"quantile levels must be numbers in [0, 1]; got {q!r}")
        if "ddof" in params:
            c.integer(params["ddof"], f"{key}.parameters.ddof", 0, 1_000_000)
        if "weight" in params:
            w = c.expression(params["weight"], f"{key}.parameters.weight", known)
            params["weight"] = w
        dtype = d.get("dtype", "int64" if func == "count" else "float64")
        c.string(dtype, f"{key}.dtype", DTYPES)
        out.append(Statistic(str(name), func, column, expr, params, dtype if dtype in DTYPES else "float64"))
    return out


def _orders(c: _Checker, value: Any, key: str, finest: int | None) -> tuple[int, ...]:
    hi = finest if finest is not None else MAX_ORDER
    what = " (at most the assignment order)" if finest is not None else ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        c.error(key, f"must be a list of orders; got {_kind(value)}")
        return ()
    out = []
    for i, v in enumerate(value):
        k = c.integer(v, f"{key}[{i}]", 0, hi, what)
        if k is not None:
            if k in out:
                c.error(f"{key}[{i}]", f"order {k} is listed twice")
            out.append(k)
    return tuple(sorted(set(out), reverse=True))


def _check_outputs(
    c: _Checker, raw: Any, finest: int | None, variables: list[str], base: str | None
) -> Outputs:
    d = c.mapping(raw, "outputs", ("state", "zarr", "parquet", "geoparquet", "plots", "storage_options"))
    if d is None:
        return Outputs()
    if not any(d.get(k) for k in ("zarr", "parquet", "geoparquet", "plots")):
        c.error("outputs", "needs at least one of zarr, parquet, geoparquet, plots")
    default_order = finest if finest is not None else 0
    state = d.get("state")
    if state is not None and c.string(state, "outputs.state") is not None:
        state = _resolve_path(state, base)
    zarr = parquet = geo = None
    if d.get("zarr") is not None:
        z = c.mapping(d["zarr"], "outputs.zarr", ("path", "orders", "chunk_cells"), ("path",))
        if z is not None:
            path = c.string(z.get("path"), "outputs.zarr.path") if z.get("path") is not None else None
            if path and not path.rstrip("/").endswith(".zarr"):
                c.error("outputs.zarr.path", f"must end with .zarr; got {path!r}")
            orders = _orders(c, z.get("orders", [default_order]), "outputs.zarr.orders", finest)
            chunk = (
                c.integer(z.get("chunk_cells", 1 << 18), "outputs.zarr.chunk_cells", 1, 1 << 28) or 1 << 18
            )
            zarr = ZarrOutput(_resolve_path(path or "", base), orders, chunk)
    if d.get("parquet") is not None:
        p = c.mapping(d["parquet"], "outputs.parquet", ("path", "orders"), ("path",))
        if p is not None:
            path = c.string(p.get("path"), "outputs.parquet.path") if p.get("path") is not None else None
            orders = _orders(c, p.get("orders", [default_order]), "outputs.parquet.orders", finest)
            parquet = ParquetOutput(_resolve_path(path or "", base), orders)
    if d.get("geoparquet") is not None:
        g = c.mapping(d["geoparquet"], "outputs.geoparquet", ("path", "order", "edge_points"), ("path",))
        if g is not None:
            path = c.string(g.get("path"), "outputs.geoparquet.path") if g.get("path") is not None else None
            what = " (at most the assignment order)" if finest is not None else ""
            order = c.integer(
                g.get("order", default_order), "outputs.geoparquet.order", 0, finest or MAX_ORDER, what
            )
            step = c.integer(g.get("edge_points", 1), "outputs.geoparquet.edge_points", 1, 64)
            geo = GeoParquetOutput(_resolve_path(path or "", base), order or 0, step or 1)
    plots = []
    raw_plots = d.get("plots") or []
    if isinstance(raw_plots, Mapping):
        raw_plots = [raw_plots]
    if not isinstance(raw_plots, list):
        c.error("outputs.plots", f"must be a list of plots; got {_kind(raw_plots)}")
        raw_plots = []
    allowed = ("path", "variable", "order", "projection", "center", "cmap", "range", "bounding_lat", "width")
    for i, entry in enumerate(raw_plots):
        key = f"outputs.plots[{i}]"
        pl = c.mapping(entry, key, allowed, ("path", "variable"))
        if pl is None:
            continue
        path = c.string(pl.get("path"), f"{key}.path") if pl.get("path") is not None else None
        if path and not path.lower().endswith(".png"):
            c.error(f"{key}.path", f"plots are PNG files: the path must end with .png; got {path!r}")
        var = pl.get("variable")
        stats_ok = not any(k.startswith("statistics") for k, _ in c.errors)  # avoid follow-on errors
        if (
            var is not None
            and c.string(var, f"{key}.variable")
            and stats_ok
            and variables
            and var not in variables
        ):
            close = difflib.get_close_matches(str(var), variables, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            c.error(
                f"{key}.variable",
                f"{var!r} is not an output variable{hint} (variables: {', '.join(variables)})",
            )
        what = " (at most the assignment order)" if finest is not None else ""
        order = c.integer(pl.get("order", default_order), f"{key}.order", 0, finest or MAX_ORDER, what)
        proj = c.string(pl.get("projection", "mollweide"), f"{key}.projection", PROJECTIONS)
        center = c.number_pair(pl.get("center"), f"{key}.center", "[lon, lat]")
        if center is not None:
            lat = center[1]
            if lat is not None and not -90 <= lat <= 90:
                c.error(f"{key}.center[1]", f"latitude must be in [-90, 90]; got {lat}")
        vrange = c.number_pair(pl.get("range"), f"{key}.range", "[low, high]")
        if vrange is not None:
            lo, hi = vrange
            if lo is not None and hi is not None and not lo < hi:
                c.error(f"{key}.range", f"low must be below high; got [{lo}, {hi}]")
        cmap = pl.get("cmap", "viridis")
        if c.string(cmap, f"{key}.cmap") is not None:
            import matplotlib

            if cmap not in matplotlib.colormaps:
                close = difflib.get_close_matches(cmap, list(matplotlib.colormaps), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                c.error(f"{key}.cmap", f"unknown matplotlib colour map {cmap!r}{hint}")
        bl = pl.get("bounding_lat")
        if bl is not None:
            bl = c.number(bl, f"{key}.bounding_lat")
        width = c.integer(pl.get("width", 2000), f"{key}.width", 16, 20000)
        plots.append(
            PlotOutput(
                _resolve_path(path or "", base),
                str(var),
                order or 0,
                proj or "mollweide",
                center,
                str(cmap),
                vrange,
                bl,
                width or 2000,
            )
        )
    so = d.get("storage_options") or {}
    if not isinstance(so, Mapping):
        c.error("outputs.storage_options", f"must be a mapping; got {_kind(so)}")
        so = {}
    return Outputs(state, zarr, parquet, geo, tuple(plots), dict(so))


def validate_pipeline(raw: Any, *, base_dir: str | None = None, source: str | None = None) -> PipelineConfig:
    """Validate a parsed pipeline (a dict) and build the :class:`PipelineConfig`.

    Raises
    ------
    ConfigError
        Listing every problem with its key path.
    """
    c = _Checker()
    d = c.mapping(raw, "", _TOP, ("inputs", "coordinates", "assignment", "statistics", "outputs"))
    if d is None:
        raise ConfigError(c.errors, source)
    default_so = d.get("storage_options") or {}
    inputs, known = _check_inputs(c, d.get("inputs"), base_dir, default_so) if "inputs" in d else ([], None)

    coords = Coordinates()
    cd = (
        c.mapping(d.get("coordinates"), "coordinates", ("lon", "lat", "geometry"))
        if "coordinates" in d
        else None
    )
    if cd is not None:
        geometry = cd.get("geometry")
        if geometry is None:
            for k in ("lon", "lat"):
                if k not in cd:
                    c.error(f"coordinates.{k}", "is required (or give coordinates.geometry for footprints)")
        vals = {}
        for k in ("lon", "lat", "geometry"):
            if cd.get(k) is not None and c.string(cd[k], f"coordinates.{k}") is not None:
                vals[k] = cd[k]
                c.columns_known({cd[k]}, f"coordinates.{k}", known)
        coords = Coordinates(vals.get("lon", "lon"), vals.get("lat", "lat"), vals.get("geometry"))

    assignment = None
    ad = (
        c.mapping(
            d.get("assignment"),
            "assignment",
            ("order", "nside", "mode", "lon_convention", "latitude", "on_bad_rows"),
        )
        if "assignment" in d
        else None
    )
    if ad is not None:
        order = None
        if "order" in ad and "nside" in ad:
            c.error("assignment", "give either order or nside, not both")
        elif "nside" in ad:
            ns = ad["nside"]
            if (
                isinstance(ns, int)
                and not isinstance(ns, bool)
                and ns >= 1
                and ns & (ns - 1) == 0
                and ns <= 1 << MAX_ORDER
            ):
                order = ns.bit_length() - 1
            else:
                c.error(
                    "assignment.nside", f"must be a power of two between 1 and 2**{MAX_ORDER}; got {ns!r}"
                )
        elif "order" in ad:
            order = c.integer(ad["order"], "assignment.order", 0, MAX_ORDER)
        else:
            c.error("assignment.order", "is required (or give assignment.nside)")
        mode = c.string(ad.get("mode", "points"), "assignment.mode", ASSIGNMENT_MODES)
        if mode in ("strict", "center", "fuzzy", "overlap") and not coords.geometry:
            c.error("assignment.mode", f"mode {mode!r} assigns footprints: set coordinates.geometry")
        if mode == "points" and coords.geometry and "lon" not in (cd or {}):
            c.error("assignment.mode", "mode 'points' needs coordinates.lon and coordinates.lat")
        lonc = c.string(str(ad.get("lon_convention", "0_360")), "assignment.lon_convention", LON_CONVENTIONS)
        lat = c.string(ad.get("latitude", "spherical"), "assignment.latitude", LATITUDES)
        bad = c.string(ad.get("on_bad_rows", "error"), "assignment.on_bad_rows", ON_BAD_ROWS)
        if order is not None:
            assignment = Assignment(
                order, mode or "points", lonc or "0_360", lat or "spherical", bad or "error"
            )

    filt = None
    if d.get("filter") is not None:
        filt = c.expression(d["filter"], "filter", known, parse_filter)

    stats = _check_statistics(c, d.get("statistics"), known) if "statistics" in d else []
    names = [n for s in stats for n in s.output_names]
    for n in sorted({n for n in names if names.count(n) > 1}):
        c.error("statistics", f"output variable {n!r} is produced twice")
    finest = assignment.order if assignment else None
    outputs = _check_outputs(c, d.get("outputs"), finest, names, base_dir) if "outputs" in d else Outputs()
    name = d.get("name", "pipeline")
    if not isinstance(name, str):
        c.error("name", f"must be a string; got {_kind(name)}")
    if c.errors:
        raise ConfigError(c.errors, source)
    return PipelineConfig(
        name=str(name),
        inputs=tuple(inputs),
        coordinates=coords,
        assignment=assignment,
        statistics=tuple(stats),
        outputs=outputs,
        filter=filt,
        source=source,
    )


def load_pipeline(path: str | os.PathLike) -> PipelineConfig:
    """Read and validate a pipeline YAML file (no input data is read).

    Raises
    ------
    ConfigError
        For unreadable YAML (with line and column) or any invalid key, naming the file.
    """
    import yaml

    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError([("", "pipeline file not found")], path) from None
    except UnicodeDecodeError:
        raise ConfigError([("", "not a text (YAML) file")], path) from None
    except IsADirectoryError:
        raise ConfigError([("", "is a directory, not a pipeline file")], path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{where}not valid YAML: {problem}")], path) from None
    if raw is None:
        raise ConfigError([("", "the pipeline file is empty")], path)
    return validate_pipeline(raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path)

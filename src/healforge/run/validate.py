"""Validation of a parsed pipeline: every key checked before any data is read; all problems are
reported at once, each naming the file and the key path (``pipeline.yaml: outputs.zarr.orders[1]: ...``)."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from healforge.aggregate.sources import is_hats_catalog
from healforge.aggregate.statistics import streaming_names
from healforge.expressions import ExpressionError, parse_cell, parse_filter
from healforge.io.fills import FillRules
from healforge.io.formats import format_names, suffixes
from healforge.maps.views import FRAMES, PROJECTIONS, SCALES
from healforge.pixel import MAX_ORDER
from healforge.pixel.latitude import LATITUDES, LON_CONVENTIONS
from healforge.registry import UnknownName, check_reader
from healforge.run.checker import Checker, kind, resolve_path
from healforge.run.schema import (
    ASSIGNMENT_KEYS,
    ASSIGNMENT_MODES,
    DTYPES,
    FUNCTIONS,
    INPUT_KEYS,
    NAME,
    ON_BAD_ROWS,
    STAT_KEYS,
    TOP_KEYS,
    Assignment,
    ConfigError,
    Coordinates,
    GeoParquetOutput,
    InputSpec,
    Outputs,
    ParquetOutput,
    PipelineConfig,
    PlotOutput,
    Statistic,
    ZarrOutput,
    builtin_parameters,
    check_exact,
    resolve_callable,
)


def _check_inputs(
    c: Checker, raw: Any, base: str | None, default_so: dict
) -> tuple[list[InputSpec], set[str] | None]:
    specs: list[InputSpec] = []
    known: set[str] | None = set()
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        c.error("inputs", f"must be a non-empty list of input entries; got {kind(raw)}")
        return specs, None
    for i, entry in enumerate(raw):
        key = f"inputs[{i}]"
        d = c.mapping(entry, key, INPUT_KEYS, ("paths",))
        if d is None:
            known = None
            continue
        paths = c.string_list(d.get("paths"), f"{key}.paths") if d.get("paths") is not None else []
        fmt = d.get("format")
        if fmt is not None:
            fmt = c.string(fmt, f"{key}.format", format_names())
        else:
            for j, p in enumerate(paths):
                if not any(p.lower().endswith(s) for s in suffixes()) and not is_hats_catalog(
                    resolve_path(p, base)
                ):
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
                f"must be a mapping of column name -> source (or a list of names); got {kind(columns)}",
            )
            columns = {}
        columns = {str(k): v for k, v in columns.items()}
        for name, src in columns.items():
            if not NAME.match(name):
                c.error(f"{key}.columns.{name}", "column names must be identifiers (letters, digits, _)")
            if not isinstance(src, str) or not src:
                c.error(f"{key}.columns.{name}", f"must be a source column or dataset path; got {kind(src)}")
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
            c.error(f"{key}.options", f"must be a mapping; got {kind(options)}")
            options = {}
        if "reader" in options:  # names one of healforge's readers, never a module to import
            try:
                check_reader(options["reader"])
            except UnknownName as exc:
                c.error(f"{key}.options.reader", str(exc))
        so = d.get("storage_options", default_so) or {}
        if not isinstance(so, Mapping):
            c.error(f"{key}.storage_options", f"must be a mapping; got {kind(so)}")
            so = {}
        if known is not None:
            if columns:
                known |= set(columns) | ({"group"} if groups else set())
            else:
                known = None  # columns only known once files are opened
        specs.append(
            InputSpec(
                paths=tuple(resolve_path(p, base) for p in paths),
                format=fmt,
                groups=groups,
                columns=dict(columns),
                options=dict(options),
                storage_options=dict(so),
            )
        )
    return specs, known


def _check_statistics(c: Checker, raw: Any, known: set[str] | None) -> list[Statistic]:
    out: list[Statistic] = []
    if not isinstance(raw, Mapping) or not raw:
        c.error("statistics", f"must be a non-empty mapping of output variable -> statistic; got {kind(raw)}")
        return out
    for name, spec in raw.items():
        key = f"statistics.{name}"
        if not isinstance(name, str) or not NAME.match(name) or name == "cell_ids":
            c.error(key, "output variable names must be identifiers other than 'cell_ids'")
        if isinstance(spec, str):
            spec = {"function": spec}
        if isinstance(spec, Mapping) and "function" not in spec and spec.get("expression") is not None:
            cell = _check_cell_statistic(c, spec, key, known)
            if cell is not None:
                out.append(Statistic(str(name), "expression", cell=cell[0], dtype=cell[1]))
            continue
        d = c.mapping(spec, key, STAT_KEYS, ("function",))
        if d is None:
            continue
        func = d.get("function")
        if not isinstance(func, str):
            if func is not None:
                c.error(f"{key}.function", f"must be a string; got {kind(func)}")
            continue
        builtin = builtin_parameters(func)
        if builtin is None:
            try:
                resolve_callable(func)
            except ValueError as exc:
                close = difflib.get_close_matches(func, list(FUNCTIONS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                c.error(f"{key}.function", f"{exc}{hint}")

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
            c.error(f"{key}.parameters", f"must be a mapping; got {kind(params)}")
            params = {}
        params = dict(params)
        if builtin is not None:
            allowed, required = builtin
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
        if isinstance(dtype, str) and dtype.startswith("int") and func != "count":
            c.error(f"{key}.dtype", f"{func} can be NaN (empty cells): use a float dtype")
        out.append(Statistic(str(name), func, column, expr, params, dtype if dtype in DTYPES else "float64"))
    return out


def _check_cell_statistic(c: Checker, spec: Mapping, key: str, known: set[str] | None):
    """A cell-expression statistic ``{expression: "1 / sqrt(sum(1 / s**2))", dtype: ...}``:
    ``(CellExpression, dtype)`` or ``None`` after recording errors."""
    d = c.mapping(spec, key, ("expression", "dtype"))
    if d is None:
        return None
    dtype = d.get("dtype", "float64")
    c.string(dtype, f"{key}.dtype", DTYPES)
    src = d.get("expression")
    if c.string(src, f"{key}.expression") is None:
        return None
    try:
        cell = parse_cell(src)
    except ExpressionError as exc:
        c.error(f"{key}.expression", str(exc))
        return None
    for a in cell.aggregates:
        c.columns_known(a.row.names, f"{key}.expression", known)
    return cell, dtype if dtype in DTYPES else "float64"


def _orders(c: Checker, value: Any, key: str, finest: int | None) -> tuple[int, ...]:
    hi = finest if finest is not None else MAX_ORDER
    what = " (at most the assignment order)" if finest is not None else ""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        c.error(key, f"must be a list of orders; got {kind(value)}")
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
    c: Checker, raw: Any, finest: int | None, variables: list[str], base: str | None
) -> Outputs:
    d = c.mapping(raw, "outputs", ("state", "zarr", "parquet", "geoparquet", "plots", "storage_options"))
    if d is None:
        return Outputs()
    if not any(d.get(k) for k in ("zarr", "parquet", "geoparquet", "plots")):
        c.error("outputs", "needs at least one of zarr, parquet, geoparquet, plots")
    default_order = finest if finest is not None else 0
    state = d.get("state")
    if state is not None and c.string(state, "outputs.state") is not None:
        state = resolve_path(state, base)
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
            zarr = ZarrOutput(resolve_path(path or "", base), orders, chunk)
    if d.get("parquet") is not None:
        p = c.mapping(d["parquet"], "outputs.parquet", ("path", "orders"), ("path",))
        if p is not None:
            path = c.string(p.get("path"), "outputs.parquet.path") if p.get("path") is not None else None
            orders = _orders(c, p.get("orders", [default_order]), "outputs.parquet.orders", finest)
            parquet = ParquetOutput(resolve_path(path or "", base), orders)
    if d.get("geoparquet") is not None:
        g = c.mapping(d["geoparquet"], "outputs.geoparquet", ("path", "order", "edge_points"), ("path",))
        if g is not None:
            path = c.string(g.get("path"), "outputs.geoparquet.path") if g.get("path") is not None else None
            what = " (at most the assignment order)" if finest is not None else ""
            order = c.integer(
                g.get("order", default_order), "outputs.geoparquet.order", 0, finest or MAX_ORDER, what
            )
            step = c.integer(g.get("edge_points", 1), "outputs.geoparquet.edge_points", 1, 64)
            geo = GeoParquetOutput(resolve_path(path or "", base), order or 0, step or 1)
    plots = []
    raw_plots = d.get("plots") or []
    if isinstance(raw_plots, Mapping):
        raw_plots = [raw_plots]
    if not isinstance(raw_plots, list):
        c.error("outputs.plots", f"must be a list of plots; got {kind(raw_plots)}")
        raw_plots = []
    allowed = ("path", "variable", "order", "projection", "center", "cmap", "range", "bounding_lat", "width")
    allowed += ("frame", "scale", "extent", "graticule")
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
        frame = c.string(pl["frame"], f"{key}.frame", FRAMES) if "frame" in pl else None
        scale = c.string(pl.get("scale", "linear"), f"{key}.scale", SCALES) or "linear"
        extent = c.number(pl["extent"], f"{key}.extent") if "extent" in pl else None
        grat = c.number(pl["graticule"], f"{key}.graticule") if "graticule" in pl else None
        plots.append(
            PlotOutput(
                resolve_path(path or "", base),
                str(var),
                order or 0,
                proj or "mollweide",
                center,
                str(cmap),
                vrange,
                bl,
                width or 2000,
                frame,
                scale,
                extent,
                grat,
            )
        )
    so = d.get("storage_options") or {}
    if not isinstance(so, Mapping):
        c.error("outputs.storage_options", f"must be a mapping; got {kind(so)}")
        so = {}
    return Outputs(state, zarr, parquet, geo, tuple(plots), dict(so))


def validate_pipeline(
    raw: Any, *, base_dir: str | None = None, source: str | None = None, exact_override: bool | None = None
) -> PipelineConfig:
    """Validate a parsed pipeline (a dict) and build the :class:`PipelineConfig`;
    ``exact_override`` (the CLI's --exact) replaces the configuration's ``exact`` key in
    :func:`check_runnable`.

    Raises
    ------
    ConfigError
        Listing every problem with its key path.
    """
    c = Checker()
    d = c.mapping(raw, "", TOP_KEYS, ("inputs", "coordinates", "assignment", "statistics", "outputs"))
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
            ASSIGNMENT_KEYS,
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
        radius = None
        if ad.get("radius_km") is not None:
            radius = c.number(ad["radius_km"], "assignment.radius_km")
            if radius is not None and radius <= 0:
                c.error("assignment.radius_km", f"must be positive; got {radius}")
        if order is not None:
            assignment = Assignment(
                order, mode or "points", lonc or "0_360", lat or "spherical", bad or "error", radius
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
        c.error("name", f"must be a string; got {kind(name)}")
    exact = check_exact(c, d.get("exact"), base_dir, min(outputs.orders or [finest or MAX_ORDER]))
    fills = _check_fills(c, d.get("fills"), known)
    if c.errors:
        raise ConfigError(c.errors, source)
    cfg = PipelineConfig(
        name=str(name),
        inputs=tuple(inputs),
        coordinates=coords,
        assignment=assignment,
        statistics=tuple(stats),
        outputs=outputs,
        filter=filt,
        source=source,
        exact=exact,
        fills=fills,
    )
    check_runnable(cfg, exact_override)
    return cfg


def _check_fills(c: Checker, raw: Any, known: set[str] | None) -> FillRules:
    """``fills: {values: {column: value or [values]}, sentinel_above: number, drop_rows: bool}``."""
    if raw is None:
        return FillRules()
    d = c.mapping(raw, "fills", ("values", "sentinel_above", "drop_rows"))
    if d is None:
        return FillRules()
    values = {}
    vd = c.mapping(d.get("values", {}), "fills.values", list(d.get("values") or {}))
    for col, given in (vd or {}).items():
        items = given if isinstance(given, list) else [given]
        if not items or any(c.number(v, f"fills.values.{col}") is None for v in items):
            continue
        c.columns_known({str(col)}, f"fills.values.{col}", known)
        values[str(col)] = [float(v) for v in items]
    sentinel = d.get("sentinel_above")
    if sentinel is not None and (c.number(sentinel, "fills.sentinel_above") is None or sentinel <= 0):
        if isinstance(sentinel, int | float) and not isinstance(sentinel, bool):
            c.error("fills.sentinel_above", f"must be a positive number; got {sentinel}")
        sentinel = None
    drop = d.get("drop_rows", False)
    if not isinstance(drop, bool):
        c.error("fills.drop_rows", f"must be true or false; got {kind(drop)}")
        drop = False
    return FillRules.parse(values, sentinel, drop)


def check_runnable(cfg: PipelineConfig, exact: bool | None = None) -> None:
    """The rule set of what a run can compute, applied by :func:`validate_pipeline` (with the
    configuration's ``exact`` key, or the override it was given) and again by the runner with the
    effective mode: a numpy function that needs every raw value needs an exact run."""
    exact = cfg.exact is not None if exact is None else exact
    errors = [
        (
            f"statistics.{stat.name}.function",
            f"numpy function {stat.function!r} needs every raw value and cannot be computed from the "
            f"streaming state of a pipeline; streaming statistics: {', '.join(streaming_names())} "
            "(set `exact: true`, run with --exact, or use `healforge aggregate`)",
        )
        for stat in cfg.statistics
        if stat.cell is None and builtin_parameters(stat.function) is None and not exact
    ]
    if errors:
        raise ConfigError(errors, cfg.source)

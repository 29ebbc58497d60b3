"""A zagg pipeline file (``data_source`` / ``aggregation`` / ``output``) as a healforge pipeline.

:func:`translate` checks every key of the zagg file (a key healforge cannot honour is an error
naming it, never ignored) and builds a :class:`ZaggPlan`: the healforge pipeline configuration
(the schema of :mod:`healforge.run`, as a dict) plus what the map products need beyond it
(output dtypes and fill values, attributes, the ``morton`` coordinate, zagg's conventions).

zagg's meanings apply: latitudes are authalic (mortie's default), ``var``/``std`` are numpy's
(population, ``ddof=0``), quantiles are numpy's linear ones, ``len`` counts the rows of a cell,
and a numpy function without ``nan`` in its name gives NaN for a cell holding a NaN value.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from healforge.expressions import parse_cell
from healforge.healpix import MAX_ORDER
from healforge.run import ConfigError
from healforge.zagg.cellexpr import cell_expression, row_expression, row_names
from healforge.zagg.read import KEEP

READER = "healforge.zagg.read:iter_granule"
TOP = ("data_source", "aggregation", "output", "catalog", "store", "exact", "bounds")
DATA_SOURCE = (
    "reader",
    "driver",
    "groups",
    "coordinates",
    "variables",
    "quality_filter",
    "filters",
    "levels",
    "base_level",
    "read_plan",
)
AGGREGATION = ("handoff", "coordinates", "variables", "exact", "chunk_precompute")
VARIABLE = ("function", "expression", "source", "params", "dtype", "fill_value", "attrs", "kind")
OUTPUT = ("grid", "store", "pyramid", "store_layout", "endpoint_url", "region")
GRID = ("type", "indexing_scheme", "parent_order", "child_order", "layout", "chunk_inner")
FILTER_OPS = ("eq", "ne", "ge", "le", "lt", "gt", "in", "not_in")
# zagg function (numpy name) -> (healforge statistic, parameters, numpy propagates NaN)
FUNCTIONS: dict[str, tuple[str, dict, bool]] = {
    "len": ("count", {}, False),
    "count": ("count", {}, False),
    "size": ("count", {}, False),
    "sum": ("sum", {}, True),
    "nansum": ("sum", {}, False),
    "mean": ("mean", {}, True),
    "nanmean": ("mean", {}, False),
    "average": ("mean", {}, True),
    "min": ("min", {}, True),
    "amin": ("min", {}, True),
    "nanmin": ("min", {}, False),
    "max": ("max", {}, True),
    "amax": ("max", {}, True),
    "nanmax": ("max", {}, False),
    "var": ("var", {"ddof": 0}, True),
    "nanvar": ("var", {"ddof": 0}, False),
    "std": ("std", {"ddof": 0}, True),
    "nanstd": ("std", {"ddof": 0}, False),
    "median": ("median", {}, True),
    "nanmedian": ("median", {}, False),
    "quantile": ("quantile", {}, True),
    "nanquantile": ("quantile", {}, False),
    "percentile": ("quantile", {}, True),
    "nanpercentile": ("quantile", {}, False),
}
WGS84 = {"semimajor_axis": 6378137.0, "inverse_flattening": 298.257223563}


@dataclass
class Output:
    """One zagg output variable: numpy dtype, fill value and attributes."""

    name: str
    dtype: str
    fill_value: Any
    attrs: dict = field(default_factory=dict)
    nan_guard: tuple[str, str] | None = None  # (valid-count helper, row-count helper)


@dataclass
class ZaggPlan:
    """A translated zagg file."""

    source: str
    pipeline: dict  # healforge pipeline configuration (cell expressions as {"expression": ...})
    outputs: list[Output]
    child_order: int
    parent_order: int
    orders: list[int]
    store: str
    storage_options: dict
    exact: bool
    morton: dict | None  # {"dtype", "fill_value"} of the morton coordinate
    conventions: dict  # recorded in the product metadata

    @property
    def shard_order(self) -> int:
        """Order of the shards of exact mode: every pyramid level is whole inside one shard."""
        return min(self.parent_order, min(self.orders))


def is_zagg(raw: Any) -> bool:
    """Whether a parsed YAML document is a zagg pipeline file."""
    return isinstance(raw, Mapping) and "data_source" in raw and "aggregation" in raw and "output" in raw


class _Errors:
    def __init__(self):
        self.items: list[tuple[str, str]] = []

    def add(self, key: str, msg: str) -> None:
        self.items.append((key, msg))

    def keys(self, d: Any, where: str, allowed: Sequence[str], why: Mapping[str, str] | None = None) -> dict:
        if not isinstance(d, Mapping):
            self.add(where, f"must be a mapping; got {type(d).__name__}")
            return {}
        for k in d:
            if k not in allowed:
                close = difflib.get_close_matches(str(k), allowed, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    f"{where}.{k}" if where else str(k),
                    f"healforge cannot honour this zagg key{hint} (known: {', '.join(allowed)})",
                )
        return dict(d)

    def order(self, v: Any, key: str) -> int | None:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_ORDER:
            self.add(key, f"must be an integer order in [0, {MAX_ORDER}]; got {v!r}")
            return None
        return v


def _resolve(path: str, base: str) -> str:
    if "://" in path or os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base, path))


def _function(name: Any) -> str | None:
    """zagg's function name normalized (``np.x`` / ``numpy.x`` -> ``x``)."""
    if not isinstance(name, str):
        return None
    for prefix in ("np.", "numpy."):
        if name.startswith(prefix) and "." not in name[len(prefix) :]:
            return name[len(prefix) :]
    return name


def _pyramid(e: _Errors, raw: Any, parent: int, child: int) -> list[int]:
    """Orders of the product: zagg's leaf overviews plus its fixed ladder above the shard."""
    if raw is False:
        return [child]
    if raw is None or raw is True:
        return list(range(child, parent - 1, -1))  # every order inside the shard
    d = e.keys(raw, "output.pyramid", ("overviews",))
    ov = d.get("overviews")
    if isinstance(ov, int) and not isinstance(ov, bool):
        ov = [ov]
    if (
        not isinstance(ov, list)
        or not ov
        or not all(isinstance(r, int) and not isinstance(r, bool) for r in ov)
    ):
        e.add("output.pyramid.overviews", f"must be an int or a non-empty list of ints; got {ov!r}")
        return [child]
    if any(b >= a for a, b in zip(ov, ov[1:], strict=False)) or not all(parent < r < child for r in ov):
        e.add(
            "output.pyramid.overviews",
            f"must strictly descend, each strictly between parent_order {parent} and child_order {child}; got {ov}",
        )
        return [child]
    d_off = ov[-1] - parent
    ladder = [k + d_off for k in range(parent - 1, -1, -1)]
    return sorted({child, *ov, *ladder}, reverse=True)


def translate(
    raw: Mapping[str, Any],
    *,
    source: str = "<zagg>",
    base_dir: str | None = None,
    inputs: Sequence[str] | None = None,
    store: str | None = None,
    exact: bool | None = None,
) -> ZaggPlan:
    """Translate a parsed zagg file; ``inputs`` (granule paths or a catalog JSON) and ``store``
    override the file's ``catalog`` and ``output.store`` as zagg's ``--catalog`` / ``--store`` do.

    Raises
    ------
    ConfigError
        Listing every key that is wrong or cannot be honoured, naming the file.
    """
    from healforge.zagg.catalog import read_catalog, shard_cells

    base = base_dir or os.getcwd()
    e = _Errors()
    top = e.keys(raw, "", TOP)
    if "bounds" in top:
        e.add("bounds", "temporal/spatial bounds are not supported: filter the granule list instead")
    ds = e.keys(top.get("data_source"), "data_source", DATA_SOURCE)
    agg = e.keys(top.get("aggregation"), "aggregation", AGGREGATION)
    out = e.keys(top.get("output"), "output", OUTPUT)
    conventions: dict[str, Any] = {
        "tool": "zagg",
        "config": source,
        "latitude": "authalic (WGS84 geodetic latitude converted before indexing, as mortie does)",
        "variance": "population (numpy ddof=0)",
        "quantiles": "numpy linear",
    }

    # data source ---------------------------------------------------------------------------
    reader = ds.get("reader", "h5coro")
    if reader not in ("h5coro", "h5py"):
        e.add("data_source.reader", f"must be h5coro or h5py; got {reader!r}")
    driver = ds.get("driver", "s3")
    if driver not in ("s3", "https"):
        e.add("data_source.driver", f"must be s3 or https; got {driver!r}")
    conventions["reader"] = f"{reader} -> h5py over fsspec (driver {driver})"
    groups = ds.get("groups") or []
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        e.add("data_source.groups", f"must be a list of group names; got {groups!r}")
        groups = []
    coords = ds.get("coordinates") or {}
    columns: dict[str, str] = {}
    if not isinstance(coords, Mapping) or "latitude" not in coords or "longitude" not in coords:
        e.add("data_source.coordinates", "needs latitude and longitude dataset paths")
        coords = {}
    variables = ds.get("variables") or {}
    if not isinstance(variables, Mapping):
        e.add("data_source.variables", "must be a mapping name -> dataset path")
        variables = {}
    for section, mapping in (("coordinates", coords), ("variables", variables)):
        for name, path in mapping.items():
            if not isinstance(path, str) or not path.startswith("/"):
                e.add(f"data_source.{section}.{name}", f"must be an absolute dataset path; got {path!r}")
            elif not str(name).isidentifier():
                e.add(f"data_source.{section}.{name}", "names must be identifiers")
            else:
                columns[str(name)] = path
    levels = ds.get("levels")
    base_level = ds.get("base_level")
    level_vars: dict[str, dict[str, str]] = {}
    if levels is not None:
        if not isinstance(levels, Mapping) or not levels:
            e.add("data_source.levels", "must be a non-empty mapping")
            levels = {}
        if base_level not in (levels or {}):
            e.add(
                "data_source.base_level", f"must name a key of levels ({', '.join(map(str, levels or {}))})"
            )
        for lname, lvl in (levels or {}).items():
            key = f"data_source.levels.{lname}"
            lvl = e.keys(lvl, key, ("path", "coordinates", "variables", "link"))
            link = lvl.get("link")
            if lname == base_level:
                continue
            if not isinstance(link, Mapping):
                e.add(f"{key}.link", "is required for a level other than base_level")
                continue
            e.keys(link, f"{key}.link", ("to", "index_beg", "count", "index_base", "reference_index"))
            for k in ("to", "index_beg", "count"):
                if k not in link:
                    e.add(f"{key}.link.{k}", "is required")
            if link.get("to") != base_level:
                e.add(f"{key}.link.to", f"healforge links levels to the base level {base_level!r} only")
            if link.get("reference_index") is not None:
                e.add(f"{key}.link.reference_index", "is reserved in zagg and must be null")
            ib = link.get("index_base", 0)
            if isinstance(ib, bool) or not isinstance(ib, int) or ib < 0:
                e.add(f"{key}.link.index_base", f"must be a non-negative integer; got {ib!r}")
            lv = lvl.get("variables")
            if isinstance(lv, Mapping):  # readable form: broadcast to base rows
                for vname, tmpl in lv.items():
                    if vname in columns:
                        e.add(f"{key}.variables.{vname}", "collides with a data_source variable")
                    elif not isinstance(tmpl, str) or not tmpl.startswith("/"):
                        e.add(f"{key}.variables.{vname}", f"must be an absolute dataset path; got {tmpl!r}")
                    else:
                        level_vars.setdefault(str(lname), {})[str(vname)] = tmpl
    known_levels = set(levels or {})
    filters: list[dict] = []
    filter_exprs: list[str] = []
    raw_filters = ds.get("filters")
    if raw_filters is None and ds.get("quality_filter") is not None:
        qf = e.keys(ds["quality_filter"], "data_source.quality_filter", ("dataset", "value"))
        if "dataset" not in qf or "value" not in qf:
            e.add("data_source.quality_filter", "needs dataset and value")
        else:
            raw_filters = [{"dataset": qf["dataset"], "op": "eq", "value": qf["value"]}]
    elif raw_filters is not None and ds.get("quality_filter") is not None:
        conventions["quality_filter"] = "ignored because filters is given (as zagg does)"
    if raw_filters is not None and not isinstance(raw_filters, list):
        e.add("data_source.filters", "must be a list")
        raw_filters = []
    for i, f in enumerate(raw_filters or []):
        key = f"data_source.filters[{i}]"
        if isinstance(f, Mapping) and "expression" in f:
            e.keys(f, key, ("expression",))
            try:
                filter_exprs.append(row_expression(f["expression"]))
            except ValueError as exc:
                e.add(f"{key}.expression", str(exc))
            continue
        f = e.keys(f, key, ("level", "dataset", "column", "op", "value", "values", "keep"))
        op = f.get("op")
        if op not in FILTER_OPS:
            e.add(f"{key}.op", f"must be one of {', '.join(FILTER_OPS)}; got {op!r}")
        if not isinstance(f.get("dataset"), str) or not f["dataset"].startswith("/"):
            e.add(f"{key}.dataset", "is required: an absolute dataset path")
        col = f.get("column")
        if col is not None and (isinstance(col, bool) or not isinstance(col, int)):
            e.add(f"{key}.column", f"must be an integer index; got {col!r}")
        if op in ("in", "not_in"):
            vals = f.get("values")
            if not isinstance(vals, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in vals
            ):
                e.add(f"{key}.values", f"op {op} needs a list of numbers")
        elif op is not None:
            v = f.get("value")
            if isinstance(v, bool) or not isinstance(v, int | float):
                e.add(f"{key}.value", f"op {op} needs a numeric value; got {v!r}")
        level = f.get("level")
        if level is not None and level not in known_levels:
            e.add(f"{key}.level", f"{level!r} is not a key of data_source.levels")
        filters.append(
            {
                "dataset": f.get("dataset"),
                "column": col,
                "op": op,
                "value": f.get("value"),
                "values": list(f.get("values") or []),
                "keep": bool(f.get("keep", True)),
                "level": level,
            }
        )
    if ds.get("read_plan") is not None:
        conventions["read_plan"] = "not used: healforge reads whole datasets (same rows)"

    # aggregation ---------------------------------------------------------------------------
    handoff = agg.get("handoff", "arrow")
    if handoff not in ("arrow", "pandas"):
        e.add("aggregation.handoff", f"must be arrow or pandas; got {handoff!r}")
    conventions["handoff"] = f"{handoff} -> pyarrow tables (nulls allowed)"
    if agg.get("chunk_precompute"):
        e.add("aggregation.chunk_precompute", "per-chunk precomputed values are not supported")
    morton = None
    for cname, cspec in (agg.get("coordinates") or {}).items():
        key = f"aggregation.coordinates.{cname}"
        cspec = e.keys(cspec or {}, key, ("dtype", "fill_value"))
        if cname == "morton":
            dt = cspec.get("dtype", "uint64")
            if dt != "uint64":
                e.add(f"{key}.dtype", f"mortie morton indices are uint64; got {dt!r}")
            try:
                import mortie  # noqa: F401
            except ImportError:
                e.add(key, "needs the mortie package (pip install mortie) to compute morton indices")
            morton = {"dtype": "uint64", "fill_value": int(cspec.get("fill_value", 0))}
        elif cname == "cell_ids":
            conventions["cell_ids"] = "int64 nested (the xdggs coordinate) instead of uint64"
        else:
            e.add(key, "healforge computes the coordinates morton and cell_ids only")
    exact_flag = exact
    if exact_flag is None:
        exact_flag = bool(top.get("exact", agg.get("exact", False)))
    known_cols = set(columns) | {n for m in level_vars.values() for n in m} | ({"group"} if groups else set())
    stats: dict[str, Any] = {}
    outputs: list[Output] = []
    raw_vars = agg.get("variables") or {}
    if not isinstance(raw_vars, Mapping) or not raw_vars:
        e.add("aggregation.variables", "must be a non-empty mapping of output variables")
        raw_vars = {}
    for name, meta in raw_vars.items():
        key = f"aggregation.variables.{name}"
        meta = e.keys(meta, key, VARIABLE)
        if not str(name).isidentifier() or name in ("cell_ids", "morton"):
            e.add(key, "variable names must be identifiers other than cell_ids and morton")
            continue
        if meta.get("kind", "scalar") != "scalar":
            e.add(f"{key}.kind", f"only scalar variables are supported; got {meta['kind']!r}")
        dtype = meta.get("dtype", "float32")
        try:
            np.dtype(dtype)
        except TypeError:
            e.add(f"{key}.dtype", f"not a numpy dtype: {dtype!r}")
            dtype = "float32"
        fill = meta.get("fill_value", "NaN")
        if isinstance(fill, str):
            if fill.lower() != "nan":
                e.add(f"{key}.fill_value", f"must be a number or NaN; got {fill!r}")
            fill = float("nan")
        if np.dtype(dtype).kind in "iu" and isinstance(fill, float) and np.isnan(fill):
            fill = 0
        attrs = meta.get("attrs") or {}
        if not isinstance(attrs, Mapping):
            e.add(f"{key}.attrs", "must be a mapping")
            attrs = {}
        o = Output(str(name), str(dtype), fill, dict(attrs))
        outputs.append(o)
        if "function" in meta and "expression" in meta:
            e.add(key, "give either function or expression, not both")
            continue
        if "expression" in meta:
            try:
                text = cell_expression(meta["expression"])
                rows = {n for a in parse_cell(text).aggregates for n in a.row.names}
                missing = sorted(rows - known_cols)
                if missing:
                    e.add(f"{key}.expression", f"uses {missing}, not in data_source.variables")
                stats[name] = {"expression": text}
            except ValueError as exc:
                e.add(f"{key}.expression", str(exc))
            continue
        func = _function(meta.get("function"))
        if func is None:
            e.add(key, "needs a function or an expression")
            continue
        src = meta.get("source")
        if src is not None and src not in known_cols:
            e.add(
                f"{key}.source", f"{src!r} is not in data_source.variables ({', '.join(sorted(known_cols))})"
            )
        params = dict(meta.get("params") or {})
        if func in FUNCTIONS:
            hf, base_params, nan = FUNCTIONS[func]
            p: dict[str, Any] = dict(base_params)
            spec: dict[str, Any] = {"function": hf, "dtype": "int64" if hf == "count" else "float64"}
            if hf != "count":
                if src is None:
                    e.add(f"{key}.source", f"is required for function {func}")
                spec["column"] = src
            for pk, pv in params.items():
                pkey = f"{key}.params.{pk}"
                if pk == "weights" and func == "average":
                    try:
                        p["weight"] = row_expression(pv) if isinstance(pv, str) else None
                        if p["weight"] is None:
                            raise ValueError(f"must be a column name or a row expression; got {pv!r}")
                        spec["function"] = "weighted_mean"
                    except ValueError as exc:
                        e.add(pkey, str(exc))
                elif pk == "q" and hf == "quantile":
                    scale = 100.0 if "percentile" in func else 1.0
                    if isinstance(pv, bool) or not isinstance(pv, int | float) or not 0 <= pv / scale <= 1:
                        e.add(
                            pkey, f"must be one number in [0, {scale:g}] (one variable per level); got {pv!r}"
                        )
                    else:
                        p["q"] = float(pv) / scale
                elif pk == "ddof" and hf in ("var", "std"):
                    if isinstance(pv, bool) or not isinstance(pv, int) or pv < 0:
                        e.add(pkey, f"must be a non-negative integer; got {pv!r}")
                    else:
                        p["ddof"] = pv
                elif pk == "method" and hf == "quantile":
                    if pv != "linear":
                        e.add(pkey, f"only numpy's default 'linear' method is supported; got {pv!r}")
                else:
                    e.add(pkey, f"healforge cannot honour parameter {pk!r} of {func}")
            if hf == "quantile" and "q" not in p:
                e.add(f"{key}.params.q", f"is required for {func}")
            if p:
                spec["parameters"] = p
            stats[name] = spec
            if nan and src is not None:
                guard = (f"_zagg_{name}_n", f"_zagg_{name}_rows")
                stats[guard[0]] = {"function": "count", "column": src}
                stats[guard[1]] = {"function": "count"}
                o.nan_guard = guard
        else:  # another numpy function of healforge.registry: exact mode calls it per cell
            from healforge.run.schema import resolve_callable

            try:
                resolve_callable(func)
            except ValueError as exc:
                e.add(f"{key}.function", str(exc))
            if params:
                e.add(f"{key}.params", f"parameters of user function {func!r} are not supported")
            if src is None:
                e.add(f"{key}.source", f"is required for function {func}")
            stats[name] = {"function": func, "column": src}
            if src is not None and "." not in func and not func.startswith("nan"):
                guard = (f"_zagg_{name}_n", f"_zagg_{name}_rows")  # numpy's NaN propagation
                stats[guard[0]] = {"function": "count", "column": src}
                stats[guard[1]] = {"function": "count"}
                o.nan_guard = guard
            if not exact_flag:
                e.add(
                    f"{key}.function",
                    f"user function {func!r} needs every value of a cell: run with --exact (or exact: true)",
                )

    # output --------------------------------------------------------------------------------
    grid = e.keys(out.get("grid"), "output.grid", GRID)
    if grid.get("type", "healpix") != "healpix":
        e.add("output.grid.type", f"healforge writes HEALPix grids only; got {grid.get('type')!r}")
    if grid.get("indexing_scheme", "nested") != "nested":
        e.add("output.grid.indexing_scheme", "must be nested")
    child = e.order(grid.get("child_order"), "output.grid.child_order")
    parent = e.order(grid.get("parent_order", child), "output.grid.parent_order")
    if child is not None and parent is not None and parent > child:
        e.add("output.grid.parent_order", f"must be at most child_order {child}; got {parent}")
    if grid.get("layout", "fullsphere") not in ("fullsphere", "dense"):
        e.add("output.grid.layout", f"must be fullsphere or dense; got {grid.get('layout')!r}")
    if grid.get("chunk_inner") is not None:
        e.add("output.grid.chunk_inner", "inner chunk orders are not supported")
    conventions["layout"] = "sparse cells (one group per order), not zagg's full-sphere arrays"
    layout = out.get("store_layout")
    if layout not in (None, "flat"):
        e.add("output.store_layout", f"healforge writes one Zarr store (flat); got {layout!r}")
    orders = _pyramid(e, out.get("pyramid"), parent or 0, child or 0) if child is not None else []
    target = store or out.get("store") or top.get("store")
    if not isinstance(target, str) or not target:
        e.add("output.store", "is required (or give --store)")
        target = ""
    target = _resolve(target, base) if target else target
    so: dict[str, Any] = {}
    if out.get("endpoint_url"):
        so.setdefault("client_kwargs", {})["endpoint_url"] = out["endpoint_url"]
    if out.get("region"):
        so.setdefault("client_kwargs", {})["region_name"] = out["region"]

    # inputs --------------------------------------------------------------------------------
    paths: list[str] = []
    shard_keys: list[int] = []  # a catalog's shards: zagg writes these only
    given = list(inputs) if inputs else []
    if not given and top.get("catalog"):
        given = [_resolve(str(top["catalog"]), base)]
    if not given:
        e.add("catalog", "no input granules: give --inputs FILES or a catalog JSON")
    for p in given:
        if str(p).lower().endswith(".json"):
            hrefs, keys = read_catalog(str(p), driver, grid_orders=(parent, child))  # errors name the catalog
            paths.extend(h for h in hrefs if h not in paths)
            shard_keys.extend(keys)
        else:
            paths.append(str(p))
    if e.items:
        raise ConfigError(e.items, source)
    if KEEP in columns:
        raise ConfigError([("data_source", f"{KEEP!r} is a reserved column name")], source)
    for f in filters:  # the keep column is made by the reader from these datasets
        columns.setdefault(KEEP, f["dataset"])
    input_spec = {
        "paths": paths,
        "format": "hdf5",
        "columns": columns,
        "options": {
            "reader": READER,
            "layout": {
                "columns": {k: v for k, v in columns.items() if k != KEEP},
                "groups": groups,
                "filters": filters,
                "levels": {k: dict(v) for k, v in (levels or {}).items()},
                "base_level": base_level,
                "level_variables": level_vars,
                "shards": None,
            },
        },
    }
    if shard_keys:
        try:
            shard_order, cells = shard_cells(shard_keys)
        except ImportError:
            raise ConfigError(
                [("catalog", "restricting to the catalog's shards needs mortie")], source
            ) from None
        input_spec["options"]["layout"]["shards"] = {"order": shard_order, "cells": cells}
        conventions["shards"] = f"rows outside the catalog's {len(cells)} shards are filtered out (as zagg)"
        columns.setdefault(KEEP, coords["latitude"])
    if groups:
        input_spec["groups"] = groups
    for vname, tmpl in ((n, t) for m in level_vars.values() for n, t in m.items()):
        input_spec["columns"][vname] = tmpl
    filt = [KEEP] if KEEP in columns else []
    filt += [f"({x})" for x in filter_exprs]
    pipeline = {
        "name": f"zagg:{os.path.basename(source)}",
        "inputs": [input_spec],
        "coordinates": {"lon": "longitude", "lat": "latitude"},
        "assignment": {
            "order": child,
            "mode": "points",
            "lon_convention": "-180_180",
            "latitude": "authalic",
        },
        "statistics": stats,
        "outputs": {"zarr": {"path": target, "orders": orders}},
    }
    if filt:
        pipeline["filter"] = " and ".join(filt)
    if so:
        pipeline["outputs"]["storage_options"] = so
    conventions["ellipsoid"] = dict(WGS84)
    conventions["mode"] = (
        "exact (rows shuffled by shard)" if exact_flag else "streaming (quantiles from sketches)"
    )
    return ZaggPlan(
        source=source,
        pipeline=pipeline,
        outputs=outputs,
        child_order=child,
        parent_order=parent,
        orders=orders,
        store=target,
        storage_options=so,
        exact=exact_flag,
        morton=morton,
        conventions=conventions,
    )


def _names(expr: str) -> set[str]:
    return set(row_names(expr))


def load(path: str, **kwargs) -> ZaggPlan:
    """Read a zagg YAML file and :func:`translate` it."""
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not is_zagg(raw):
        raise ConfigError([("", "not a zagg pipeline file (needs data_source, aggregation, output)")], path)
    return translate(raw, source=path, base_dir=os.path.dirname(os.path.abspath(path)), **kwargs)

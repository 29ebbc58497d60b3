"""The ``data_source`` section of a zagg file: datasets, groups, linked levels and row filters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healforge.zagg.cellexpr import row_expression
from healforge.zagg.checks import FILTER_OPS, Problems


@dataclass
class Source:
    """What the granule reader needs: columns (name -> dataset path), groups, levels and filters."""

    driver: str
    groups: list[str]
    coords: dict
    columns: dict[str, str]
    levels: dict = field(default_factory=dict)
    base_level: Any = None
    level_vars: dict[str, dict[str, str]] = field(default_factory=dict)
    filters: list[dict] = field(default_factory=list)
    filter_exprs: list[str] = field(default_factory=list)

    @property
    def known_columns(self) -> set[str]:
        """Columns a statistic may use: variables, level variables and ``group``."""
        extra = {n for m in self.level_vars.values() for n in m}
        return set(self.columns) | extra | ({"group"} if self.groups else set())


def read_source(e: Problems, ds: dict, conventions: dict) -> Source:
    """Check ``data_source`` and collect what the reader needs; problems go to ``e``."""
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
    levels, base_level, level_vars = _levels(e, ds, columns)
    filters, filter_exprs = _filters(e, ds, set(levels or {}), conventions)
    return Source(
        driver, groups, dict(coords), columns, levels or {}, base_level, level_vars, filters, filter_exprs
    )


def _levels(e: Problems, ds: dict, columns: dict[str, str]) -> tuple[dict, Any, dict[str, dict[str, str]]]:
    """Linked levels (zagg's ``levels``/``base_level``): their variables are broadcast to base rows."""
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
    return levels or {}, base_level, level_vars


def _filters(e: Problems, ds: dict, known_levels: set, conventions: dict) -> tuple[list[dict], list[str]]:
    """Row filters: zagg's ``filters`` (or its older ``quality_filter``) and filter expressions."""
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
    return filters, filter_exprs

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

import os
from collections.abc import Mapping, Sequence
from typing import Any

from healforge.pixel.latitude import WGS84_DGGS
from healforge.run import ConfigError
from healforge.zagg.catalog import read_catalog, shard_cells
from healforge.zagg.checks import (
    AGGREGATION,
    DATA_SOURCE,
    GRID,
    OUTPUT,
    READER,
    TOP,
    Problems,
    cwd_path,
    pyramid,
    resolve_path,
)
from healforge.zagg.outputs import Output, ZaggPlan
from healforge.zagg.read import KEEP
from healforge.zagg.source import Source, read_source
from healforge.zagg.variables import read_aggregation

__all__ = ["Output", "ZaggPlan", "is_zagg", "load", "translate"]


def is_zagg(raw: Any) -> bool:
    """Whether a parsed YAML document is a zagg pipeline file."""
    return isinstance(raw, Mapping) and "data_source" in raw and "aggregation" in raw and "output" in raw


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

    base = base_dir or os.getcwd()
    e = Problems()
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

    src = read_source(e, ds, conventions)
    driver = src.driver
    stats, outputs, morton, exact_flag = read_aggregation(e, top, agg, exact, src.known_columns, conventions)

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
    orders = pyramid(e, out.get("pyramid"), parent or 0, child or 0) if child is not None else []
    # paths in the file are relative to the file, paths given here (the command line) to the
    # working directory
    target = cwd_path(store) if store else out.get("store") or top.get("store")
    if not isinstance(target, str) or not target:
        e.add("output.store", "is required (or give --store)")
        target = ""
    target = resolve_path(target, base) if target else target
    so: dict[str, Any] = {}
    if out.get("endpoint_url"):
        so.setdefault("client_kwargs", {})["endpoint_url"] = out["endpoint_url"]
    if out.get("region"):
        so.setdefault("client_kwargs", {})["region_name"] = out["region"]

    # inputs --------------------------------------------------------------------------------
    paths: list[str] = []
    shard_keys: list[int] = []  # a catalog's shards: zagg writes these only
    given = [cwd_path(p) for p in inputs] if inputs else []
    if not given and top.get("catalog"):
        given = [resolve_path(str(top["catalog"]), base)]
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
    input_spec = _input_spec(src, paths, shard_keys, source, conventions)
    filt = [KEEP] if KEEP in src.columns else []
    filt += [f"({x})" for x in src.filter_exprs]
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
    # zagg reads fills as values; here a row whose value is a declared fill is left out whole
    pipeline["fills"] = {"drop_rows": True}
    conventions["fills"] = (
        "rows holding a declared _FillValue/missing_value are skipped (zagg reads them as values)"
    )
    if so:
        pipeline["outputs"]["storage_options"] = so
    conventions["ellipsoid"] = dict(WGS84_DGGS)
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


def _input_spec(src: Source, paths: list[str], shard_keys: list[int], source: str, conventions: dict) -> dict:
    """The pipeline input: the granules and how the zagg granule reader lays out their rows."""
    if KEEP in src.columns:
        raise ConfigError([("data_source", f"{KEEP!r} is a reserved column name")], source)
    for f in src.filters:  # the keep column is made by the reader from these datasets
        src.columns.setdefault(KEEP, f["dataset"])
    input_spec = {
        "paths": paths,
        "format": "hdf5",
        "columns": src.columns,
        "options": {
            "reader": READER,
            "layout": {
                "columns": {k: v for k, v in src.columns.items() if k != KEEP},
                "groups": src.groups,
                "filters": src.filters,
                "levels": {k: dict(v) for k, v in (src.levels or {}).items()},
                "base_level": src.base_level,
                "level_variables": src.level_vars,
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
        src.columns.setdefault(KEEP, src.coords["latitude"])
    if src.groups:
        input_spec["groups"] = src.groups
    for vname, tmpl in ((n, t) for m in src.level_vars.values() for n, t in m.items()):
        input_spec["columns"][vname] = tmpl
    return input_spec


def load(path: str, **kwargs) -> ZaggPlan:
    """Read a zagg YAML file and :func:`translate` it."""
    import yaml

    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f)
    if not is_zagg(raw):
        raise ConfigError([("", "not a zagg pipeline file (needs data_source, aggregation, output)")], path)
    return translate(raw, source=path, base_dir=os.path.dirname(os.path.abspath(path)), **kwargs)

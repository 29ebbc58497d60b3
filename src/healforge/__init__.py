"""healforge: HEALPix-organised data products from large piles of spatial observations."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public API, imported lazily so that ``import healforge`` stays fast: name -> module.
_API = {
    "import_catalog": "healforge.catalog.build.importer",
    "ImportArguments": "healforge.catalog.build.arguments",
    "RunOptions": "healforge.options",
    "validate_catalog": "healforge.catalog.check.validate",
    "catalog_info": "healforge.catalog.check.info",
    "append": "healforge.catalog.change.append",
    "compact": "healforge.catalog.change.compact",
    "increment": "healforge.catalog.change.increment",
    "delete": "healforge.catalog.change.delete",
    "margin": "healforge.catalog.derived.margin",
    "build_margin": "healforge.catalog.derived.margin",
    "nest": "healforge.catalog.derived.nest",
    "index_catalog": "healforge.catalog.derived.index",
    "open_collection": "healforge.catalog.derived.collection",
    "resolve_catalog": "healforge.catalog.derived.collection",
    "make_collection": "healforge.catalog.derived.make_collection",
    "Engine": "healforge.engine",
    "BadInputError": "healforge.errors",
    "StorageError": "healforge.errors",
    "OptionError": "healforge.errors",
    "CatalogError": "healforge.errors",
    "register_format": "healforge.io.formats",
    "open_path": "healforge.catalog.opener",
    "write_zarr": "healforge.maps.zarr_store",
    "open_map": "healforge.maps.zarr_store",
    "write_parquet": "healforge.maps.parquet",
    "read_map": "healforge.maps.parquet",
    "make_map_table": "healforge.maps.table",
    "write_geoparquet": "healforge.maps.geoparquet",
    "plot_map": "healforge.maps.plot",
    "load_pipeline": "healforge.run",
    "run_pipeline": "healforge.run.runner",
    "sidecar": "healforge.aggregate.sidecar",
    "read_sidecar": "healforge.aggregate.sidecar",
    "aggregate": "healforge.aggregate.api",
    "accumulate": "healforge.aggregate.api",
    "Accumulator": "healforge.aggregate.accumulator",
    "merge_states": "healforge.aggregate.api",
    "finalize": "healforge.aggregate.api",
    "State": "healforge.aggregate.state",
    "write_map": "healforge.aggregate.maptable",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'healforge' has no attribute {name!r}")

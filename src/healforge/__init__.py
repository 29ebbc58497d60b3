"""healforge: HEALPix-organised data products from large piles of spatial observations."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# Public API, imported lazily so that ``import healforge`` stays fast: name -> module.
_API = {
    "import_catalog": "healforge.catalog.importer",
    "validate_catalog": "healforge.catalog.validate",
    "catalog_info": "healforge.catalog.info",
    "margin": "healforge.catalog.margin",
    "build_margin": "healforge.catalog.margin",
    "nest": "healforge.catalog.nest",
    "Engine": "healforge.engine",
    "BadInputError": "healforge.errors",
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'healforge' has no attribute {name!r}")

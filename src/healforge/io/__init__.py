"""Input and storage: the format registry (:mod:`~healforge.io.formats`), streaming readers
(:mod:`~healforge.io.readers`), the path opener and atomic storage (:mod:`~healforge.io.storage`).

Names are loaded on first use, so that the CLI can list formats without importing pyarrow.
"""

from __future__ import annotations

import importlib

_LAZY = {
    "detect_format": "healforge.io.formats",
    "format_names": "healforge.io.formats",
    "register_format": "healforge.io.formats",
    "iter_batches": "healforge.io.readers",
    "read_schema": "healforge.io.readers",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'healforge.io' has no attribute {name!r}")


__all__ = sorted(_LAZY)

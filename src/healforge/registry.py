"""healforge's vocabulary of code that input files and options may name.

Pipeline files, zagg files and CLI options name *data*: they may name readers, statistics and
functions only from this registry, never a module to import. The registry holds

- :data:`READERS`: the reader functions of healforge's own layouts (``inputs[].options.reader``);
  file formats are named by ``format`` (the registry of :mod:`healforge.io.formats`);
- (the statistics themselves are :mod:`healforge.aggregate.statistics`: names, aliases, ``qNN``,
  registered statistics; it asks this module about numpy names, never the other way round);
- :data:`NUMPY_REDUCTIONS` and :data:`NUMPY_UFUNCS`: numpy functions usable as per-cell
  statistics, named ``ptp``, ``numpy.ptp``, ``np.ptp`` or ``numpy:ptp``;
- the expression language (:mod:`healforge.expressions`), which has its own whitelist.

Any other name is refused with :class:`UnknownName`, before anything is imported. Python API
users pass their own callables as objects instead of names.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from healforge.errors import OptionError

#: Reader functions of healforge's own layouts, by the name files use -> ``module:function``.
READERS: dict[str, str] = {"healforge.zagg.read:iter_granule": "healforge.zagg.read:iter_granule"}

#: numpy reductions of a 1-D array, called once per cell.
NUMPY_REDUCTIONS = (
    "all",
    "amax",
    "amin",
    "any",
    "average",
    "count_nonzero",
    "max",
    "mean",
    "median",
    "min",
    "nanmax",
    "nanmean",
    "nanmedian",
    "nanmin",
    "nanprod",
    "nanstd",
    "nansum",
    "nanvar",
    "prod",
    "ptp",
    "std",
    "sum",
    "var",
)
#: Binary numpy ufuncs, applied per cell with ``ufunc.reduceat`` (vectorised).
NUMPY_UFUNCS = (
    "add",
    "bitwise_and",
    "bitwise_or",
    "bitwise_xor",
    "fmax",
    "fmin",
    "logical_and",
    "logical_or",
    "logical_xor",
    "maximum",
    "minimum",
    "multiply",
)
_NUMPY_NAME = re.compile(r"^(?:(?:numpy|np)[.:])?([A-Za-z_][A-Za-z0-9_]*)$")


class UnknownName(OptionError):
    """A name of code that is not in healforge's vocabulary (nothing was imported)."""


def numpy_function_name(name: str) -> str | None:
    """The numpy function a statistic name means (``numpy.ptp`` -> ``ptp``) when it is in the
    registry, else ``None``."""
    m = _NUMPY_NAME.match(name) if isinstance(name, str) else None
    if m and m.group(1) in NUMPY_REDUCTIONS + NUMPY_UFUNCS:
        return m.group(1)
    return None


def numpy_hint() -> str:
    """One line listing the numpy functions a statistic may name."""
    return (
        f"numpy reductions: {', '.join(NUMPY_REDUCTIONS)}; numpy ufuncs: {', '.join(NUMPY_UFUNCS)} "
        "(as NAME, numpy.NAME, np.NAME or numpy:NAME); Python API users may pass a callable"
    )


def user_statistic(name: str) -> tuple[str, Callable]:
    """``("ufunc", ufunc)`` or ``("callable", function)`` of a registered numpy function name.

    Raises
    ------
    UnknownName
        When ``name`` is not registered (it is never imported).
    """
    import numpy as np

    base = numpy_function_name(name)
    fn = getattr(np, base, None) if base else None
    if fn is None:
        raise UnknownName(
            f"unknown statistic {name!r}: not in healforge's vocabulary (files and options name "
            f"data, never code to import); {numpy_hint()}"
        )
    if isinstance(fn, np.ufunc):
        return "ufunc", fn
    return "callable", fn


def check_reader(name: object) -> str:
    """``name`` if it is a registered reader, else :class:`UnknownName` (nothing imported)."""
    if not isinstance(name, str) or name not in READERS:
        raise UnknownName(
            f"reader {name!r} is not one of healforge's readers ({', '.join(READERS)}); input files "
            "name data, never code to import: set 'format' to one of the built-in formats instead"
        )
    return name


def reader(name: str) -> Callable:
    """The reader function registered as ``name`` (healforge's own module)."""
    import importlib

    module, _, attr = READERS[check_reader(name)].partition(":")
    return getattr(importlib.import_module(module), attr)


__all__ = [
    "NUMPY_REDUCTIONS",
    "NUMPY_UFUNCS",
    "READERS",
    "UnknownName",
    "check_reader",
    "numpy_function_name",
    "reader",
    "numpy_hint",
    "user_statistic",
]

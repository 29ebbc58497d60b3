"""The input-format registry: every format healforge reads, its file suffixes and its reader.

This module imports nothing heavy, so that the CLI can list ``--format`` choices without loading
pyarrow. A reader is named ``"module:function"`` and imported on first use (or given as the
function itself). Every place that names, detects or validates an input format asks this registry:
the CLI, pipeline files, :func:`healforge.io.readers.iter_batches` and suffix detection.

A reader is a generator ``reader(path, columns, batch_rows, storage_options=None, **options)``
yielding pyarrow tables holding ``columns`` (all when ``None``), at most ``batch_rows`` rows each.
A format added here (or by a package through the ``healforge.readers`` entry-point group, whose
entries are ``name = "module:function"``) is importable and aggregatable at once.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from healforge.errors import BadInputError, OptionError

ENTRY_POINT_GROUP = "healforge.readers"


@dataclass(frozen=True)
class InputFormat:
    """One readable input format.

    Parameters
    ----------
    name
        What users write after ``--format`` or ``format:``.
    reader
        ``"module:function"`` or the reader function itself.
    suffixes
        Lower-case file-name endings that mean this format (``.csv.gz``).
    can_open
        Optional test of a path for formats not told by their suffix alone.
    options
        Names of the reader's format options (documentation and checks).
    """

    name: str
    reader: str | Callable
    suffixes: tuple[str, ...] = ()
    can_open: Callable[[str], bool] | None = None
    options: tuple[str, ...] = ()

    def load(self) -> Callable:
        """The reader function."""
        if callable(self.reader):
            return self.reader
        module, _, attr = self.reader.partition(":")
        return getattr(importlib.import_module(module), attr)


_FORMATS: dict[str, InputFormat] = {}
_plugins_loaded = False


def register_format(
    name: str,
    reader: str | Callable,
    suffixes: Sequence[str] = (),
    *,
    can_open: Callable[[str], bool] | None = None,
    options: Sequence[str] = (),
    replace: bool = False,
) -> InputFormat:
    """Add an input format to the registry and return it.

    Raises
    ------
    OptionError
        When ``name`` is taken and ``replace`` is false.
    """
    if name in _FORMATS and not replace:
        raise OptionError(f"input format {name!r} is already registered")
    fmt = InputFormat(name, reader, tuple(s.lower() for s in suffixes), can_open, tuple(options))
    _FORMATS[name] = fmt
    return fmt


def unregister_format(name: str) -> None:
    """Remove a format (tests and plugins that replace one)."""
    _FORMATS.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in _FORMATS:
            register_format(ep.name, ep.value)


def format_names() -> tuple[str, ...]:
    """Names of all registered formats, built-in first."""
    _load_plugins()
    return tuple(_FORMATS)


def get_format(name: str) -> InputFormat:
    """The registered format ``name``; an unknown name is an :class:`OptionError` listing them."""
    _load_plugins()
    try:
        return _FORMATS[name]
    except KeyError:
        raise OptionError(
            f"unknown input format {name!r}; expected one of {', '.join(format_names())}"
        ) from None


def suffixes() -> dict[str, str]:
    """Every registered file suffix -> format name."""
    _load_plugins()
    return {s: f.name for f in _FORMATS.values() for s in f.suffixes}


def detect_format(path: str, fmt: str | None = None) -> str:
    """Input format from an explicit name, else the file suffix, else a format's ``can_open``."""
    if fmt:
        return get_format(fmt).name
    name = str(path).lower()
    by_suffix = suffixes()
    for suffix in sorted(by_suffix, key=len, reverse=True):
        if name.endswith(suffix):
            return by_suffix[suffix]
    for f in _FORMATS.values():
        if f.can_open is not None and f.can_open(str(path)):
            return f.name
    raise BadInputError(
        f"cannot tell the format from the file name; use one of {', '.join(sorted(by_suffix))} "
        "or pass the format explicitly",
        path=path,
    )


def _builtin(
    name: str, suffixes: Sequence[str], options: Sequence[str] = (), module: str = "readers"
) -> None:
    register_format(name, f"healforge.io.{module}:iter_{name.replace('geo', '')}", suffixes, options=options)


_builtin("csv", (".csv", ".csv.gz", ".txt", ".tsv"), ("delimiter",))
_builtin("parquet", (".parquet", ".pq"))
_builtin("geoparquet", (".geoparquet",))
_builtin("fits", (".fits", ".fit", ".fits.gz"), ("hdu",))
_builtin("hdf5", (".h5", ".hdf5", ".he5"), ("group",), module="hdf5")
_builtin("ecsv", (".ecsv", ".ecsv.gz"))

__all__ = [
    "InputFormat",
    "detect_format",
    "format_names",
    "get_format",
    "register_format",
    "suffixes",
    "unregister_format",
]

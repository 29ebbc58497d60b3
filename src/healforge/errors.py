"""Exceptions raised for bad input; messages name the file, column, row and value."""

from __future__ import annotations


class HealforgeError(Exception):
    """Base class of healforge's own errors."""


class BadInputError(HealforgeError, ValueError):
    """Input data that cannot be used as it is.

    Parameters
    ----------
    message
        What is wrong.
    path, column, row, value
        Where it is wrong (any may be ``None``); ``row`` is the 0-based row index in the file.
    """

    def __init__(self, message: str, *, path=None, column=None, row=None, value=None):
        self.path, self.column, self.row, self.value = path, column, row, value
        where = []
        if path is not None:
            where.append(f"file {path}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        if value is not None or row is not None:
            where.append(f"value {value!r}")
        super().__init__(f"{message} ({', '.join(where)})" if where else message)


class CatalogError(HealforgeError):
    """A catalog on disk is missing, inconsistent or in use."""


class OptionError(HealforgeError, ValueError):
    """An option or argument value that cannot be used (out of range, malformed, conflicting)."""


class StorageError(HealforgeError):
    """A path or URL that cannot be used (unknown protocol, missing fsspec backend)."""

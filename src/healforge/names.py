"""Names given by users that become one component of a path: batch labels, catalog and member
names, nested column names used in file names.

One rule for all of them (:func:`check_name`), checked before anything is written: a name is a
single path component that every reader sees (pyarrow and lsdb skip names starting with ``.``
or ``_``) and that means the same on local disks and object stores.
"""

from __future__ import annotations

from healforge.errors import OptionError

MAX_NAME_LENGTH = 200
NAME_PUNCTUATION = "-_.+@"
NAME_RULE = (
    f"1 to {MAX_NAME_LENGTH} letters, digits or {' '.join(NAME_PUNCTUATION)}, "
    "not starting with '.' or '_' (one path component: no '/', '\\', '..', spaces or control characters)"
)


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a safe path component, or ``None`` when it is."""
    if not isinstance(name, str):
        return f"is a {type(name).__name__}, not text"
    if not name:
        return "is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"has {len(name)} characters (at most {MAX_NAME_LENGTH})"
    if name in (".", ".."):
        return "names a directory ('.' or '..')"
    if name[0] in "._":
        return f"starts with {name[0]!r} (readers skip such files)"
    for ch in name:
        if ch in "/\\":
            return f"contains a path separator {ch!r}"
        if not ch.isprintable():
            return f"contains the control character {ch!r}"
        if not (ch.isalnum() or ch in NAME_PUNCTUATION):
            return f"contains the character {ch!r}"
    return None


def check_name(name: str, what: str) -> str:
    """``name`` if it is a safe path component, else a one-line :class:`OptionError`.

    Parameters
    ----------
    name
        The user's name.
    what
        What it names, for the message (``"batch label"``, ``"catalog name"``...).

    Raises
    ------
    OptionError
        Naming the value and the rule.
    """
    problem = name_problem(name)
    if problem:
        shown = name if not isinstance(name, str) or len(name) <= 60 else name[:57] + "..."
        raise OptionError(f"{what} {shown!r} {problem}; a {what} must be {NAME_RULE}")
    return name


def check_optional_name(name: str | None, what: str) -> str | None:
    """:func:`check_name` for a name that may be left out (``None``)."""
    return None if name is None else check_name(name, what)


__all__ = ["MAX_NAME_LENGTH", "NAME_RULE", "check_name", "check_optional_name", "name_problem"]

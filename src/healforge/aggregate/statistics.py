"""The one statistic vocabulary of healforge: canonical names, aliases, parameters and defaults.

Every front end (``aggregate``, ``finalize``, ``run``) resolves statistic names here, so the same
name means the same computation with the same defaults everywhere.

Canonical names and their aliases:

==================  =========================================  ==================================
canonical           aliases                                    parameters (default)
==================  =========================================  ==================================
``count``           \\-                                          \\-
``sum``             \\-                                          \\-
``mean``            \\-                                          \\-
``var``, ``std``    \\-                                          ``ddof`` (1)
``min``, ``max``    \\-                                          \\-
``quantile``        ``median`` (q=0.5), ``qNN``, ``pNN``        ``q`` (required; a list gives one
                    (``q05`` = ``p05`` = 0.05, ``q999`` = 0.999)  variable per level)
``mad``             \\-                                          \\-
``robust_std``      \\-                                          \\- (1.4826 x mad)
``weighted_sum``    ``wsum``                                   ``weight``
``weighted_mean``   ``wmean``                                  ``weight``
``weighted_var``    ``wvar``                                   ``weight``, ``ddof`` (0)
``weighted_std``    ``wstd``                                   ``weight``, ``ddof`` (0)
==================  =========================================  ==================================

``weighted_var`` is ``sum w (x - wmean)^2 / (sum w - ddof)``; with the default ``ddof`` 0 the
population weighted variance. Any other name is a user function, one of the numpy functions of
:mod:`healforge.registry` (never an import path: names come from files and options), or a callable
passed through the Python API; user functions are computable only by the exact aggregation, which
sees every value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from healforge.errors import OptionError

CANONICAL = (
    "count",
    "sum",
    "mean",
    "var",
    "std",
    "min",
    "max",
    "quantile",
    "mad",
    "robust_std",
    "weighted_sum",
    "weighted_mean",
    "weighted_var",
    "weighted_std",
)
ALIASES = {"wsum": "weighted_sum", "wmean": "weighted_mean", "wvar": "weighted_var", "wstd": "weighted_std"}
DEFAULT_DDOF = {"var": 1, "std": 1, "weighted_var": 0, "weighted_std": 0}
PARAMETERS: dict[str, tuple[set[str], set[str]]] = {  # name -> (allowed, required)
    "count": (set(), set()),
    "sum": (set(), set()),
    "mean": (set(), set()),
    "var": ({"ddof"}, set()),
    "std": ({"ddof"}, set()),
    "min": (set(), set()),
    "max": (set(), set()),
    "median": (set(), set()),
    "quantile": ({"q"}, {"q"}),
    "mad": (set(), set()),
    "robust_std": (set(), set()),
    "weighted_sum": ({"weight"}, set()),
    "weighted_mean": ({"weight"}, set()),
    "weighted_var": ({"weight", "ddof"}, set()),
    "weighted_std": ({"weight", "ddof"}, set()),
}
MAD_TO_STD = 1.4826
DEFAULT_STATS = ("count", "mean", "std", "min", "max", "median")
MOMENTS = ("count", "sum", "mean", "var", "std", "min", "max")
WEIGHTED = ("weighted_sum", "weighted_mean", "weighted_var", "weighted_std")
_QUANTILE = re.compile(r"^[qp](\d{2,})$")


@dataclass(frozen=True)
class CellMoments:
    """What a streaming state holds per cell for one column, as streaming implementations see it:
    ``n`` values, their ``sum``, ``mean``, ``min``, ``max`` and ``m2`` (sum of squared deviations
    from the mean); arrays aligned with the state's cells."""

    n: np.ndarray
    sum: np.ndarray
    mean: np.ndarray
    min: np.ndarray
    max: np.ndarray
    m2: np.ndarray


@dataclass(frozen=True)
class Statistic:
    """A statistic added to the vocabulary with :func:`register_statistic`.

    ``exact(values, starts, counts)`` gets the values of every non-empty cell sorted by cell and,
    within a cell, by value (cell ``i`` is ``values[starts[i]:starts[i] + counts[i]]``) and returns
    one value per cell; ``streaming(moments)`` computes it from a state's :class:`CellMoments`
    (``None``: exact aggregation only). ``numpy`` names the numpy functions it equals, so that
    ``numpy:NAME`` means this statistic everywhere (API, CLI and pipeline files alike).
    """

    name: str
    exact: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    streaming: Callable[[CellMoments], np.ndarray] | None = None
    numpy: tuple[str, ...] = ()
    parameters: tuple[frozenset[str], frozenset[str]] = (frozenset(), frozenset())


REGISTERED: dict[str, Statistic] = {}


def register_statistic(
    name: str,
    exact: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
    streaming: Callable[[CellMoments], np.ndarray] | None = None,
    *,
    numpy: Sequence[str] = (),
    replace: bool = False,
) -> Statistic:
    """Add a statistic to the one vocabulary: ``aggregate``, ``finalize``, ``run`` and zagg files
    accept ``name`` at once (see :class:`Statistic` for the two implementations)."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise OptionError(f"a statistic name is an identifier, not {name!r}")
    if (name in REGISTERED and not replace) or _builtin_name(name):
        raise OptionError(f"statistic {name!r} is already in the vocabulary")
    stat = Statistic(name, exact, streaming, tuple(numpy))
    REGISTERED[name] = stat
    return stat


def streaming_names() -> list[str]:
    """Statistic names a streaming state can give (built-in and registered)."""
    return [*CANONICAL, *(n for n, st in REGISTERED.items() if st.streaming is not None)]


def unregister_statistic(name: str) -> None:
    """Remove a registered statistic (tests, plugins replacing one)."""
    REGISTERED.pop(name, None)


def _builtin_name(name: str) -> bool:
    return name in CANONICAL or name in ALIASES or name == "median" or quantile_level(name) is not None


def _registered_name(name: str) -> str | None:
    """The registered statistic ``name`` means, directly or as a numpy function it equals."""
    if name in REGISTERED:
        return name
    from healforge.registry import numpy_function_name

    base = numpy_function_name(name)
    return next((s.name for s in REGISTERED.values() if base is not None and base in s.numpy), None)


def _ptp_exact(values: np.ndarray, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    return values[starts + counts - 1] - values[starts]


@dataclass(frozen=True)
class Stat:
    """A resolved statistic: canonical ``function``, its quantile level / ddof, and the ``label``
    the user wrote (output column suffix). ``user`` is ``("ufunc" | "callable", function)`` for user
    functions."""

    function: str
    label: str
    q: float | None = None
    ddof: int | None = None
    user: tuple[str, Callable] | None = None

    @property
    def weighted(self) -> bool:
        return self.function in WEIGHTED

    @property
    def from_state(self) -> bool:
        """Whether a streaming state can give this statistic (everything but user functions and
        registered statistics without a streaming implementation)."""
        registered = REGISTERED.get(self.function)
        return self.user is None and (registered is None or registered.streaming is not None)

    def ddof_or(self, default: int | None = None) -> int:
        """This statistic's ddof: its own, else ``default`` (var/std only), else the vocabulary's."""
        if self.ddof is not None:
            return self.ddof
        if default is not None and self.function in ("var", "std"):
            return default
        return DEFAULT_DDOF.get(self.function, 0)


def quantile_level(name: str) -> float | None:
    """The level of a ``qNN`` / ``pNN`` name (``q05`` -> 0.05, ``p999`` -> 0.999), else ``None``."""
    m = _QUANTILE.match(name)
    if not m:
        return None
    digits = m.group(1)
    return int(digits) / 10 ** len(digits)


def canonical_name(name: str) -> str | None:
    """The canonical function of a built-in name or alias (``None`` for user functions)."""
    if name in CANONICAL:
        return name
    if name in ALIASES:
        return ALIASES[name]
    if name == "median" or quantile_level(name) is not None:
        return "quantile"
    return _registered_name(name)


def resolve(
    name: str | Callable, parameters: Mapping[str, Any] | None = None, label: str | None = None
) -> Stat:
    """Resolve a statistic name (canonical, alias or registered numpy function, see
    :mod:`healforge.registry`) with its parameters; a callable (Python API only) is a user
    function taking the 1-D array of a cell's values, labelled by its ``__name__``.

    ``parameters`` may hold ``q`` (one level; see :func:`expand_quantiles` for lists) and ``ddof``.
    Raises ``ValueError`` naming the unknown statistic; nothing is imported for a name.
    """
    if not isinstance(name, str):
        if not callable(name):
            raise OptionError(f"a statistic is a name or a callable, not {type(name).__name__}")
        label = label or stat_label(name)
        return Stat(label, label, user=("callable", name))
    p = dict(parameters or {})
    label = label or stat_label(name)
    canon = canonical_name(name)
    if canon is None:
        return Stat(name, label, user=resolve_user(name))
    q = None
    if canon == "quantile":
        q = 0.5 if name == "median" else quantile_level(name)
        if q is None:
            if "q" not in p or isinstance(p["q"], list | tuple):
                raise OptionError(f"statistic {name!r} needs one quantile level q")
            q = float(p["q"])
    ddof = p.get("ddof")
    return Stat(canon, label, q=q, ddof=None if ddof is None else int(ddof))


def expand_quantiles(q: Any) -> list[float]:
    """Quantile levels of a ``q`` parameter (a number or a list)."""
    return [float(x) for x in (q if isinstance(q, list | tuple) else [q])]


def resolve_user(name: str) -> tuple[str, Callable]:
    """``("ufunc", ufunc)`` or ``("callable", function)`` for a user statistic name: only the
    numpy functions of :mod:`healforge.registry` (``UnknownName`` otherwise; nothing imported)."""
    from healforge.registry import UnknownName, user_statistic

    try:
        return user_statistic(name)
    except UnknownName:
        raise UnknownName(
            f"unknown statistic {name!r}: not in healforge's vocabulary (files and options name "
            f"data, never code to import); {vocabulary_hint()}"
        ) from None


def vocabulary_hint() -> str:
    """One line listing what a statistic may be named."""
    from healforge.registry import numpy_hint

    registered = f", {', '.join(REGISTERED)}" if REGISTERED else ""
    return (
        f"built-in: {', '.join(CANONICAL)}{registered} (aliases {', '.join(ALIASES)}, median, qNN, "
        f"pNN); {numpy_hint()}"
    )


def stat_label(name: str | Callable) -> str:
    """Column-name suffix of a statistic name (user functions: the last part of their name)."""
    if not isinstance(name, str):
        return str(getattr(name, "__name__", type(name).__name__))
    if _builtin_name(name) or name in REGISTERED:
        return name
    return re.split(r"[.:]", name)[-1]


def resolve_all(names: Sequence[str], *, from_state: bool = False) -> list[Stat]:
    """Resolve statistic names, ``count`` first (added when missing); with ``from_state`` refuse
    user functions (a state holds no raw values)."""
    names = list(dict.fromkeys(names))
    if "count" not in names:
        names.insert(0, "count")
    out = [resolve(n) for n in names]
    if from_state:
        for s in out:
            if not s.from_state:
                raise OptionError(
                    f"statistic {s.function!r} cannot be computed from a streaming state; available: "
                    f"{', '.join(CANONICAL)} and their aliases (use `healforge aggregate` for user functions)"
                )
    return out


register_statistic("ptp", _ptp_exact, lambda m: m.max - m.min, numpy=("ptp",))

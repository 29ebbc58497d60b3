"""Aggregation of observations into HEALPix cells: sidecars, exact statistics, streaming states.

Modules: :mod:`~.sidecar` (assignment tables), :mod:`~.assign` / :mod:`~.footprints` (points and
polygons to cells), :mod:`~.stats` (exact statistics), :mod:`~.sketch` (quantile sketch),
:mod:`~.state` (mergeable state), :mod:`~.shuffle` (exact statistics at scale, rows shuffled by
shard), :mod:`~.finalize` (state to map), :mod:`~.maptable` (map tables),
:mod:`~.api` (public entry points).

``healforge.aggregate`` is both this package and the function :func:`healforge.aggregate.api.aggregate`:
calling the package calls the function.
"""

from __future__ import annotations

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from healforge.aggregate.api import aggregate

        return aggregate(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

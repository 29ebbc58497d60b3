"""zagg compatibility: a zagg pipeline file runs as it is, with zagg's meanings.

``healforge run ZAGG.yaml [--inputs FILES | catalog.json] [--store PATH] [--exact]``; see
docs/zagg.md for what maps to what. Modules: :mod:`~healforge.zagg.translate` (zagg file ->
healforge pipeline), :mod:`~healforge.zagg.read` (HDF5 granules: groups, filters, levels),
:mod:`~healforge.zagg.catalog` (granule catalogs), :mod:`~healforge.zagg.cellexpr` (zagg
expressions) and :mod:`~healforge.zagg.run` (the runs, exact ones through :mod:`healforge.aggregate.shuffle`).
"""

from healforge.zagg.run import finish_map, morton_of, run_zagg
from healforge.zagg.translate import ZaggPlan, is_zagg, load, translate

__all__ = ["ZaggPlan", "finish_map", "is_zagg", "load", "morton_of", "run_zagg", "translate"]

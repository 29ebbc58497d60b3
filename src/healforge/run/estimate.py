"""``run --plan``: the estimate of :mod:`healforge.aggregate.estimate` for a pipeline file."""

from __future__ import annotations

from healforge.aggregate.estimate import AggregateEstimate, estimate_points
from healforge.errors import OptionError
from healforge.run.load import to_plan


def run_plan(cfg, workers: int | None = None, exact: bool = False) -> AggregateEstimate:
    """:func:`estimate_points` for a pipeline configuration (points)."""
    if cfg.coordinates.geometry:
        raise OptionError("--plan estimates point pipelines (coordinates lon/lat)")
    plan = to_plan(cfg)
    n_values = len({c.key for c in plan.state_columns})
    orders = cfg.outputs.orders or [cfg.assignment.order]
    return estimate_points(
        list(plan.sources), plan.assignment.lon, plan.assignment.lat, cfg.assignment.order, n_values,
        len(cfg.variables), workers=workers, mode="shuffled" if exact else "streaming", orders=orders,
    )  # fmt: skip

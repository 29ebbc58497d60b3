"""Loading a pipeline: YAML file -> validated :class:`~healforge.run.schema.PipelineConfig`
-> :class:`~healforge.aggregate.plan.Plan` for the one aggregation core."""

from __future__ import annotations

import os

from healforge.run.schema import ConfigError, PipelineConfig
from healforge.run.validate import validate_pipeline


def load_pipeline(path: str | os.PathLike, exact: bool | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML file (no input data is read); ``exact`` overrides its
    ``exact`` key when deciding what the run can compute.

    Raises
    ------
    ConfigError
        For unreadable YAML (with line and column) or any invalid key, naming the file.
    """
    import yaml

    path = str(path)
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError([("", "pipeline file not found")], path) from None
    except UnicodeDecodeError:
        raise ConfigError([("", "not a text (YAML) file")], path) from None
    except IsADirectoryError:
        raise ConfigError([("", "is a directory, not a pipeline file")], path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([("", f"{where}not valid YAML: {problem}")], path) from None
    if raw is None:
        raise ConfigError([("", "the pipeline file is empty")], path)
    return validate_pipeline(
        raw, base_dir=os.path.dirname(os.path.abspath(path)), source=path, exact_override=exact
    )


def load_plan(path: str | os.PathLike):
    """Read a pipeline YAML file as a :class:`~healforge.aggregate.plan.Plan`."""
    return to_plan(load_pipeline(path))


def to_plan(cfg: PipelineConfig):
    """The :class:`~healforge.aggregate.plan.Plan` of a validated pipeline: its inputs (one source per
    file, in configuration order), filter, assignment, state columns and statistics."""
    from healforge.aggregate.plan import Assignment, PlanBuilder
    from healforge.aggregate.statistics import canonical_name, expand_quantiles, resolve
    from healforge.expressions import parse_row

    b = PlanBuilder()
    for stat in cfg.statistics:
        if stat.cell is not None:
            b.cell_expression(stat.name, stat.cell, dtype=stat.dtype)
            continue
        canon = canonical_name(stat.function)
        values = stat.expression or (parse_row(stat.column) if stat.column else None)
        weight = stat.weight if canon is not None and canon.startswith("weighted_") else None
        key = b.column(values, weight)
        params = {k: v for k, v in stat.parameters.items() if k != "weight"}
        if canon == "quantile" and "q" in params:
            for name, q in zip(stat.output_names, expand_quantiles(params["q"]), strict=True):
                b.statistic(name, key, resolve("quantile", {"q": q}, label=name), stat.dtype)
        else:
            b.statistic(stat.name, key, resolve(stat.function, params, label=stat.name), stat.dtype)
    sources, seen = [], set()
    for spec in cfg.inputs:
        for s in spec.sources():
            if s.path not in seen:
                seen.add(s.path)
                sources.append(s)
    a, co = cfg.assignment, cfg.coordinates
    footprints = co.geometry is not None and a.mode != "points"
    assignment = Assignment(
        order=a.order,
        lon=None if footprints else co.lon,
        lat=None if footprints else co.lat,
        geometry=co.geometry if footprints else None,
        mode=a.mode if footprints else "strict",
        lon_convention=a.lon_convention,
        latitude=a.latitude,
        on_bad_rows=a.on_bad_rows,
    )
    return b.build(
        sources, assignment, filter=cfg.filter, radius_km=a.radius_km, name=cfg.name, fills=cfg.fills
    )

"""Validated YAML pipeline configuration (``healforge run PIPELINE.yaml``).

A pipeline goes from raw files to finished map products. Every key is checked before any data is
read; all problems are reported at once, each naming the file and the key path (for example
``pipeline.yaml: outputs.zarr.orders[1]: ...``). Relative local paths are resolved against the
directory of the YAML file. Example::

    name: atl06-elevation
    inputs:
      - paths: ["granules/*.h5"]            # local paths, globs or s3:// URLs
        format: hdf5                        # csv | parquet | geoparquet | fits | hdf5 (from suffix)
        groups: [gt1l, gt1r, gt2l, gt2r, gt3l, gt3r]   # or a pattern such as "gt*"
        columns:                            # output column -> dataset template / source column
          latitude: /{group}/land_ice_segments/latitude
          longitude: /{group}/land_ice_segments/longitude
          h_li: /{group}/land_ice_segments/h_li
          h_li_sigma: /{group}/land_ice_segments/h_li_sigma
          quality: /{group}/land_ice_segments/atl06_quality_summary
        storage_options: {anon: true}       # fsspec options (s3 endpoint, credentials)
    filter: "quality == 0 and h_li_sigma > 0"
    coordinates: {lon: longitude, lat: latitude}
    assignment: {order: 12, mode: points, lon_convention: "-180_180", latitude: authalic}
    statistics:
      h_mean: {function: mean, column: h_li}
      h_wmean: {function: weighted_mean, column: h_li, parameters: {weight: "1 / h_li_sigma**2"}}
      h_q: {function: quantile, column: h_li, parameters: {q: [0.1, 0.5, 0.9]}}
      h_span: {function: numpy.ptp, column: h_li, dtype: float32}
      n: {function: count}
      h_err: {expression: "1 / sqrt(sum(1 / h_li_sigma**2))"}   # a per-cell expression
      density: {expression: "count(h_li) / area"}                # area: sr (km2 with radius_km)
    outputs:
      state: out/state                      # streaming state: reruns resume from it
      zarr: {path: out/atl06.zarr, orders: [12, 10, 8]}
      parquet: {path: out/atl06.parquet, orders: [12]}
      geoparquet: {path: out/atl06.geoparquet, order: 8}
      plots:
        - {path: out/h.png, variable: h_mean, order: 10, projection: polar-south, range: [0, 3000]}

Modules: :mod:`~healforge.run.schema` (keys, types, defaults), :mod:`~healforge.run.validate`
(validation), :mod:`~healforge.run.load` (YAML -> config -> :class:`~healforge.aggregate.plan.Plan`).
Statistic functions are the vocabulary of :mod:`healforge.aggregate.statistics` (aliases such as
``wmean``, ``q05``, ``p05`` allowed). Statistic variables: a quantile with a list ``q`` gives one variable per level, named
``{name}_p{100 q}`` (``h_q_p10``, ``h_q_p50``, ``h_q_p90``); every other statistic gives ``{name}``.
"""

from __future__ import annotations

from healforge.run.load import load_pipeline, load_plan, to_plan
from healforge.run.schema import ConfigError, PipelineConfig
from healforge.run.validate import validate_pipeline

__all__ = ["ConfigError", "PipelineConfig", "load_pipeline", "load_plan", "to_plan", "validate_pipeline"]

"""Helpers for the map-product tests: map tables built directly with numpy."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from healforge.maps.table import make_map_table
from healforge.pixel import lonlat_to_pixel


def random_points(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lon = rng.uniform(0, 360, n)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    value = 10 + 0.1 * lat + rng.normal(0, 1, n)
    return lon, lat, value


def point_map(lon, lat, value, order: int, **meta) -> pa.Table:
    """count / mean / min of ``value`` per cell, by np.bincount (independent of healforge's aggregation)."""
    cells = lonlat_to_pixel(lon, lat, order)
    uniq, inv = np.unique(cells, return_inverse=True)
    count = np.bincount(inv)
    mean = np.bincount(inv, weights=value) / count
    vmin = np.full(uniq.size, np.inf)
    np.minimum.at(vmin, inv, value)
    return make_map_table(
        uniq,
        {"value_count": count.astype(np.int64), "value_mean": mean, "value_min": vmin},
        order,
        statistics=["count", "mean", "min"],
        source_columns=["value"],
        **meta,
    )


def xdggs_centres(ds) -> tuple[np.ndarray, np.ndarray]:
    """lon, lat of the cells of a map dataset as xdggs decodes them (old and new xdggs APIs)."""
    import xdggs

    dec = xdggs.decode(ds)
    acc = dec.dggs
    if hasattr(acc, "cell_centers"):
        centres = acc.cell_centers()
        return np.asarray(centres["longitude"]), np.asarray(centres["latitude"])
    lon, lat = acc.grid_info.cell_ids2geographic(dec.cell_ids.values)
    return np.asarray(lon), np.asarray(lat)


def pyramid(orders=(2, 4, 6), n: int = 50_000, seed: int = 0, **meta) -> dict[int, pa.Table]:
    lon, lat, value = random_points(n, seed)
    return {k: point_map(lon, lat, value, k, **meta) for k in orders}

"""Brute-force answers for lsdb queries on nested catalogs, computed from the raw inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hats.pixel_math.spatial_index import compute_spatial_index


def in_cone(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float, radius_arcsec: float) -> np.ndarray:
    """Mask of the points within ``radius_arcsec`` of ``(ra0, dec0)`` (haversine distance)."""
    r1, d1, r0, d0 = map(np.radians, (np.asarray(ra, float), np.asarray(dec, float), ra0, dec0))
    h = np.sin((d1 - d0) / 2) ** 2 + np.cos(d1) * np.cos(d0) * np.sin((r1 - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600 <= radius_arcsec


def in_pixel(ra: np.ndarray, dec: np.ndarray, order: int, pixel: int) -> np.ndarray:
    """Mask of the points inside HEALPix ``pixel`` at ``order`` (hats' own pixel math)."""
    return (compute_spatial_index(np.asarray(ra, float), np.asarray(dec, float)) >> 2 * (29 - order)) == pixel


def light_curves(src: pd.DataFrame, key: str, ids, time: str, value: str) -> dict:
    """``{object id: list of src[value] sorted by time}`` for each of ``ids`` (empty lists included)."""
    srt = src.sort_values([key, time], kind="stable")
    groups = srt.groupby(key, sort=False)[value].apply(list).to_dict()
    return {i: groups.get(i, []) for i in ids}


def nested_lists(df: pd.DataFrame, key: str, column: str, field: str) -> dict:
    """``{object id: list of column.field}`` from an lsdb/nested-pandas frame."""
    return {k: list(v[field]) for k, v in zip(df[key].tolist(), df[column], strict=True)}


def assert_same_lists(got: dict, want: dict) -> None:
    """The same object ids with equal lists (floats compared closely)."""
    assert sorted(got) == sorted(want)
    for k, v in want.items():
        assert np.allclose(np.asarray(got[k], float), np.asarray(v, float)), k

"""Exact per-cell statistics against plain pandas/numpy computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import healforge
from healforge.pixel import lonlat_to_pixel


def _points(seed=0, n=20000):
    rng = np.random.default_rng(seed)
    lon = rng.uniform(-180, 360, n)
    lat = rng.uniform(-60, 60, n)  # polar caps stay empty
    v = rng.normal(5, 2, n)
    v[rng.random(n) < 0.1] = np.nan
    sigma = rng.uniform(0.5, 2, n)
    df = pd.DataFrame({"lon": lon, "lat": lat, "v": v, "sigma": sigma})
    extra = pd.DataFrame(
        {
            # a single-value cell, a cell of identical values, a cell with only NaN values
            "lon": [45.0, 135.0, 135.0, 135.0, 225.0, 225.0],
            "lat": [80.0, 80.0, 80.0, 80.0, 80.0, 80.0],
            "v": [3.5, 7.25, 7.25, 7.25, np.nan, np.nan],
            "sigma": [1.0, 1.0, 2.0, 1.0, 1.0, 1.0],
        }
    )
    return pd.concat([df, extra], ignore_index=True)


def cell_of(df, order):
    return lonlat_to_pixel(np.mod(df.lon.to_numpy(), 360), df.lat.to_numpy(), order)


def _reference(df, order, ddof=1):
    cell = lonlat_to_pixel(np.mod(df.lon.to_numpy(), 360), df.lat.to_numpy(), order)
    d = df.assign(cell=cell, w=1 / df.sigma**2)
    g = d.groupby("cell")
    ref = pd.DataFrame(
        {
            "count": g.v.count(),
            "sum": g.v.sum(),
            "mean": g.v.mean(),
            "var": g.v.var(ddof=ddof),
            "std": g.v.std(ddof=ddof),
            "min": g.v.min(),
            "max": g.v.max(),
            "median": g.v.median(),
            "q05": g.v.quantile(0.05),
            "q25": g.v.quantile(0.25),
            "q999": g.v.quantile(0.999),
        }
    )
    ref["mad"] = g.v.apply(lambda x: np.nanmedian(np.abs(x - np.nanmedian(x))) if x.notna().any() else np.nan)
    ref["robust_std"] = 1.4826 * ref["mad"]
    dv = d[d.v.notna()]
    gw = dv.groupby("cell")
    wsum = gw.w.sum()
    wmean = gw.apply(lambda t: np.sum(t.w * t.v) / np.sum(t.w))
    wvar = gw.apply(lambda t: np.sum(t.w * (t.v - np.sum(t.w * t.v) / np.sum(t.w)) ** 2) / np.sum(t.w))
    ref["wsum"] = wsum.reindex(ref.index).fillna(0.0)
    ref["wmean"] = wmean.reindex(ref.index)
    ref["wvar"] = wvar.reindex(ref.index)
    return ref


STATS = [
    "count",
    "sum",
    "mean",
    "var",
    "std",
    "min",
    "max",
    "median",
    "q05",
    "q25",
    "q999",
    "mad",
    "robust_std",
    "wsum",
    "wmean",
    "wvar",
]


@pytest.mark.parametrize("ddof", [0, 1])
def test_exact_points_match_pandas(ddof):
    df = _points()
    order = 3
    m = healforge.aggregate(
        df, ["v"], STATS, order=order, lon="lon", lat="lat", weight="1 / sigma**2", ddof=ddof
    )
    ref = _reference(df, order, ddof)
    got = m.to_pandas().set_index("cell_ids")
    assert list(got.index) == sorted(ref.index)  # every cell with rows, sorted, nothing else
    assert m.schema.field("v_count").type == pa.int64()
    assert m.schema.field("cell_ids").type == pa.int64()
    for s in STATS:
        np.testing.assert_allclose(got[f"v_{s}"], ref[s].loc[got.index], rtol=1e-10, atol=1e-12, err_msg=s)
    # moment-only statistics take a sort-free path: same numbers
    mom = ["count", "sum", "mean", "var", "std", "min", "max", "wsum", "wmean", "wvar"]
    fast = healforge.aggregate(
        df, ["v"], mom, order=order, lon="lon", lat="lat", weight="1 / sigma**2", ddof=ddof
    )
    fast = fast.to_pandas().set_index("cell_ids")
    for s in mom:
        np.testing.assert_allclose(fast[f"v_{s}"], ref[s].loc[got.index], rtol=1e-10, atol=1e-12, err_msg=s)
    # without weighted statistics the values are sorted per cell after one shared grouping
    plain = [s for s in STATS if not s.startswith("w")]
    unw = healforge.aggregate(df, ["v", "sigma"], plain, order=order, lon="lon", lat="lat", ddof=ddof)
    unw = unw.to_pandas().set_index("cell_ids")
    for s in plain:
        np.testing.assert_allclose(unw[f"v_{s}"], ref[s].loc[got.index], rtol=1e-10, atol=1e-12, err_msg=s)
    np.testing.assert_allclose(unw["sigma_median"], df.groupby(cell_of(df, order)).sigma.median(), rtol=1e-12)
    # those statistics are found by selection; a user statistic beside them sorts every cell:
    # the order statistics agree bit for bit, the moments to rounding
    sort = healforge.aggregate(
        df, ["v", "sigma"], [*plain, "maximum"], order=order, lon="lon", lat="lat", ddof=ddof
    )
    sort = sort.to_pandas().set_index("cell_ids")
    for c in ("v", "sigma"):
        for s in plain:
            if s in ("count", "min", "max", "median", "mad") or s.startswith("q"):
                np.testing.assert_array_equal(unw[f"{c}_{s}"], sort[f"{c}_{s}"], err_msg=s)
            else:
                np.testing.assert_allclose(
                    unw[f"{c}_{s}"], sort[f"{c}_{s}"], rtol=1e-13, atol=1e-13, err_msg=s
                )
    # the rows in another order give the same numbers (sums accumulated exactly enough)
    perm = df.sample(frac=1.0, random_state=3).reset_index(drop=True)
    for stats in (plain, [*plain, "maximum"]):
        a = healforge.aggregate(df, ["v"], stats, order=order, lon="lon", lat="lat", ddof=ddof)
        b = healforge.aggregate(perm, ["v"], stats, order=order, lon="lon", lat="lat", ddof=ddof)
        assert a.to_pandas().equals(b.to_pandas()), stats  # NaN-aware
    # the special cells
    cell = lambda lon: int(lonlat_to_pixel(np.array([lon]), np.array([80.0]), order)[0])  # noqa: E731
    assert got.loc[cell(45.0), "v_count"] == 1 and got.loc[cell(45.0), "v_median"] == 3.5
    assert np.isnan(got.loc[cell(45.0), "v_std"]) if ddof == 1 else got.loc[cell(45.0), "v_std"] == 0
    assert got.loc[cell(135.0), "v_std"] == 0.0 and got.loc[cell(135.0), "v_mad"] == 0.0
    assert got.loc[cell(225.0), "v_count"] == 0 and np.isnan(got.loc[cell(225.0), "v_mean"])
    from healforge.aggregate.maptable import map_metadata

    meta = map_metadata(m)
    assert meta["order"] == order and meta["indexing_scheme"] == "nested"
    assert meta["columns"] == ["v"] and "median" in meta["statistics"]
    assert meta["rows_in"] == len(df)


def test_sidecar_path_equals_direct_and_min_count(tmp_path):
    df = _points(1, 5000)
    sc = healforge.sidecar(df, [2, 4], lon="lon", lat="lat", output=tmp_path / "sc")
    assert (tmp_path / "sc" / "order=4.parquet").exists()
    assert sc[4].column_names == ["source_id", "healpix_id", "weight"]
    np.testing.assert_array_equal(sc[4].column("source_id").to_numpy(), np.arange(len(df)))
    np.testing.assert_array_equal(
        sc[2].column("healpix_id").to_numpy(), sc[4].column("healpix_id").to_numpy() >> 4
    )
    a = healforge.aggregate(
        df, ["v"], ["count", "mean", "median"], sidecar=tmp_path / "sc", order=4, min_count=3
    )
    b = healforge.aggregate(
        df, ["v"], ["count", "mean", "median"], order=4, lon="lon", lat="lat", min_count=3
    )
    pd.testing.assert_frame_equal(a.to_pandas(), b.to_pandas())
    cnt = a.column("v_count").to_numpy()
    assert np.all(np.isnan(a.column("v_mean").to_numpy()[cnt < 3]))
    assert np.all(np.isfinite(a.column("v_mean").to_numpy()[cnt >= 3]))


def test_user_statistics_and_expressions():
    df = _points(2, 4000)
    m = healforge.aggregate(
        df, ["v", "snr=v / sigma"], ["count", "maximum", "numpy.ptp", "mean"], order=2, lon="lon", lat="lat"
    ).to_pandas()
    cell = lonlat_to_pixel(np.mod(df.lon.to_numpy(), 360), df.lat.to_numpy(), 2)
    d = df.assign(cell=cell, snr=df.v / df.sigma).dropna(subset=["v"])
    g = d.groupby("cell")
    got = m.set_index("cell_ids").loc[g.size().index]
    np.testing.assert_allclose(got["v_maximum"], g.v.max())
    np.testing.assert_allclose(got["v_ptp"], g.v.max() - g.v.min())
    np.testing.assert_allclose(got["snr_mean"], g.snr.mean(), rtol=1e-12)


def test_unknown_statistic_and_missing_column():
    df = _points(3, 100)
    with pytest.raises(ValueError, match="unknown statistic 'nonsense'"):
        healforge.aggregate(df, ["v"], ["nonsense"], order=1, lon="lon", lat="lat")
    with pytest.raises(
        healforge.BadInputError, match="'nope' not found; available columns: lon, lat, v, sigma"
    ):
        healforge.aggregate(df, ["nope"], ["mean"], order=1, lon="lon", lat="lat")

"""Pyramid finalize: coarser orders by merging states; Zarr decodes with xdggs at every order."""

import healpy as hp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xarray as xr
import xdggs

import healforge
from conftest import run_cli
from healforge.maps.zarr_store import map_orders
from maps_util import xdggs_centres

STATS = ["count", "mean", "std", "median"]


@pytest.fixture(scope="module")
def survey():
    """Points dense enough that coarse cells hold thousands of values; a large offset in ``v``."""
    rng = np.random.default_rng(11)
    n = 150_000
    ra = np.r_[rng.uniform(30, 80, n - 5000), rng.uniform(0, 360, 5000)]
    dec = np.r_[rng.uniform(-20, 20, n - 5000), np.degrees(np.arcsin(rng.uniform(-1, 1, 5000)))]
    v = 1e6 + 0.05 * dec + rng.standard_t(5, n)  # skewed-ish tails: sketch median is not trivial
    u = np.where(rng.random(n) < 0.1, np.nan, rng.exponential(3.0, n))  # missing values too
    return pa.table({"ra": ra, "dec": dec, "v": v, "u": u})


@pytest.fixture(scope="module")
def state(survey, tmp_path_factory):
    path = tmp_path_factory.mktemp("pyr") / "state.parquet"
    # small batches: the order-6 state is itself a merge of many partial states
    healforge.accumulate(survey, ["v", "u"], order=6, lon="ra", lat="dec", batch_rows=20_000, output=path)
    return path


def test_cli_zarr_pyramid_matches_exact_aggregation(survey, state, tmp_path):
    out = tmp_path / "map.zarr"
    proc = run_cli("finalize", state, "-o", out, "--stats", *STATS, "--min-order", 3)
    assert "order 3" in proc.stderr and "order 6" in proc.stderr
    assert map_orders(out) == [3, 4, 5, 6]
    for order in (3, 4, 5, 6):
        ds = xr.open_zarr(str(out), group=f"order_{order:02d}")
        decoded = xdggs.decode(ds)
        assert decoded.dggs.grid_info.level == order
        cells = ds.cell_ids.values
        assert np.all(np.diff(cells) > 0)
        # centres from xdggs equal healpy's (an independent HEALPix library)
        lon, lat = xdggs_centres(ds)
        hlon, hlat = hp.pix2ang(2**order, cells, nest=True, lonlat=True)
        np.testing.assert_allclose(np.mod(lon, 360), hlon, atol=1e-9)
        np.testing.assert_allclose(lat, hlat, atol=1e-9)
        # every statistic, quantiles included, exists at every level
        for col in ("v", "u"):
            for s in STATS:
                assert f"{col}_{s}" in ds
        if order == 6:
            continue
        exact = healforge.aggregate(survey, ["v", "u"], STATS, order=order, lon="ra", lat="dec")
        np.testing.assert_array_equal(exact.column("cell_ids").to_numpy(), cells)
        for col in ("v", "u"):
            n = exact.column(f"{col}_count").to_numpy()
            np.testing.assert_array_equal(ds[f"{col}_count"].values, n)
            for s in ("mean", "std"):
                want = exact.column(f"{col}_{s}").to_numpy()
                np.testing.assert_allclose(ds[f"{col}_{s}"].values, want, rtol=1e-9, equal_nan=True)
            big = n >= 1000
            if order == 3:
                assert big.sum() >= 20
            std = exact.column(f"{col}_std").to_numpy()[big]
            err = np.abs(ds[f"{col}_median"].values[big] - exact.column(f"{col}_median").to_numpy()[big])
            assert np.all(err <= 0.01 * std), (order, col, (err / std).max())


def test_api_pyramid_to_parquet_and_single_order(survey, state, tmp_path):
    pyr = healforge.finalize(state, STATS, min_order=4, output=tmp_path / "map.parquet")
    assert sorted(pyr) == [4, 5, 6]
    files = sorted(p.name for p in (tmp_path / "map.parquet").iterdir())
    assert files == ["order_04.parquet", "order_05.parquet", "order_06.parquet"]
    back = pq.read_table(tmp_path / "map.parquet" / "order_04.parquet")
    np.testing.assert_array_equal(back.column("v_median").to_numpy(), pyr[4].column("v_median").to_numpy())
    # each level equals the state coarsened straight from the finest order
    st = healforge.State.load(state)
    direct = healforge.finalize(st.coarsen(4), STATS)
    np.testing.assert_array_equal(direct.column("v_count").to_numpy(), pyr[4].column("v_count").to_numpy())
    np.testing.assert_allclose(
        direct.column("v_mean").to_numpy(), pyr[4].column("v_mean").to_numpy(), rtol=1e-12
    )
    # counts add up across levels (nothing lost on the way down)
    assert pyr[4].column("v_count").to_numpy().sum() == survey.num_rows
    # no min-order: one map, as before; a .zarr output holds one group
    single = healforge.finalize(state, STATS, output=tmp_path / "one.zarr")
    assert isinstance(single, pa.Table)
    assert map_orders(tmp_path / "one.zarr") == [6]
    with pytest.raises(ValueError, match="finer"):
        healforge.finalize(state, STATS, min_order=7)

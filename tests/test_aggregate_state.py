"""Streaming states: batch splits and merge orders agree with exact statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import healforge
from healforge.aggregate.state import State, StateMismatchError
from healforge.engine import Engine

MOMENT_STATS = ["count", "sum", "mean", "var", "std", "min", "max", "wsum", "wmean", "wvar"]


def _data(seed, n, offset=0.0, lat_max=90):
    rng = np.random.default_rng(seed)
    v = offset + rng.normal(0, 1, n)
    v[rng.random(n) < 0.05] = np.nan
    return pd.DataFrame(
        {
            "lon": rng.uniform(0, 360, n),
            "lat": np.degrees(np.arcsin(rng.uniform(-1, np.sin(np.radians(lat_max)), n))),
            "v": v,
            "u": rng.exponential(3, n),
            "sigma": rng.uniform(0.5, 2.0, n),
        }
    )


def _random_batches(df, rng, k):
    perm = rng.permutation(len(df))
    cuts = np.sort(rng.choice(np.arange(1, len(df)), k - 1, replace=False))
    return [df.iloc[idx].reset_index(drop=True) for idx in np.split(perm, cuts)]


def _assert_moments(got, exact, cols, rtol=1e-9):
    g, e = got.to_pandas().set_index("cell_ids"), exact.to_pandas().set_index("cell_ids")
    assert list(g.index) == list(e.index)
    for c in cols:
        np.testing.assert_array_equal(g[f"{c}_count"], e[f"{c}_count"])
        np.testing.assert_array_equal(g[f"{c}_min"], e[f"{c}_min"])
        np.testing.assert_array_equal(g[f"{c}_max"], e[f"{c}_max"])
        for s in ("sum", "mean", "var", "std", "wsum", "wmean", "wvar"):
            np.testing.assert_allclose(g[f"{c}_{s}"], e[f"{c}_{s}"], rtol=rtol, atol=0, err_msg=f"{c}_{s}")


@pytest.mark.parametrize("offset", [0.0, 1e9])
def test_any_split_and_merge_order_matches_exact(offset, tmp_path):
    df = _data(10, 60000, offset)
    rng = np.random.default_rng(5)
    kw = dict(order=2, lon="lon", lat="lat", weight="1 / sigma**2")
    exact = healforge.aggregate(df, ["v", "u"], MOMENT_STATS, **kw)
    if offset:
        # independent check of the exact statistics: shifting by the offset is exact here
        cell = exact.column("cell_ids").to_numpy()
        ref = healforge.aggregate(df.assign(v=df.v - offset), ["v"], ["std", "mean"], **kw).to_pandas()
        np.testing.assert_allclose(exact.column("v_std").to_numpy(), ref.v_std, rtol=1e-12)
        np.testing.assert_allclose(exact.column("v_mean").to_numpy() - offset, ref.v_mean, atol=1e-6)
        assert np.all(
            np.abs(exact.column("v_std").to_numpy()[exact.column("v_count").to_numpy() > 100] - 1) < 0.2
        )
        assert cell.size == 192
    for trial in range(3):
        batches = _random_batches(df, rng, int(rng.integers(2, 9)))
        # batch by batch into one state file, with small read batches inside each input
        path = tmp_path / f"state{trial}.parquet"
        for b in batches:
            healforge.accumulate(b, ["v", "u"], state=path, batch_rows=int(rng.integers(500, 5000)), **kw)
        _assert_moments(healforge.finalize(path, MOMENT_STATS), exact, ["v", "u"])
        # per-batch states merged in a random grouping
        states = [healforge.accumulate(b, ["v", "u"], **kw) for b in batches]
        while len(states) > 1:
            rng.shuffle(states)
            k = int(rng.integers(2, len(states) + 1))
            states = [healforge.merge_states(states[:k])] + states[k:]
        _assert_moments(healforge.finalize(states[0], MOMENT_STATS), exact, ["v", "u"])


def test_sketch_quantiles_within_one_percent_of_std():
    df = _data(11, 150000, offset=1e9)
    df["u"] = np.random.default_rng(1).lognormal(0, 1, len(df))  # skewed
    kw = dict(order=1, lon="lon", lat="lat")
    stats = ["count", "std", "median", "q25", "q75", "q05", "q95"]
    exact = healforge.aggregate(df, ["v", "u"], stats, **kw).to_pandas()
    parts = np.array_split(np.random.default_rng(2).permutation(len(df)), 7)
    states = [healforge.accumulate(df.iloc[p], ["v", "u"], batch_rows=4000, **kw) for p in parts]
    got = healforge.finalize(healforge.merge_states(states), stats).to_pandas()
    assert (exact.v_count >= 1000).all()
    for c in ("v", "u"):
        std = exact[f"{c}_std"]
        for s in ("median", "q25", "q75"):
            err = np.abs(got[f"{c}_{s}"] - exact[f"{c}_{s}"]) / std
            assert err.max() < 0.01, (c, s, err.max())
        for s in ("q05", "q95"):
            assert (np.abs(got[f"{c}_{s}"] - exact[f"{c}_{s}"]) / std).max() < 0.1  # tails: looser


def test_small_cells_are_exact_and_save_load_roundtrip(tmp_path):
    df = _data(12, 3000)
    kw = dict(order=4, lon="lon", lat="lat")
    stats = ["count", "min", "max", "median", "q10", "mad", "robust_std"]
    exact = healforge.aggregate(df, ["v"], stats, **kw).to_pandas()
    st = healforge.accumulate(df, ["v"], batch_rows=700, **kw)
    st.save(tmp_path / "s.parquet")
    back = State.load(tmp_path / "s.parquet")
    meta = pq.read_schema(tmp_path / "s.parquet").metadata[b"healforge_state"]
    assert b'"order": 4' in meta and b'"columns": ["v"]' in meta and b'"lon_convention": "0_360"' in meta
    got = healforge.finalize(back, stats).to_pandas()
    # cells with fewer points than a sketch's capacity keep every value: quantiles are exact
    for s in stats:
        np.testing.assert_allclose(got[f"v_{s}"], exact[f"v_{s}"], rtol=1e-12, err_msg=s)
    assert back.rows_in == len(df)


def test_coarsen_equals_exact_aggregation_at_coarse_order():
    df = _data(13, 40000, offset=1e9)
    fine = healforge.accumulate(df, ["v"], order=5, lon="lon", lat="lat", batch_rows=9000)
    coarse = fine.coarsen(2)
    assert coarse.order == 2
    exact = healforge.aggregate(df, ["v"], MOMENT_STATS + ["median", "q25"], order=2, lon="lon", lat="lat")
    got = healforge.finalize(coarse, MOMENT_STATS + ["median", "q25"])
    _assert_moments(got, exact, ["v"])
    g, e = got.to_pandas(), exact.to_pandas()
    assert (np.abs(g.v_median - e.v_median) / e.v_std).max() < 0.01
    # finalize at a coarser order does the same
    _assert_moments(healforge.finalize(fine, MOMENT_STATS, order=2), exact, ["v"])
    with pytest.raises(ValueError, match="finer"):
        coarse.coarsen(3)


def test_merge_mismatch_errors(tmp_path):
    df = _data(14, 2000)
    a = healforge.accumulate(df, ["v"], order=2, lon="lon", lat="lat", output=tmp_path / "a.parquet")
    b = healforge.accumulate(df, ["v"], order=3, lon="lon", lat="lat", output=tmp_path / "b.parquet")
    c = healforge.accumulate(df, ["u"], order=2, lon="lon", lat="lat")
    d = healforge.accumulate(df, ["v"], order=2, lon="lon", lat="lat", latitude="authalic")
    with pytest.raises(
        StateMismatchError, match=r"different orders: 2 and 3 \(.*a.parquet and .*b.parquet\)"
    ):
        healforge.merge_states([tmp_path / "a.parquet", tmp_path / "b.parquet"])
    with pytest.raises(StateMismatchError, match=r"different columns: \['v'\] and \['u'\]"):
        healforge.merge_states([a, c])
    with pytest.raises(StateMismatchError, match="different latitude"):
        healforge.merge_states([a, d])
    with pytest.raises(healforge.BadInputError, match="different orders"):
        healforge.accumulate(df, ["v"], order=3, lon="lon", lat="lat", state=tmp_path / "a.parquet")
    assert b.order == 3


@pytest.mark.slow
def test_dask_cluster_matches_synchronous(tmp_path):
    df = _data(15, 30000)
    files = []
    for i, idx in enumerate(np.array_split(np.arange(len(df)), 3)):
        files.append(tmp_path / f"in{i}.parquet")
        df.iloc[idx].to_parquet(files[-1])
    kw = dict(order=3, lon="lon", lat="lat")
    stats = ["count", "mean", "std", "min", "max", "median"]
    with Engine(workers=2, quiet=True) as engine:
        st = healforge.accumulate(files, ["v"], engine=engine, **kw)
        ex_dask = healforge.aggregate(files, ["v"], stats, engine=engine, **kw)
    exact = healforge.aggregate(df, ["v"], stats, **kw)
    pd.testing.assert_frame_equal(ex_dask.to_pandas(), exact.to_pandas())
    got = healforge.finalize(st, MOMENT_STATS)
    _assert_moments(got, healforge.aggregate(df, ["v"], MOMENT_STATS, **kw), ["v"])
    assert st.rows_in == len(df)


def test_unit_weight_columns_are_not_stored_twice(tmp_path):
    """A column accumulated without weights saves only its unweighted moments and loads back
    bit for bit; a weighted one keeps all of them."""
    df = _data(5, 4000)
    plain = healforge.accumulate(df, ["v", "u"], order=3, lon="lon", lat="lat", batch_rows=900)
    weighted = healforge.accumulate(
        df, ["v"], order=3, lon="lon", lat="lat", weight="1 / sigma**2", batch_rows=900
    )
    for st, name, stored in ((plain, "p", False), (weighted, "w", True)):
        st.save(tmp_path / f"{name}.parquet")
        names = pq.read_schema(tmp_path / f"{name}.parquet").names
        assert ("v::wm2" in names) is stored and ("v::m2" in names)
        back = State.load(tmp_path / f"{name}.parquet")
        for c in st.columns:
            for m, a in st.moments[c].items():
                np.testing.assert_array_equal(back.moments[c][m], a, err_msg=f"{name} {c} {m}")
    stats = ["wsum", "wmean", "wvar", "count", "mean", "var"]
    got = healforge.finalize(State.load(tmp_path / "p.parquet"), stats).to_pandas()
    np.testing.assert_array_equal(got.v_wmean, got.v_mean)
    np.testing.assert_array_equal(got.v_wsum, got.v_count)


def test_accumulator_batch_by_batch_is_one_call_number_for_number(tmp_path):
    df = _data(21, 40000)
    batches = [df.iloc[i::19].reset_index(drop=True) for i in range(19)]  # 19: three merge levels
    kw = dict(order=3, lon="lon", lat="lat", weight="1 / sigma**2")
    one = healforge.accumulate(batches, ["v", "u"], **kw)
    acc = healforge.Accumulator(["v", "u"], **kw)
    for b in batches:
        acc.add(b)
    got = acc.state
    assert got.rows_in == one.rows_in == len(df)
    np.testing.assert_array_equal(got.cell_ids, one.cell_ids)
    for c in ("v", "u"):
        for k, v in one.moments[c].items():
            np.testing.assert_array_equal(got.moments[c][k], v, err_msg=k)
        for a, b in zip(got.sketches[c], one.sketches[c], strict=True):
            np.testing.assert_array_equal(a, b)
    # continuing from a saved state and from files: the state file remembers those files
    acc.save(tmp_path / "s.parquet")
    files = []
    for i in range(3):
        files.append(tmp_path / f"more{i}.parquet")
        _data(30 + i, 2000).to_parquet(files[-1])
    more = healforge.Accumulator(
        ["v", "u"], state=tmp_path / "s.parquet", lon="lon", lat="lat", weight="1 / sigma**2"
    )
    for f in files:
        more.add(str(f))
    final = more.state
    assert final.order == 3 and final.rows_in == len(df) + 6000
    final.save(tmp_path / "s.parquet")
    again = healforge.accumulate([str(f) for f in files], ["v", "u"], state=tmp_path / "s.parquet", **kw)
    assert again.already_complete and again.rows_in == final.rows_in  # nothing counted twice
    with pytest.raises(healforge.OptionError, match="give an order"):
        healforge.Accumulator(["v"], lon="lon", lat="lat")
    with pytest.raises(healforge.OptionError, match="nothing accumulated"):
        _ = healforge.Accumulator(["v"], order=3, lon="lon", lat="lat").state

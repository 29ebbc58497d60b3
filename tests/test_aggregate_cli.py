"""CLI subcommands, map files, conventions and bad input for points."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import healforge
from conftest import run_cli
from healforge.pixel import lonlat_to_pixel
from healforge.pixel.latitude import geodetic_to_authalic

POINTS = ("--lon", "ra", "--lat", "dec")  # the position columns of _write's tables


def run(*args, check=True):
    args = [str(a) for a in args]
    if args[0] in ("sidecar", "aggregate", "accumulate"):
        args.append("--synchronous")  # no local cluster per command in tests
    return run_cli(*args, check=check)


def accumulate(source, state, *options):
    """``healforge accumulate SOURCE --state STATE OPTIONS`` of the ``elev`` column."""
    return run("accumulate", source, "--state", state, *options, *POINTS, "--columns", "elev", "-q")


def _write(path, seed, n):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "ra": rng.uniform(-180, 180, n),
            "dec": rng.uniform(-90, 90, n),
            "elev": rng.normal(100, 10, n),
            "sigma": rng.uniform(1, 2, n),
        }
    )
    df.to_parquet(path)
    return df


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    a = _write(tmp_path / "a.parquet", 1, 3000)
    b = _write(tmp_path / "b.parquet", 2, 2000)
    both = pd.concat([a, b], ignore_index=True)
    # sidecar at two orders in one pass, nside accepted
    run(
        "sidecar",
        tmp_path / "a.parquet",
        tmp_path / "b.parquet",
        "-o",
        tmp_path / "sc",
        "--nside",
        4,
        8,
        *POINTS,
        "-q",
    )
    sc = pq.read_table(tmp_path / "sc" / "order=3.parquet")
    np.testing.assert_array_equal(sc.column("source_id").to_numpy(), np.arange(5000))
    np.testing.assert_array_equal(
        sc.column("healpix_id").to_numpy(), lonlat_to_pixel(np.mod(both.ra, 360), both.dec.to_numpy(), 3)
    )
    # exact statistics from the sidecar
    run(
        "aggregate",
        tmp_path / "a.parquet",
        tmp_path / "b.parquet",
        "--sidecar",
        tmp_path / "sc" / "order=3.parquet",
        "--columns",
        "elev",
        "--stats",
        "count",
        "mean",
        "q25",
        "wmean",
        "--weight",
        "1 / sigma**2",
        "-o",
        tmp_path / "map.parquet",
        "-q",
    )
    m = healforge.read_map(tmp_path / "map.parquet")
    assert m.column_names == ["cell_ids", "elev_count", "elev_mean", "elev_q25", "elev_wmean"]
    ref = both.assign(cell=lonlat_to_pixel(np.mod(both.ra, 360), both.dec.to_numpy(), 3), w=1 / both.sigma**2)
    g = ref.groupby("cell")
    np.testing.assert_allclose(m.column("elev_mean").to_numpy(), g.elev.mean(), rtol=1e-12)
    np.testing.assert_allclose(m.column("elev_q25").to_numpy(), g.elev.quantile(0.25), rtol=1e-12)
    np.testing.assert_allclose(
        m.column("elev_wmean").to_numpy(), g.apply(lambda t: (t.w * t.elev).sum() / t.w.sum()), rtol=1e-12
    )
    # streaming: two accumulate runs into one state, a second state merged, finalized
    st = tmp_path / "state.parquet"
    accumulate(tmp_path / "a.parquet", st, "--order", 3)
    accumulate(tmp_path / "b.parquet", st)
    accumulate(tmp_path / "b.parquet", tmp_path / "s2.parquet", "--order", 3)
    run("merge-states", st, tmp_path / "s2.parquet", "-o", tmp_path / "merged.parquet")
    run("finalize", st, "-o", tmp_path / "fmap.parquet", "--stats", "count", "mean", "std", "min", "max")
    f = healforge.read_map(tmp_path / "fmap.parquet").to_pandas()
    np.testing.assert_array_equal(f.cell_ids, g.size().index)
    np.testing.assert_array_equal(f.elev_count, g.size())
    np.testing.assert_allclose(f.elev_mean, g.elev.mean(), rtol=1e-12)
    np.testing.assert_allclose(f.elev_std, g.elev.std(), rtol=1e-9)
    np.testing.assert_array_equal(f.elev_max, g.elev.max())
    merged = healforge.finalize(tmp_path / "merged.parquet", ["count"]).to_pandas()
    nb = pd.Series(lonlat_to_pixel(np.mod(b.ra, 360), b.dec.to_numpy(), 3)).value_counts()
    np.testing.assert_array_equal(
        merged.elev_count, f.elev_count + nb.reindex(f.cell_ids).fillna(0).to_numpy()
    )
    # coarser finalize
    run("finalize", st, "-o", tmp_path / "coarse.parquet", "--order", 1, "--stats", "count")
    c = healforge.read_map(tmp_path / "coarse.parquet")
    assert c.column("elev_count").to_numpy().sum() == 5000 and c.num_rows == 48
    # a state of another order cannot be merged
    accumulate(tmp_path / "b.parquet", tmp_path / "s4.parquet", "--order", 4)
    p = run("merge-states", st, tmp_path / "s4.parquet", "-o", tmp_path / "bad.parquet", check=False)
    assert p.returncode == 2 and "different orders: 3 and 4" in p.stderr
    assert not (tmp_path / "bad.parquet").exists()


@pytest.mark.slow
def test_bad_points_error_and_quarantine(tmp_path):
    df = _write(tmp_path / "x.parquet", 3, 1000)
    df.loc[17, "dec"] = np.nan
    df.loc[400, "ra"] = 361.0
    df.loc[401, "dec"] = -91.0
    df.to_parquet(tmp_path / "bad.parquet")

    def aggregate_bad(*options, check=True):
        return run(
            "aggregate",
            tmp_path / "bad.parquet",
            "--order",
            2,
            *POINTS,
            "--columns",
            "elev",
            *options,
            "-o",
            tmp_path / "m.parquet",
            check=check,
        )

    p = aggregate_bad(check=False)
    assert p.returncode == 2
    assert (
        "bad coordinate" in p.stderr
        and "bad.parquet" in p.stderr
        and "column 'dec', row 17, value nan" in p.stderr
    )
    aggregate_bad("--on-bad-rows", "quarantine")
    rej = pd.read_parquet(tmp_path / "m.rejected.parquet")
    assert list(rej._source_row) == [17, 400, 401]
    assert list(rej.columns[:4]) == ["ra", "dec", "elev", "sigma"]  # whole rows kept
    m = healforge.read_map(tmp_path / "m.parquet")
    assert m.column("elev_count").to_numpy().sum() + len(rej) == len(df)
    from healforge.aggregate.maptable import map_metadata

    assert map_metadata(m)["rows_rejected"] == 3
    # the API says the same
    # rows are named by their 0-based position in the input (here one row earlier than in the file)
    with pytest.raises(healforge.BadInputError, match=r"column 'ra', row 399, value 361.0"):
        healforge.sidecar(df.drop(index=[17]), 2, lon="ra", lat="dec")
    st = healforge.accumulate(
        tmp_path / "bad.parquet",
        ["elev"],
        order=2,
        lon="ra",
        lat="dec",
        on_bad_rows="quarantine",
        output=tmp_path / "st.parquet",
    )
    assert st.rows_rejected == 3 and (tmp_path / "st.rejected.parquet").exists()
    assert healforge.finalize(st, ["count"]).column("elev_count").to_numpy().sum() == len(df) - 3


def test_longitude_and_latitude_conventions(tmp_path):
    rng = np.random.default_rng(4)
    lon = rng.uniform(0, 360, 500)
    lat = rng.uniform(-89, 89, 500)
    d360 = pd.DataFrame({"lon": lon, "lat": lat, "v": rng.normal(size=500)})
    d180 = d360.assign(lon=np.where(lon >= 180, lon - 360, lon))
    a = healforge.sidecar(d360, 6, lon="lon", lat="lat")
    b = healforge.sidecar(d180, 6, lon="lon", lat="lat", lon_convention="-180_180")
    np.testing.assert_array_equal(a.column("healpix_id"), b.column("healpix_id"))
    au = healforge.aggregate(
        d360,
        ["v"],
        ["count"],
        order=6,
        lon="lon",
        lat="lat",
        latitude="authalic",
        lon_convention="-180_180",
        output=tmp_path / "au.parquet",
    )
    from healforge.aggregate.maptable import map_metadata

    meta = map_metadata(healforge.read_map(tmp_path / "au.parquet"))
    assert meta["latitude"] == "authalic" and meta["lon_convention"] == "-180_180"
    assert meta["indexing_scheme"] == "nested" and meta["healforge_version"] == healforge.__version__
    expected = np.unique(lonlat_to_pixel(lon, geodetic_to_authalic(lat), 6))
    np.testing.assert_array_equal(au.column("cell_ids").to_numpy(), expected)
    # the same from the command line, the option's value written as the shell user writes it
    d360.to_parquet(tmp_path / "in.parquet")
    for form in (["--lon-convention", "-180_180"], ["--lon-convention=-180_180"]):
        out = tmp_path / f"cli{len(form)}.parquet"
        run(
            "aggregate",
            tmp_path / "in.parquet",
            "-o",
            out,
            "--lon",
            "lon",
            "--lat",
            "lat",
            "--order",
            6,
            "--columns",
            "v",
            "--stats",
            "count",
            "--latitude",
            "authalic",
            *form,
            "-q",
        )
        cli = healforge.read_map(out)
        assert map_metadata(cli)["lon_convention"] == "-180_180"
        np.testing.assert_array_equal(cli.column("cell_ids").to_numpy(), expected)
    # authalic latitude: independent closed form check at 45 degrees (WGS84): 44.8717 degrees
    assert abs(geodetic_to_authalic(np.array([45.0]))[0] - 44.87170) < 1e-4
    assert geodetic_to_authalic(np.array([90.0]))[0] == pytest.approx(90.0)


def test_write_map_read_map_roundtrip(tmp_path):
    df = pd.DataFrame({"lon": [1.0, 2.0, 200.0], "lat": [0.0, 0.5, -30.0], "v": [1.0, 2.0, 3.0]})
    m = healforge.aggregate(df, ["v"], ["count", "mean"], order=2, lon="lon", lat="lat")
    healforge.write_map(m, tmp_path / "m.parquet")
    back = healforge.read_map(tmp_path / "m.parquet")
    assert back.equals(m) and back.schema.metadata == m.schema.metadata
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(ValueError, match="no 'healforge' schema metadata"):
        healforge.read_map(tmp_path / "plain.parquet")


@pytest.mark.slow
def test_geoparquet_file_id_column_and_all_rows_rejected(tmp_path):
    gpd = pytest.importorskip("geopandas")
    import shapely

    gdf = gpd.GeoDataFrame(
        {"obs": np.array([10, 20, 30], dtype=np.int64), "v": [1.0, 2.0, 4.0]},
        geometry=[
            shapely.box(10, 10, 10.5, 10.5),
            shapely.box(179.8, 0, 180.3, 0.5),
            shapely.box(10.2, 10.2, 10.4, 10.4),
        ],
    )
    gdf.to_parquet(tmp_path / "fp.parquet")  # GeoParquet: WKB geometry column + geo metadata
    sc = healforge.sidecar(tmp_path / "fp.parquet", 7, geometry="geometry", mode="fuzzy", id_column="obs")
    assert set(sc.column("source_id").to_numpy()) == {10, 20, 30}
    m = healforge.aggregate(tmp_path / "fp.parquet", ["v"], ["count", "wmean"], sidecar=sc, id_column="obs")
    direct = healforge.aggregate(
        tmp_path / "fp.parquet", ["v"], ["count", "wmean"], order=7, geometry="geometry", mode="fuzzy"
    )
    pd.testing.assert_frame_equal(m.to_pandas(), direct.to_pandas())
    # a sidecar id without an input row is an error, not a silent drop
    bad = sc.set_column(0, "source_id", pa.array(sc.column("source_id").to_numpy() + 1))
    with pytest.raises(healforge.BadInputError, match="has no matching input row"):
        healforge.aggregate(tmp_path / "fp.parquet", ["v"], ["count"], sidecar=bad, id_column="obs")
    # every row rejected: an empty (but valid) state and map, all rows accounted for
    pd.DataFrame({"lon": [np.nan, 500.0], "lat": [0.0, 0.0], "v": [1.0, 2.0]}).to_parquet(
        tmp_path / "allbad.parquet"
    )
    st = healforge.accumulate(
        tmp_path / "allbad.parquet",
        ["v"],
        order=3,
        lon="lon",
        lat="lat",
        on_bad_rows="quarantine",
        output=tmp_path / "st.parquet",
    )
    assert st.cell_ids.size == 0 and st.rows_in == 2 and st.rows_rejected == 2
    assert healforge.finalize(tmp_path / "st.parquet").num_rows == 0


def test_sidecar_of_another_tool(tmp_path):
    """A healpyxel sidecar (source_id, healpix_id, weight; no metadata) with --nside aggregates to
    the values of healforge's own sidecar of the same rows."""
    src = tmp_path / "pts.parquet"
    _write(src, 8, 3000)
    ours = tmp_path / "ours.parquet"
    run("sidecar", src, "-o", ours, "--order", 5, *POINTS, "-q")
    plain = pq.read_table(ours).replace_schema_metadata(None)
    assert plain.column_names == ["source_id", "healpix_id", "weight"]
    theirs = tmp_path / "theirs.parquet"
    pq.write_table(plain, theirs)
    stats = ("--columns", "elev", "--stats", "count", "mean", "median", "std")
    run("aggregate", src, "--sidecar", ours, "-o", tmp_path / "a.parquet", *stats, "-q")
    run("aggregate", src, "--sidecar", theirs, "--nside", 32, "-o", tmp_path / "b.parquet", *stats, "-q")
    a, b = (pq.read_table(tmp_path / f"{x}.parquet").to_pandas() for x in "ab")
    pd.testing.assert_frame_equal(a, b)
    # and checked as a sidecar: the order is needed, cells must exist at it, columns named
    proc = run("aggregate", src, "--sidecar", theirs, "-o", tmp_path / "c.parquet", *stats, check=False)
    assert proc.returncode == 2 and "give its order (--order or --nside)" in proc.stderr
    proc = run(
        "aggregate", src, "--sidecar", theirs, "--order", 1, "-o", tmp_path / "c.parquet", *stats, check=False
    )
    assert proc.returncode == 2 and "healpix_id out of range for order 1" in proc.stderr
    pq.write_table(plain.rename_columns(["row", "healpix_id", "weight"]), theirs)
    proc = run(
        "aggregate", src, "--sidecar", theirs, "--order", 5, "-o", tmp_path / "c.parquet", *stats, check=False
    )
    assert proc.returncode == 2 and "needs columns source_id, healpix_id" in proc.stderr


def _cell_means(ra, dec, values, order):
    """count and mean of the finite values per cell, plain numpy."""
    cells = lonlat_to_pixel(ra, dec, order)
    ok = np.isfinite(values)
    out = {}
    for c in np.unique(cells):
        v = values[(cells == c) & ok]
        out[int(c)] = (v.size, v.mean() if v.size else np.nan)
    return out


def _check_means(table, column, want):
    got = table.to_pandas().set_index("cell_ids")
    for c, (n, mean) in want.items():
        assert got.loc[c, f"{column}_count"] == n
        if n:
            assert got.loc[c, f"{column}_mean"] == pytest.approx(mean, rel=1e-12)


def test_fill_values_declared_by_files_and_given_by_the_user(tmp_path):
    import h5py
    from astropy.io import fits

    from healforge.aggregate.maptable import map_metadata

    rng = np.random.default_rng(12)
    n = 4000
    ra, dec = rng.uniform(0, 40, n), rng.uniform(-20, 20, n)
    h = rng.normal(100, 5, n).astype(np.float32)
    k = rng.integers(0, 50, n).astype(np.int16)
    h_fill, k_fill = rng.random(n) < 0.1, rng.random(n) < 0.05
    h[h_fill], k[k_fill] = np.float32(3.4028235e38), -9999
    # HDF5: _FillValue (float32) and missing_value (int16) declared on the datasets
    with h5py.File(tmp_path / "g.h5", "w") as f:
        for name, v in (("ra", ra), ("dec", dec), ("h", h), ("k", k)):
            f.create_dataset(name, data=v)
        f["h"].attrs["_FillValue"] = np.float32(3.4028235e38)
        f["k"].attrs["missing_value"] = np.int16(-9999)
    out = tmp_path / "h5.parquet"
    proc = run("aggregate", tmp_path / "g.h5", "-o", out, *POINTS, "--order", 4, "--columns", "h", "k",
               "--stats", "count", "mean")  # fmt: skip
    assert f"({h_fill.sum() + k_fill.sum()} fill value(s) skipped)" in proc.stderr
    assert "Warning" not in proc.stderr
    m = healforge.read_map(out)
    assert map_metadata(m)["fills_skipped"] == h_fill.sum() + k_fill.sum()
    _check_means(m, "h", _cell_means(ra, dec, np.where(h_fill, np.nan, h.astype(np.float64)), 4))
    _check_means(m, "k", _cell_means(ra, dec, np.where(k_fill, np.nan, k.astype(np.float64)), 4))
    # FITS: TNULL of an integer column
    cols = [fits.Column(name="ra", format="D", array=ra), fits.Column(name="dec", format="D", array=dec),
            fits.Column(name="k", format="I", null=-9999, array=k)]  # fmt: skip
    fits.BinTableHDU.from_columns(cols).writeto(tmp_path / "t.fits")
    run("aggregate", tmp_path / "t.fits", "-o", tmp_path / "fits.parquet", *POINTS, "--order", 4,
        "--columns", "k", "--stats", "count", "mean", "-q")  # fmt: skip
    _check_means(
        healforge.read_map(tmp_path / "fits.parquet"),
        "k",
        _cell_means(ra, dec, np.where(k_fill, np.nan, k.astype(float)), 4),
    )
    # parquet knows no fills: given on the command line, as a value and as healpyxel's threshold
    v = rng.normal(0, 1, n)
    v[:200], v[200:300] = -999.0, 1e35
    pq.write_table(pa.table({"ra": ra, "dec": dec, "v": v}), tmp_path / "p.parquet")
    out = tmp_path / "pq.parquet"
    proc = run("aggregate", tmp_path / "p.parquet", "-o", out, *POINTS, "--order", 4, "--columns", "v",
               "--stats", "count", "mean", "--fill-value", "v=-999", "--sentinel-above", "1e30")  # fmt: skip
    assert "(300 fill value(s) skipped)" in proc.stderr
    meta = map_metadata(healforge.read_map(out))
    assert meta["fill_values_given"] == {"v": [-999.0]} and meta["sentinel_above"] == 1e30
    _check_means(
        healforge.read_map(out), "v", _cell_means(ra, dec, np.where(np.arange(n) < 300, np.nan, v), 4)
    )
    proc = run("aggregate", tmp_path / "p.parquet", "-o", out, *POINTS, "--order", 4, "--columns", "v",
               "--fill-value", "v", check=False)  # fmt: skip
    assert proc.returncode == 2 and "must be COLUMN=VALUE" in proc.stderr

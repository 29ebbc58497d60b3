"""Footprints: fuzzy cells are exactly the intersected cells; weights are area fractions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import shapely
from astropy import units as u
from astropy.coordinates import Latitude, Longitude
from cdshealpix.nested import cone_search

import healforge
from healforge.pixel import pixel_vertices

ORDER = 8


def _laea(lon, lat, lon0, lat0):
    """Lambert azimuthal equal-area projection (an independent, area-preserving reference)."""
    lam, phi, lam0, phi0 = map(np.radians, (lon, lat, lon0, lat0))
    cosc = np.sin(phi0) * np.sin(phi) + np.cos(phi0) * np.cos(phi) * np.cos(lam - lam0)
    k = np.sqrt(2 / (1 + cosc))
    return k * np.cos(phi) * np.sin(lam - lam0), k * (
        np.cos(phi0) * np.sin(phi) - np.sin(phi0) * np.cos(phi) * np.cos(lam - lam0)
    )


def _xyz(lon, lat):
    lam, phi = np.radians(lon), np.radians(lat)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], -1)


def _densify(lon, lat, n=64):
    """Great-circle edges between consecutive vertices, ``n`` points each."""
    p = _xyz(np.asarray(lon), np.asarray(lat))
    out = []
    for i in range(len(p)):
        a, b = p[i], p[(i + 1) % len(p)]
        t = np.linspace(0, 1, n, endpoint=False)[:, None]
        q = a * (1 - t) + b * t
        out.append(q / np.linalg.norm(q, axis=1, keepdims=True))
    q = np.concatenate(out)
    return np.degrees(np.arctan2(q[:, 1], q[:, 0])), np.degrees(np.arcsin(q[:, 2]))


def _reference(lon, lat, holes=(), order=ORDER, radius=1.2):
    """Cells a polygon intersects and their area fractions, by shapely in an equal-area projection
    (candidate cells: a cone of ``radius`` degrees about the centre)."""
    c = _xyz(np.asarray(lon), np.asarray(lat)).mean(0)
    lon0, lat0 = np.degrees(np.arctan2(c[1], c[0])), np.degrees(np.arcsin(c[2] / np.linalg.norm(c)))
    dl, db = _densify(lon, lat)
    inner = [np.column_stack(_laea(*_densify(hl, hb), lon0, lat0)) for hl, hb in holes]
    quad = shapely.Polygon(np.column_stack(_laea(dl, db, lon0, lat0)), inner)
    cand = cone_search(Longitude(lon0 * u.deg), Latitude(lat0 * u.deg), radius * u.deg, order, flat=True)[0]
    cand = np.asarray(cand, dtype=np.int64)
    vl, vb = pixel_vertices(cand, order, step=32)
    fractions = {}
    for cell, clon, clat in zip(cand, vl, vb, strict=True):
        poly = shapely.Polygon(np.column_stack(_laea(clon, clat, lon0, lat0)))
        a = quad.intersection(poly).area
        if a > 0:
            fractions[int(cell)] = a / quad.area
    return fractions


def _quads():
    rng = np.random.default_rng(42)
    out = []
    for _ in range(6):  # ordinary
        out.append((rng.uniform(0, 359), rng.uniform(-70, 70)))
    for _ in range(6):  # crossing the antimeridian (written with longitudes either side of it)
        out.append((rng.uniform(179.55, 179.95), rng.uniform(-60, 60)))
    for _ in range(6):  # within 1.5 degrees of a pole
        lat = rng.uniform(88.5, 89.5)
        out.append((rng.uniform(0, 360), lat if rng.random() < 0.5 else -lat - 0.5))
    quads = []
    for l0, b0 in out:
        l1 = l0 + 0.5
        if l1 > 180 and l0 < 180:  # -180..180 convention across the antimeridian
            l1 -= 360
        quads.append(([l0, l1, l1, l0], [b0, b0, b0 + 0.5, b0 + 0.5]))
    return quads


@pytest.fixture(scope="module")
def quads():
    qs = _quads()
    geoms = [shapely.Polygon(np.column_stack(q)) for q in qs]
    df = pd.DataFrame(
        {"geometry": shapely.to_wkb(np.array(geoms, dtype=object)), "v": np.arange(len(qs), dtype=float)}
    )
    return qs, df


def test_fuzzy_cells_and_weights_match_independent_geometry(quads):
    qs, df = quads
    sc = healforge.sidecar(df, ORDER, geometry="geometry", mode="fuzzy").to_pandas()
    assert set(sc.source_id) == set(range(len(qs)))
    np.testing.assert_allclose(sc.groupby("source_id").weight.sum(), 1.0, rtol=1e-12)
    worst = 0.0
    for i, (lon, lat) in enumerate(qs):
        ref = _reference(lon, lat)
        mine = sc[sc.source_id == i].set_index("healpix_id").weight
        assert set(mine.index) == set(ref), (i, lon, lat, sorted(set(mine.index) ^ set(ref)))
        f = np.array([ref[c] for c in mine.index])
        err = np.abs(mine.to_numpy() - f)
        assert np.all(err <= 0.02 * f + 1e-6), (i, err.max())
        worst = max(worst, float((err / f).max()))
    assert worst < 0.02


def test_overlap_alias_strict_centroid_and_geodataframe(quads):
    qs, df = quads
    a = healforge.sidecar(df, ORDER, geometry="geometry", mode="overlap")
    b = healforge.sidecar(df, ORDER, geometry="geometry", mode="fuzzy")
    assert a.equals(b)
    st = healforge.sidecar(df, [ORDER, ORDER - 2], geometry="geometry", mode="center")
    s8 = st[ORDER].to_pandas()
    assert (s8.weight == 1).all() and list(s8.source_id) == list(range(len(qs)))
    for i, (lon, lat) in enumerate(qs):
        ref = _reference(lon, lat)
        # the centroid cell is one of the intersected cells, normally the one with the largest share
        assert s8.healpix_id[i] in ref
    np.testing.assert_array_equal(st[ORDER - 2].to_pandas().healpix_id, s8.healpix_id.to_numpy() >> 4)
    gpd = pytest.importorskip("geopandas")
    gdf = gpd.GeoDataFrame({"v": df.v}, geometry=shapely.from_wkb(df.geometry))
    c = healforge.sidecar(gdf, ORDER, geometry="geometry", mode="fuzzy")
    assert c.equals(b)


def test_footprint_statistics_match_pandas(quads):
    qs, df = quads
    m = healforge.aggregate(
        df, ["v"], ["count", "mean", "wsum", "wmean"], order=ORDER, geometry="geometry", mode="fuzzy"
    )
    sc = healforge.sidecar(df, ORDER, geometry="geometry", mode="fuzzy").to_pandas()
    j = sc.assign(v=df.v.to_numpy()[sc.source_id])
    g = j.groupby("healpix_id")
    got = m.to_pandas().set_index("cell_ids")
    np.testing.assert_array_equal(got.index, g.size().index)
    np.testing.assert_array_equal(got.v_count, g.size())
    np.testing.assert_allclose(got.v_mean, g.v.mean(), rtol=1e-12)
    np.testing.assert_allclose(got.v_wsum, g.weight.sum(), rtol=1e-12)
    np.testing.assert_allclose(
        got.v_wmean, g.apply(lambda t: (t.weight * t.v).sum() / t.weight.sum()), rtol=1e-12
    )


def test_bad_geometries_error_and_quarantine(tmp_path, quads):
    qs, df = quads
    bad = pd.DataFrame(
        {
            "geometry": [
                shapely.to_wkb(shapely.Polygon([(0, 0), (1, 1), (1, 0), (0, 1)])),  # self-intersecting
                shapely.to_wkb(shapely.Polygon()),  # empty
                None,
                shapely.to_wkb(shapely.Point(1, 2)),
                shapely.to_wkb(shapely.box(10, 95, 11, 96)),  # latitude out of range
            ],
            "v": [1.0, 2.0, 3.0, 4.0, 5.0],
        }
    )
    mixed = pd.concat([df.iloc[:3], bad, df.iloc[3:5]], ignore_index=True)
    with pytest.raises(
        healforge.BadInputError, match=r"bad footprint: invalid geometry .*column 'geometry', row 3"
    ):
        healforge.sidecar(mixed, ORDER, geometry="geometry", mode="fuzzy")
    out = tmp_path / "sc.parquet"
    sc = healforge.sidecar(
        mixed, ORDER, geometry="geometry", mode="fuzzy", on_bad_rows="quarantine", output=out
    )
    rej = pd.read_parquet(tmp_path / "sc.rejected.parquet")
    assert list(rej._source_row) == [3, 4, 5, 6, 7]
    assert list(rej._reason) == [
        "invalid geometry",
        "empty geometry",
        "null or unparsable geometry",
        "not a Polygon",
        "vertex coordinate out of range",
    ]
    ids = set(sc.column("source_id").to_numpy())
    assert ids == {0, 1, 2, 8, 9}
    assert len(ids) + len(rej) == len(mixed)  # rows in = rows out + rejected


def test_non_convex_and_holed_footprints():
    shapes = [
        # L-shape
        ([30.0, 31.0, 31.0, 30.4, 30.4, 30.0], [10.0, 10.0, 10.3, 10.3, 11.0, 11.0], ()),
        # square with a hole, across the antimeridian
        (
            [179.4, -179.6, -179.6, 179.4],
            [-5.0, -5.0, -4.0, -4.0],
            (([179.7, 179.7, -179.9, -179.9], [-4.7, -4.3, -4.3, -4.7]),),
        ),
    ]
    geoms = [
        shapely.Polygon(np.column_stack([lo, la]), [np.column_stack(h) for h in holes])
        for lo, la, holes in shapes
    ]
    sc = healforge.sidecar(
        pd.DataFrame({"g": shapely.to_wkt(np.array(geoms, dtype=object))}), ORDER, geometry="g", mode="fuzzy"
    )
    sc = sc.to_pandas()
    for i, (lo, la, holes) in enumerate(shapes):
        ref = _reference(lo, la, holes)
        mine = sc[sc.source_id == i].set_index("healpix_id").weight
        assert set(mine.index) == set(ref)
        f = np.array([ref[c] for c in mine.index])
        assert np.all(np.abs(mine.to_numpy() - f) <= 0.02 * f + 1e-6)


def test_tiny_footprints_fall_in_the_cell_of_their_centre():
    """Plane squares are the cells cdshealpix gives: tiny triangles all over the sphere (belt,
    polar caps, every sector) land in the cell of their centre."""
    rng = np.random.default_rng(7)
    n = 20000
    lon = rng.uniform(0, 360, n)
    lat = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    d = 1e-6
    tri = shapely.polygons(
        np.stack(
            [np.column_stack([lon, lat]), np.column_stack([lon + d, lat]), np.column_stack([lon, lat + d])], 1
        )
    )
    for order in (3, 8, 14):
        sc = healforge.sidecar(pa.table({"g": shapely.to_wkb(tri)}), order, geometry="g", mode="fuzzy")
        sc = sc.to_pandas()
        single = sc.groupby("source_id").size() == 1
        ids = single.index[single.to_numpy()]
        assert single.mean() > 0.99
        got = sc.set_index("source_id").loc[ids].healpix_id.to_numpy()
        c = shapely.centroid(tri[ids])
        want = healforge.pixel.lonlat_to_pixel(shapely.get_x(c), shapely.get_y(c), order)
        np.testing.assert_array_equal(got, want)


def test_footprints_around_poles_and_cusps_and_large_ones_match_reference():
    """Footprints that contain a pole, straddle one of the eight points where three base pixels
    meet (they are cut along the polar sector meridians), or span many cells."""
    shapes = [([0.0, 90, 180, 270], [89.5] * 4), ([45.0, 135, 225, 315], [-88.0] * 4)]
    for lon0 in (0.0, 90, 180, 270):
        shapes.append(([lon0 - 0.4, lon0 + 0.4, lon0 + 0.4, lon0 - 0.4], [41.5, 41.5, 42.2, 42.2]))
        shapes.append(([lon0 - 0.3, lon0 + 0.3, lon0 + 0.3, lon0 - 0.3], [-42.2, -42.2, -41.5, -41.5]))
    shapes += [([178.0, 182, 182, 178], [60.0, 60, 61, 61]), ([10.0, 13, 13, 10], [-20.0, -20, -17, -17])]
    geoms = [shapely.Polygon(np.column_stack(sh)) for sh in shapes]
    df = pd.DataFrame({"g": shapely.to_wkb(np.array(geoms, dtype=object))})
    for order in (6, 8):
        sc = healforge.sidecar(df, order, geometry="g", mode="fuzzy").to_pandas()
        for i, (lon, lat) in enumerate(shapes):
            ref = _reference(lon, lat, order=order, radius=3.0)
            mine = sc[sc.source_id == i].set_index("healpix_id").weight
            assert set(mine.index) == set(ref), (order, i, sorted(set(mine.index) ^ set(ref)))
            f = np.array([ref[c] for c in mine.index])
            assert np.all(np.abs(mine.to_numpy() - f) <= 0.002 * f + 1e-9), (order, i)


def test_bad_and_oversized_footprints_in_one_batch_are_all_rejected(tmp_path):
    geoms = [
        shapely.box(10, 10, 10.5, 10.5),
        shapely.box(10, 95, 11, 96),  # latitude out of range
        shapely.box(-150, -70, 150, 70),  # vertices more than 60 degrees from the centre
        shapely.box(20, 20, 20.5, 20.5),
    ]
    df = pd.DataFrame({"g": shapely.to_wkb(np.array(geoms, dtype=object))})
    with pytest.raises(healforge.BadInputError, match="row 1"):
        healforge.sidecar(df, ORDER, geometry="g", mode="fuzzy")
    sc = healforge.sidecar(
        df, ORDER, geometry="g", mode="fuzzy", on_bad_rows="quarantine", output=tmp_path / "s.parquet"
    )
    rej = pd.read_parquet(tmp_path / "s.rejected.parquet")
    assert list(rej._source_row) == [1, 2]
    assert rej._reason.iloc[1].startswith("footprint larger than 60")
    assert set(sc.column("source_id").to_numpy()) == {0, 3}

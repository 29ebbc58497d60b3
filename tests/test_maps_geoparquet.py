import geopandas as gpd
import healpy as hp
import numpy as np
import pyarrow.parquet as pq
import shapely
from pyproj import Geod

from healforge.maps.geoparquet import cell_polygons, to_geodataframe, write_geoparquet
from healforge.maps.parquet import read_map
from healforge.maps.table import make_map_table
from maps_util import point_map, random_points


def test_geoparquet_round_trip_through_geopandas(tmp_path):
    lon, lat, value = random_points(20_000, seed=1)
    table = point_map(lon, lat, value, 3)
    path = tmp_path / "m.geoparquet"
    write_geoparquet(table, path)
    gdf = gpd.read_parquet(path)
    assert gdf.crs.to_string() in ("OGC:CRS84", "EPSG:4326")
    assert list(gdf.columns[:4]) == ["cell_ids", "value_count", "value_mean", "value_min"]
    np.testing.assert_array_equal(gdf["value_mean"].to_numpy(), table.column("value_mean").to_numpy())
    assert gdf.geometry.is_valid.all()
    assert set(gdf.geom_type) <= {"Polygon", "MultiPolygon"}
    bounds = gdf.total_bounds
    assert bounds[0] >= -180 and bounds[2] <= 180 and bounds[1] >= -90 and bounds[3] <= 90
    meta = pq.read_schema(path).metadata
    assert b"geo" in meta and b"healforge" in meta
    # written in batches: same content
    write_geoparquet(table, tmp_path / "b.geoparquet", batch_cells=100)
    gdf_b = gpd.read_parquet(tmp_path / "b.geoparquet")
    assert gdf_b.geometry.geom_equals_exact(gdf.geometry, tolerance=0).all()
    np.testing.assert_array_equal(gdf_b["cell_ids"].to_numpy(), gdf["cell_ids"].to_numpy())
    assert read_map(tmp_path / "b.geoparquet").equals(table)  # reads back as a map too


def test_full_sky_area_is_4pi_and_polygons_valid():
    order = 2
    cells = np.arange(12 * 4**order)
    polys = cell_polygons(cells, order)
    assert shapely.is_valid(polys).all()
    geod = Geod(a=1.0, f=0.0)  # unit sphere: geodesic areas in steradians
    areas = np.array([abs(geod.geometry_area_perimeter(p)[0]) for p in polys])
    assert abs(areas.sum() - 4 * np.pi) < 1e-3 * 4 * np.pi
    # every cell has (about) the same area, 4 pi / npix, including polar and split cells
    np.testing.assert_allclose(areas, 4 * np.pi / cells.size, rtol=0.15)


def test_antimeridian_cells_are_split_and_polar_cells_reach_the_pole():
    order = 3
    cells = np.arange(12 * 4**order)
    polys = cell_polygons(cells, order)
    vlon, vlat = hp.vec2ang(np.moveaxis(hp.boundaries(2**order, cells, step=1, nest=True), 1, 2), lonlat=True)
    vlon = vlon.reshape(cells.size, 4)
    vlat = vlat.reshape(cells.size, 4)
    # healpy: a cell straddles 180 when its vertices' longitudes (unwrapped) span across it
    clon, clat = hp.pix2ang(2**order, cells, nest=True, lonlat=True)
    d = (vlon - clon[:, None] + 180) % 360 - 180
    lo = clon[:, None] + d
    straddle = ((lo.min(1) < 180 - 1e-9) & (lo.max(1) > 180 + 1e-9)) | (
        (lo.min(1) < -180 + 1e-9) & (lo.max(1) > -180 + 1e-9) & (lo.min(1) < -180 - 1e-9)
    )
    straddle &= np.abs(vlat).max(1) < 90 - 1e-9
    types = shapely.get_type_id(polys)
    assert straddle.sum() > 0
    assert (types[straddle] == 6).all()  # MultiPolygon
    assert (types[~straddle] == 3).all()
    # polar cells reach lat +-90 with an edge along the pole
    for sign in (1, -1):
        pole_cells = np.flatnonzero((np.abs(vlat - sign * 90) < 1e-9).any(1))
        assert pole_cells.size == 4
        for c in pole_cells:
            ys = shapely.get_coordinates(polys[c])[:, 1]
            assert np.sum(np.isclose(ys, sign * 90)) >= 2
    # random points fall inside the polygon of their own cell (edges are curved, so allow a few misses
    # right at the edges)
    lon, lat, _ = random_points(5000, seed=7)
    fine = cell_polygons(cells, order, step=16)
    own = hp.ang2pix(2**order, lon, lat, nest=True, lonlat=True)
    lon180 = np.where(lon > 180, lon - 360, lon)
    pts = shapely.points(lon180, lat)
    inside = shapely.contains(fine[own], pts) | shapely.touches(fine[own], pts)
    assert inside.mean() > 0.995
    assert shapely.distance(fine[own][~inside], pts[~inside]).max(initial=0.0) < 0.05


def test_authalic_polygons_use_geodetic_latitude():
    healpix_geo = __import__("pytest").importorskip("healpix_geo")
    order = 3
    cells = np.arange(12 * 4**order)
    table = make_map_table(cells, {"x_mean": np.ones(cells.size)}, order, latitude="authalic")
    polys = to_geodataframe(table).geometry.values
    lon, lat = healpix_geo.nested.vertices(cells.astype(np.uint64), depth=order, ellipsoid="WGS84")
    plain = (shapely.get_type_id(polys) == 3) & (np.abs(lat).max(1) < 89.999)
    coords = shapely.get_coordinates(polys[plain]).reshape(plain.sum(), 5, 2)[:, :4]
    want_lon = np.mod(lon[plain], 360)
    np.testing.assert_allclose(np.mod(coords[..., 0], 360) % 360, want_lon % 360, atol=1e-9)
    np.testing.assert_allclose(coords[..., 1], lat[plain], atol=1e-9)
    assert (
        np.abs(
            coords[..., 1]
            - shapely.get_coordinates(cell_polygons(cells[plain], order)).reshape(-1, 5, 2)[:, :4, 1]
        ).max()
        > 0.1
    )

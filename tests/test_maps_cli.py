import geopandas as gpd
import matplotlib
import matplotlib.image
import numpy as np
import pytest

from conftest import run_cli
from healforge.maps import read_map, write_zarr
from maps_util import pyramid


def _run(*args):
    return run_cli(*args, check=False)


@pytest.mark.slow
def test_cli_plot_and_export(tmp_path):
    maps = pyramid((2, 4))
    write_zarr(maps, tmp_path / "m.zarr")
    r = _run(
        "plot", str(tmp_path / "m.zarr"), "--var", "value_mean", "--order", "4", "--projection", "orthographic",
        "--center", "10", "20", "--range", "5", "15", "--width", "300", "-o", str(tmp_path / "p.png"),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    img = matplotlib.image.imread(tmp_path / "p.png")
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10

    r = _run("export", str(tmp_path / "m.zarr"), "-o", str(tmp_path / "m.parquet"))
    assert r.returncode == 0, r.stderr
    for k in (2, 4):
        assert read_map(tmp_path / "m.parquet", k).equals(maps[k])
    r = _run("export", str(tmp_path / "m.parquet"), "--order", "2", "-o", str(tmp_path / "m2.geoparquet"))
    assert r.returncode == 0, r.stderr
    gdf = gpd.read_parquet(tmp_path / "m2.geoparquet")
    assert len(gdf) == maps[2].num_rows and gdf.geometry.is_valid.all()


def test_cli_errors_are_clear(tmp_path):
    write_zarr(pyramid((2,)), tmp_path / "m.zarr")
    r = _run("plot", str(tmp_path / "m.zarr"), "--var", "nope", "-o", str(tmp_path / "p.png"))
    assert r.returncode == 2 and "nope" in r.stderr and "value_mean" in r.stderr
    from healforge.cli import main

    assert main(["export", str(tmp_path / "m.zarr"), "-o", str(tmp_path / "x.xyz")]) == 2


def test_export_carries_provenance(tmp_path):
    import json

    import pyarrow.parquet as pq
    import zarr

    from healforge.maps.table import map_metadata

    prov = {"inputs": ["/data/g1.h5", "/data/g2.h5"], "pipeline": {"name": "atl06", "config": "c.yaml"}}
    write_zarr(pyramid((2, 4)), tmp_path / "m.zarr", metadata=prov)
    for out, extra in (("e.zarr", []), ("e.parquet", ["--order", "4"]), ("e.geoparquet", ["--order", "2"])):
        r = _run("export", str(tmp_path / "m.zarr"), "-o", str(tmp_path / out), *extra)
        assert r.returncode == 0, r.stderr
    root = dict(zarr.open_group(str(tmp_path / "e.zarr"), mode="r").attrs["healforge"])
    one = map_metadata(read_map(tmp_path / "e.parquet"))
    geo = json.loads(pq.read_schema(tmp_path / "e.geoparquet").metadata[b"healforge"])
    for meta in (root, one, geo):
        assert meta["inputs"] == prov["inputs"] and meta["pipeline"] == prov["pipeline"]
        assert meta["exported_from"] == str(tmp_path / "m.zarr")
    assert root["orders"] == [2, 4] and one["order"] == 4 and geo["order"] == 2


def test_export_geotiff_polar_stereographic_read_by_rasterio(tmp_path):
    """An authalic map round the south pole as a 37.5 km EPSG:3031 raster: every pixel is the cell
    that healpix-geo (WGS84) puts under its centre, or the mean over its 4 x 4 sub-points."""
    import healpix_geo
    import rasterio
    from pyproj import Transformer

    from healforge.maps.table import make_map_table
    from healforge.pixel import pixel_centers

    order = 6
    cells = np.arange(12 * 4**order, dtype=np.int64)
    cells = cells[pixel_centers(cells, order)[1] < -62]
    values = (cells % 997).astype(np.float64)
    table = make_map_table(cells, {"h_mean": values, "n": values * 2}, order, latitude="authalic")
    write_zarr(table, tmp_path / "h.zarr", metadata={"inputs": ["ATL06_x.h5"]})
    box = ["-3000000", "-3000000", "3000000", "3000000"]
    for how in ("nearest", "area"):
        r = _run("export", str(tmp_path / "h.zarr"), "-o", str(tmp_path / f"{how}.tif"), "--crs", "EPSG:3031",
                 "--bounds", *box, "--resolution", "37500", "--var", "h_mean", "--resampling", how)  # fmt: skip
        assert r.returncode == 0, r.stderr
    lookup = dict(zip(cells.tolist(), values.tolist(), strict=True))
    to_geo = Transformer.from_crs("EPSG:3031", "EPSG:4326", always_xy=True)

    def truth(x, y):
        lon, lat = to_geo.transform(np.atleast_1d(x), np.atleast_1d(y))
        c = healpix_geo.nested.lonlat_to_healpix(
            np.asarray(lon), np.asarray(lat), depth=order, ellipsoid="WGS84"
        )
        return np.array([lookup.get(int(v), np.nan) for v in c])

    with rasterio.open(tmp_path / "nearest.tif") as src:
        assert src.crs.to_epsg() == 3031 and src.count == 1 and src.descriptions == ("h_mean",)
        assert (src.width, src.height) == (160, 160) and src.res == (37500.0, 37500.0)
        assert "ATL06_x.h5" in src.tags()["healforge"]
        band = src.read(1)
        rows, cols = np.meshgrid(np.arange(0, 160, 7), np.arange(0, 160, 7))
        xs, ys = rasterio.transform.xy(src.transform, rows.ravel(), cols.ravel())
        np.testing.assert_array_equal(
            band[rows.ravel(), cols.ravel()], truth(np.array(xs), np.array(ys)).astype(np.float32)
        )
        assert np.isnan(band).any() and np.isfinite(band).mean() > 0.5  # corners beyond -62 are nodata
    with rasterio.open(tmp_path / "area.tif") as src:
        band = src.read(1)
        for row, col in [(80, 80), (40, 100), (120, 33)]:
            x0, y0 = src.transform * (col, row)
            sub = (np.arange(4) + 0.5) / 4 * 37500
            gx, gy = np.meshgrid(x0 + sub, y0 - sub)
            assert band[row, col] == pytest.approx(np.nanmean(truth(gx.ravel(), gy.ravel())), rel=1e-6)

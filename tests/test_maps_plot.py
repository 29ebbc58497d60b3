import healpy as hp
import matplotlib
import matplotlib.image
import numpy as np
import pytest
from pyproj import Proj

from healforge.commands.maps import PROJECTIONS as CLI_PROJECTIONS
from healforge.maps.plot import EMPTY_COLOUR, PROJECTIONS, lookup_values, plot_map, raster_lonlat
from healforge.maps.table import make_map_table
from healforge.maps.zarr_store import open_map, write_zarr
from healforge.pixel import pixel_centers


@pytest.fixture(scope="module")
def half_sky_map():
    order = 5
    cells = np.arange(12 * 4**order)
    lon, lat = pixel_centers(cells, order)
    keep = lon < 180  # eastern half has data, western half is empty
    return make_map_table(cells[keep], {"h_mean": lat[keep]}, order, units={"h": "m"}, name="test")


@pytest.mark.parametrize("projection", PROJECTIONS)
def test_plot_png_all_projections(tmp_path, half_sky_map, projection):
    out = tmp_path / f"{projection}.png"
    center = (90.0, 30.0) if projection == "orthographic" else None
    plot_map(
        half_sky_map,
        "h_mean",
        projection=projection,
        center=center,
        vrange=(0, 40),
        width=400,
        dpi=60,
        out=out,
    )
    img = matplotlib.image.imread(out)
    rgb = np.round(img[..., :3] * 255).astype(int).reshape(-1, 3)
    colours = np.unique(rgb, axis=0)
    assert len(colours) > 20
    empty = np.round(np.array(EMPTY_COLOUR[:3]) * 255).astype(int)
    lowest = np.round(np.array(matplotlib.colormaps["viridis"](0.0)[:3]) * 255).astype(int)
    is_empty = (np.abs(rgb - empty).sum(1) <= 3).sum()
    is_low = (np.abs(rgb - lowest).sum(1) <= 3).sum()
    assert is_empty > 100 and is_low > 100  # both in the picture (values < 0 clip to the lowest colour)
    assert np.abs(empty - lowest).sum() > 100


def test_plot_from_zarr_path_and_greys_cmap(tmp_path, half_sky_map):
    write_zarr(half_sky_map, tmp_path / "m.zarr")
    out = plot_map(
        str(tmp_path / "m.zarr"), "h_mean", cmap="Greys", width=300, dpi=60, out=tmp_path / "g.png"
    )
    img = matplotlib.image.imread(out)[..., :3]
    # an xarray Dataset of one order plots the same picture
    plot_map(open_map(tmp_path / "m.zarr"), "h_mean", cmap="Greys", width=300, dpi=60, out=tmp_path / "d.png")
    np.testing.assert_array_equal(matplotlib.image.imread(tmp_path / "d.png")[..., :3], img)
    # with a grey colour map, empty cells switch to a colour that is not grey
    assert (np.ptp(img, axis=2) > 0.1).sum() > 100


@pytest.mark.parametrize(
    "projection,proj,center",
    [
        ("mollweide", "+proj=moll +R=1 +lon_0=20", (20.0, 0.0)),
        ("polar-north", "+proj=stere +lat_0=90 +lon_0=-40 +R=1 +k_0=1", (-40.0, 90.0)),
        ("polar-south", "+proj=stere +lat_0=-90 +lon_0=10 +R=1 +k_0=1", (10.0, -90.0)),
        ("orthographic", "+proj=ortho +lat_0=35 +lon_0=120 +R=1", (120.0, 35.0)),
    ],
)
def test_inverse_projection_matches_proj(projection, proj, center):
    lon, lat, valid, (h, w) = raster_lonlat(projection, 200, center=center, bounding_lat=30.0)
    x, y = Proj(proj)(lon[valid], lat[valid])
    # rebuild the pixel-centre grid and compare
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    px, py = xs[valid], ys[valid]
    xr_ = (x - x.min()) / np.ptp(x)
    assert np.corrcoef(xr_, px)[0, 1] > 0.999999
    assert np.corrcoef(y, -py)[0, 1] > 0.999999
    assert valid.mean() > 0.5


def test_cli_projection_list_matches():
    assert CLI_PROJECTIONS == PROJECTIONS


def test_lookup_matches_healpy():
    order = 6
    rng = np.random.default_rng(0)
    cells = np.sort(rng.choice(12 * 4**order, 20000, replace=False))
    values = rng.normal(size=cells.size)
    lon = rng.uniform(-180, 180, 50000)
    lat = rng.uniform(-90, 90, 50000)
    got, found = lookup_values(cells, values, order, lon, lat)
    pix = hp.ang2pix(2**order, lon, lat, nest=True, lonlat=True)
    pos = np.searchsorted(cells, pix).clip(max=cells.size - 1)
    want_found = cells[pos] == pix
    np.testing.assert_array_equal(found, want_found)
    np.testing.assert_array_equal(got[found], values[pos[found]])
    # full-sky maps take a shortcut (no search): same answer
    dense = rng.normal(size=12 * 4**order)
    got, found = lookup_values(np.arange(dense.size), dense, order, lon, lat)
    assert found.all()
    np.testing.assert_array_equal(got, dense[pix])


def test_lookup_authalic_matches_healpix_geo():
    healpix_geo = pytest.importorskip("healpix_geo")
    order = 7
    rng = np.random.default_rng(1)
    lon = rng.uniform(0, 360, 20000)
    lat = rng.uniform(-90, 90, 20000)
    cells = np.arange(12 * 4**order)
    got, _ = lookup_values(cells, cells.astype(float), order, lon, lat, latitude="authalic")
    want = healpix_geo.nested.lonlat_to_healpix(lon, lat, depth=order, ellipsoid="WGS84")
    assert (got == want).mean() > 0.9999  # at most a rare point on a cell edge may differ
    spherical, _ = lookup_values(cells, cells.astype(float), order, lon, lat)
    assert (spherical != want).mean() > 0.01  # the conversion matters

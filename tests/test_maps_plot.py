import healpy as hp
import matplotlib
import matplotlib.image
import numpy as np
import pyarrow as pa
import pytest
from pyproj import Proj

from healforge.commands.maps import PROJECTIONS as CLI_PROJECTIONS
from healforge.maps.plot import EMPTY_COLOUR, PROJECTIONS, lookup_values, plot_map, raster_lonlat
from healforge.maps.table import MapError, make_map_table
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
        ("gnomonic", "+proj=gnom +lat_0=-60 +lon_0=300 +R=1", (300.0, -60.0)),
        ("cartesian", "+proj=eqc +lon_0=0 +R=1", (45.0, 10.0)),
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


def test_sky_frame_mirrors_and_regional_views():
    body = raster_lonlat("gnomonic", 101, center=(80.0, 20.0), extent=30)
    sky = raster_lonlat("gnomonic", 101, center=(80.0, 20.0), extent=30, frame="sky")
    np.testing.assert_allclose(sky[0], body[0][:, ::-1])  # the same view, mirrored
    assert sky[0][50, 0] > sky[0][50, -1] and body[0][50, 0] < body[0][50, -1]  # RA grows leftwards
    lon, lat, valid, _ = raster_lonlat("cartesian", 200, center=(10.0, -5.0), extent=40)
    assert valid.all() and lon.min() == pytest.approx(-9.9) and lat.max() == pytest.approx(14.9)


def test_figures_a_scientist_keeps(tmp_path, half_sky_map):
    """Labelled graticule, sky frame recorded in the PNG, log and percentile colours, panels."""
    from PIL import Image

    out = plot_map(half_sky_map, "h_mean", width=300, dpi=60, frame="sky", out=tmp_path / "s.png")
    info = Image.open(out).text["Description"]
    assert '"frame": "sky"' in info
    # a map made with --frame sky is drawn so without being told
    import healforge

    pts = pa.table(
        {"ra": np.array([10.0, 50.0, 200.0]), "dec": np.array([0.0, 10.0, -20.0]), "v": np.ones(3)}
    )
    sky = healforge.aggregate(pts, ["v"], ["count"], order=3, lon="ra", lat="dec", frame="sky")
    out = plot_map(sky, "v_count", width=200, dpi=60, out=tmp_path / "auto.png")
    assert '"frame": "sky"' in Image.open(out).text["Description"]
    table = half_sky_map.append_column("h_span", pa.array(10 ** np.linspace(0, 6, half_sky_map.num_rows)))
    fig = plot_map(table, ["h_mean", "h_span"], width=300, dpi=60, out=None, scale="percentile")
    image_axes = [a for a in fig.axes if a.images]
    assert len(image_axes) == 2 and len(fig.axes) == 4  # two panels, two colour bars
    labels = {t.get_text() for a in image_axes for t in a.texts}
    assert {"30\u00b0E", "60\u00b0N", "30\u00b0S"} <= labels  # graticule labels, body frame
    bars = [a for a in fig.axes if not a.images]
    quartiles = np.quantile(table.column("h_span").to_numpy(), [0, 0.25, 0.5, 0.75, 1])
    assert [t.get_text() for t in bars[1].get_xticklabels()] == [f"{q:.4g}" for q in quartiles]
    fig = plot_map(table, "h_span", width=200, dpi=60, out=None, scale="log", projection="gnomonic",
                   center=(60.0, 20.0), extent=30)  # fmt: skip
    assert type(fig.axes[1]._colorbar.norm).__name__ == "LogNorm"
    assert "5\u00b0N" in {t.get_text() for t in fig.axes[0].texts} or "20\u00b0N" in {
        t.get_text() for t in fig.axes[0].texts
    }
    with pytest.raises(MapError, match="no positive value"):
        plot_map(half_sky_map.set_column(1, "h_mean", pa.array(-np.ones(half_sky_map.num_rows))), "h_mean",
                 scale="log", out=None, width=100)  # fmt: skip


def test_catalog_plots_and_import_plots(tmp_path):
    from conftest import make_points, run_cli, survey_table

    ra, dec = make_points("clustered", 4000, seed=3)
    import pyarrow.parquet as pq

    pq.write_table(survey_table(ra, dec), tmp_path / "in.parquet")
    run_cli("import", tmp_path / "in.parquet", "-o", tmp_path / "cat", "--threshold", "600", "--plots", "-q",
            "--synchronous")  # fmt: skip
    r = run_cli("plot", tmp_path / "cat", "-o", tmp_path / "figs")
    for folder in (tmp_path / "cat", tmp_path / "figs"):
        for name in ("skymap.png", "partition_info.png"):
            img = matplotlib.image.imread(folder / name)
            assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 20, (folder, name)
    assert str(tmp_path / "figs" / "skymap.png") in r.stdout

import healpy
import numpy as np
import pytest
from hats.pixel_math import compute_spatial_index

from conftest import make_points
from healforge import pixel as hp


@pytest.mark.parametrize("kind", ["uniform", "clustered", "polar", "seam"])
def test_spatial_index_bit_identical_to_hats(kind):
    ra, dec = make_points(kind, 50_000, seed=3)
    assert np.array_equal(hp.spatial_index(ra, dec), compute_spatial_index(ra, dec))


def test_pixels_at_any_order_match_healpy_and_parent_shift():
    ra, dec = make_points("uniform", 20_000, seed=5)
    h29 = hp.spatial_index(ra, dec)
    for order in (0, 3, 7, 12):
        ours = hp.lonlat_to_pixel(ra, dec, order)
        ref = healpy.ang2pix(2**order, ra, dec, nest=True, lonlat=True)
        # healpy may differ on points exactly on a boundary; none in random data at these orders
        assert np.array_equal(ours, ref)
        assert np.array_equal(hp.index_to_order(h29, order), ours)
        assert np.array_equal(hp.to_parent(ours, order, 0), hp.lonlat_to_pixel(ra, dec, 0))


def test_order_helpers():
    assert hp.order_to_nside(10) == 1024
    assert hp.nside_to_order(256) == 8
    assert hp.order_to_npix(2) == 192
    assert hp.npix_to_order(3072) == 4
    with pytest.raises(ValueError):
        hp.nside_to_order(100)
    with pytest.raises(ValueError):
        hp.check_order(30)
    start, stop = hp.children_range(5, 2, 4)
    assert (start, stop) == (80, 96)
    assert hp.pixel_index29_range(0, 1) == (4**29, 2 * 4**29)


def test_wrap_and_bad_coordinates():
    lon = np.array([-180.0, -0.0, 359.999, 360.0, -1e-20])
    wrapped = hp.wrap_lon(lon)
    assert np.all((wrapped >= 0) & (wrapped < 360))
    assert wrapped[0] == 180.0 and wrapped[3] == 0.0
    # the fast path of the usual ranges and np.mod's general one agree bit for bit
    rng = np.random.default_rng(3)
    for lo, hi in [(-180, 360), (-360, 720), (-1e5, 1e5)]:
        x = np.r_[rng.uniform(lo, hi, 100_000), -1e-20, -0.0, 360.0, 720.0, -360.0, -5e-14, np.nan]
        ref = np.mod(x, 360.0)
        ref[ref >= 360.0] = 0.0
        np.testing.assert_array_equal(hp.wrap_lon(x), ref)
    bad = hp.bad_coordinate_mask([10, np.nan, 400, 10, -181, 10], [0, 0, 0, 95, 0, np.inf])
    assert bad.tolist() == [False, True, True, True, True, True]


@pytest.mark.parametrize(("order", "pixel", "border_order"), [(0, 4, 4), (0, 0, 3), (2, 37, 6), (5, 1000, 5)])
def test_border_cells_are_children_with_a_neighbour_outside(order, pixel, border_order):
    from cdshealpix.nested import neighbours

    from healforge.pixel import border_cells

    kids = np.arange(pixel << (2 * (border_order - order)), (pixel + 1) << (2 * (border_order - order)))
    nb = neighbours(kids.astype(np.uint64), border_order).astype(np.int64)
    outside = ((nb >= 0) & ((nb >> (2 * (border_order - order))) != pixel)).any(axis=1)
    np.testing.assert_array_equal(border_cells(order, pixel, border_order), kids[outside])

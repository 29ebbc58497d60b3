import numpy as np
import pytest
from hats.pixel_math.partition_stats import generate_alignment as hats_alignment

from healforge.pixel.alignment import ThresholdError, generate_alignment


@pytest.mark.parametrize("drop_empty_siblings", [True, False])
def test_alignment_equals_hats_on_random_histograms(drop_empty_siblings):
    rng = np.random.default_rng(11)
    for _ in range(25):
        highest = int(rng.integers(2, 6))
        lowest = int(rng.integers(0, highest + 1))
        npix = 12 * 4**highest
        hist = np.zeros(npix, np.int64)
        idx = rng.choice(npix, size=int(rng.integers(1, npix)), replace=False)
        hist[idx] = rng.integers(1, 50, size=len(idx))
        threshold = int(max(hist.max(), rng.integers(1, 3000)))
        ref = hats_alignment(
            hist,
            highest_order=highest,
            lowest_order=lowest,
            threshold=threshold,
            drop_empty_siblings=drop_empty_siblings,
            use_lower_order=True,
        )
        nz = np.flatnonzero(hist)
        ours = generate_alignment(nz, hist[nz], highest, lowest, threshold, drop_empty_siblings)
        mapping = ours.mapping_order
        assert len(ref) == 12 * 4**mapping
        at_mapping = hist.reshape(12 * 4**mapping, -1).sum(axis=1)
        expected = {
            i: (int(t[0]), int(t[1])) for i, t in enumerate(ref) if t is not None and at_mapping[i] > 0
        }
        got = {
            int(p): (int(o), int(q))
            for p, o, q in zip(ours.pixels, ours.dest_order, ours.dest_pixel, strict=True)
        }
        assert got == expected
        ref_dest = sorted({(int(t[0]), int(t[1]), int(t[2])) for t in ref if t is not None and t[2] > 0})
        assert sorted(ours.destinations()) == ref_dest


def test_single_pixel_over_threshold_names_pixel_and_order():
    with pytest.raises(ThresholdError, match=r"pixel 7 at order 3 holds 500 rows.*--highest-order 5"):
        generate_alignment(np.array([1, 7]), np.array([3, 500]), 3, 0, 100)


def test_fixed_order_keeps_every_pixel():
    a = generate_alignment(np.array([4, 9, 700]), np.array([10, 20, 5]), 4, 4, 1)
    assert a.destinations() == [(4, 4, 10), (4, 9, 20), (4, 700, 5)]


@pytest.mark.parametrize("order", [5, 11])  # a dense running sum, and a sparse one above order 10
def test_histogram_sum_is_the_merge_of_its_parts(order):
    from healforge.pixel.alignment import HistogramSum, merge_histograms, sparse_histogram

    rng = np.random.default_rng(order)
    parts = [sparse_histogram(rng.integers(0, 12 * 4**order, 2_000)) for _ in range(6)]
    total = HistogramSum(order)
    for pixels, counts in parts:
        total.add(pixels, counts)
    pixels, counts = total.result()
    want = merge_histograms(parts)
    np.testing.assert_array_equal(pixels, want[0])
    np.testing.assert_array_equal(counts, want[1])
    asked = np.r_[want[0][:20], 12 * 4**order - 1]
    np.testing.assert_array_equal(
        total.at(asked), [dict(zip(*want, strict=True)).get(int(p), 0) for p in asked]
    )
    assert (total.dense is None) == (order > 10)

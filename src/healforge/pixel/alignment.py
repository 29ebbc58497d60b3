"""Partitioning: choose destination pixels from a row-count histogram (hats-compatible, vectorised).

Histograms are sparse: sorted unique pixel numbers at the mapping order and their counts, so the
work scales with the number of non-empty pixels, not with ``12 * 4**order``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from healforge.errors import HealforgeError, OptionError


class ThresholdError(HealforgeError, ValueError):
    """A single highest-order pixel holds more rows than the threshold."""


@dataclass
class Alignment:
    """Where each non-empty mapping-order pixel goes.

    Attributes
    ----------
    mapping_order
        Order of ``pixels`` (may be lower than the requested highest order, as hats does).
    pixels, counts
        Sorted non-empty pixels at ``mapping_order`` and their row counts.
    dest_order, dest_pixel
        Destination partition of each entry of ``pixels``.
    """

    mapping_order: int
    pixels: np.ndarray
    counts: np.ndarray
    dest_order: np.ndarray
    dest_pixel: np.ndarray

    def destinations(self) -> list[tuple[int, int, int]]:
        """Sorted ``(order, pixel, rows)`` of every destination partition."""
        key = self.dest_pixel << (2 * (29 - self.dest_order))
        uniq, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        rows = np.bincount(inverse, weights=self.counts, minlength=len(uniq)).astype(np.int64)
        return [
            (int(self.dest_order[i]), int(self.dest_pixel[i]), int(r))
            for i, r in zip(first, rows, strict=True)
        ]

    def lookup(self, pixels_at_mapping_order: np.ndarray) -> np.ndarray:
        """Index into :meth:`destinations` for each pixel at the mapping order (must be non-empty ones)."""
        if not hasattr(self, "_dest_index"):
            key = self.dest_pixel << (2 * (29 - self.dest_order))
            self._dest_index = np.unique(key, return_inverse=True)[1].reshape(-1)
        pos = np.searchsorted(self.pixels, pixels_at_mapping_order)
        pos = np.minimum(pos, len(self.pixels) - 1)
        if not np.array_equal(self.pixels[pos], pixels_at_mapping_order):
            raise RuntimeError("rows fall in pixels that were empty when mapping: did the inputs change?")
        return self._dest_index[pos]

    def arrays(self) -> dict[str, np.ndarray]:
        """The fields as arrays, to store (e.g. with :func:`healforge.io.workfiles.write_npz`)."""
        return {f.name: np.asarray(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> Alignment:
        """The alignment stored by :meth:`arrays`."""
        names = [f.name for f in fields(cls)]
        return cls(int(arrays["mapping_order"]), *(arrays[n] for n in names[1:]))


def sparse_histogram(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique pixels and their counts."""
    uniq, counts = np.unique(np.asarray(pixels, dtype=np.int64), return_counts=True)
    return uniq, counts.astype(np.int64)


def merge_histograms(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sum sparse histograms."""
    if not parts:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    pix = np.concatenate([p for p, _ in parts])
    cnt = np.concatenate([c for _, c in parts])
    uniq, inverse = np.unique(pix, return_inverse=True)
    return uniq, np.bincount(inverse, weights=cnt, minlength=len(uniq)).astype(np.int64)


class HistogramSum:
    """A running sum of sparse histograms at one order, in memory bounded by the order rather
    than by the number of parts or rows: a dense array up to :data:`DENSE_MAX_ORDER` (100 MB at
    order 10), a running sparse merge above."""

    def __init__(self, order: int):
        self.dense = np.zeros(12 * 4**order, dtype=np.int64) if order <= DENSE_MAX_ORDER else None
        self.sparse = (np.empty(0, np.int64), np.empty(0, np.int64))

    def add(self, pixels: np.ndarray, counts: np.ndarray) -> None:
        """Add a sparse histogram (unique pixels)."""
        if self.dense is not None:
            self.dense[pixels] += counts
        else:
            self.sparse = merge_histograms([self.sparse, (pixels, counts)])

    def at(self, pixels: np.ndarray) -> np.ndarray:
        """The sum at each of ``pixels`` (0 where nothing was added)."""
        if self.dense is not None:
            return self.dense[pixels]
        have, sums = self.sparse
        pos = np.minimum(np.searchsorted(have, pixels), max(len(have) - 1, 0))
        found = (have[pos] == pixels) if len(have) else np.zeros(len(pixels), bool)
        return np.where(found, sums[pos] if len(have) else 0, 0).astype(np.int64)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """The sum as a sparse histogram (sorted pixels, counts)."""
        if self.dense is None:
            return self.sparse
        nz = np.flatnonzero(self.dense)
        return nz, self.dense[nz]


#: Highest order at which :class:`HistogramSum` keeps a dense array.
DENSE_MAX_ORDER = 10


def coarsen_histogram(
    pixels: np.ndarray, counts: np.ndarray, levels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Sparse histogram ``levels`` orders coarser."""
    parents = pixels >> (2 * levels)
    starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]]) if len(parents) else np.empty(0, int)
    return parents[starts], np.add.reduceat(counts, starts) if len(starts) else counts[:0]


def dense_histogram(pixels: np.ndarray, counts: np.ndarray, order: int) -> np.ndarray:
    """Full-sky row-count map at ``order`` from a sparse histogram."""
    out = np.zeros(12 * 4**order, dtype=np.int64)
    out[pixels] = counts
    return out


def generate_alignment(
    pixels: np.ndarray,
    counts: np.ndarray,
    highest_order: int,
    lowest_order: int = 0,
    threshold: int = 1_000_000,
    drop_empty_siblings: bool = True,
    use_lower_order: bool = True,
    weights: np.ndarray | None = None,
) -> Alignment:
    """Partition a sparse histogram at ``highest_order`` like hats-import does.

    With ``lowest_order == highest_order`` every non-empty pixel of that order is a partition.
    Otherwise, pixels merge up to the threshold: with ``drop_empty_siblings`` four siblings merge
    into their parent when the parent's sum is within the threshold and at least two of them are
    non-empty (hats' default), without it a pixel goes to its coarsest ancestor (not below
    ``lowest_order``) whose sum is within the threshold. ``use_lower_order`` first lowers the
    mapping order as long as no pixel at it exceeds the threshold (hats-import's behaviour).
    ``weights`` (positive, one per pixel, e.g. bytes) replace the counts in the threshold tests,
    as hats-import's ``byte_pixel_threshold`` does; the destinations still count rows.

    Raises
    ------
    ThresholdError
        When a single pixel at ``highest_order`` exceeds the threshold; the message names it.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    unit = "rows" if weights is None else "bytes"
    weights = counts if weights is None else np.asarray(weights, dtype=np.int64)
    if lowest_order > highest_order:
        raise OptionError(f"lowest order {lowest_order} is above highest order {highest_order}")
    if lowest_order == highest_order:
        return Alignment(highest_order, pixels, counts, np.full(len(pixels), highest_order), pixels.copy())
    if threshold < 1:
        raise OptionError(f"threshold must be a positive number of {unit}")
    if len(weights) and weights.max() > threshold:
        worst = int(np.argmax(weights))
        extra = int(np.ceil(np.log(weights[worst] / threshold) / np.log(4))) if threshold else 0
        limit = "threshold" if unit == "rows" else "--max-bytes limit"
        raise ThresholdError(
            f"pixel {int(pixels[worst])} at order {highest_order} holds {int(weights[worst])} {unit}, over "
            f"the {limit} of {threshold}; use --highest-order {highest_order + max(extra, 1)} or more "
            f"(if the rows are spread out) or a {limit} of at least {int(weights[worst])}"
        )

    # sums[o] = sparse histograms (pixels, counts, weights) at order o, for o in [lowest, highest]
    sums = {highest_order: (pixels, counts, weights)}
    for order in range(highest_order - 1, lowest_order - 1, -1):
        pix, cnt, wgt = sums[order + 1]
        parents = pix >> 2
        starts = np.flatnonzero(np.r_[True, parents[1:] != parents[:-1]]) if len(pix) else np.empty(0, int)
        total = np.add.reduceat(cnt, starts) if len(starts) else cnt[:0]
        sums[order] = (parents[starts], total, total if wgt is cnt else np.add.reduceat(wgt, starts))

    if use_lower_order:
        effective = highest_order
        for order in range(highest_order, lowest_order, -1):
            if len(sums[order][2]) and sums[order][2].max() > threshold:
                break
            effective = order
        highest_order = effective
        pixels, counts, _ = sums[highest_order]

    dest_order = np.full(len(pixels), highest_order, dtype=np.int64)
    if drop_empty_siblings:
        # The coarsest collapsing ancestor wins: walk from fine to coarse, overwriting.
        for order in range(highest_order - 1, lowest_order - 1, -1):
            child_pix, _, child_wgt = sums[order + 1]
            parent_of_child = child_pix >> 2
            starts = np.flatnonzero(np.r_[True, parent_of_child[1:] != parent_of_child[:-1]])
            quad_max = np.maximum.reduceat(child_wgt, starts)
            par_pix, _, par_sum = sums[order]  # same parents, same order as starts
            collapse = (par_sum != quad_max) & (par_sum <= threshold)
            _apply(dest_order, pixels, highest_order, order, par_pix, collapse)
    else:
        # The coarsest ancestor within the threshold wins (scanning from coarse to fine).
        assigned = np.zeros(len(pixels), dtype=bool)
        for order in range(lowest_order, highest_order + 1):
            par_pix, _, par_sum = sums[order]
            ok = par_sum <= threshold
            anc = pixels >> (2 * (highest_order - order))
            hit = ok[np.searchsorted(par_pix, anc)] & ~assigned
            dest_order[hit] = order
            assigned |= hit
    dest_pixel = pixels >> (2 * (highest_order - dest_order))
    return Alignment(highest_order, pixels, counts, dest_order, dest_pixel)


def _apply(dest_order, pixels, highest_order, order, par_pix, flag):
    anc = pixels >> (2 * (highest_order - order))
    hit = flag[np.searchsorted(par_pix, anc)]
    dest_order[hit] = order


def incremental_alignment(
    pixels: np.ndarray,
    counts: np.ndarray,
    existing: list[tuple[int, int]],
    highest_order: int,
    lowest_order: int = 0,
    threshold: int = 1_000_000,
) -> Alignment:
    """Alignment that keeps ``existing`` partitions and adds new ones only outside them.

    Rows inside an existing partition go to it whatever its count; the rest are partitioned by
    the drop-empty-siblings rule, never merging into a pixel that overlaps the existing coverage.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    ex_order = np.array([o for o, _ in existing], dtype=np.int64)
    ex_pix = np.array([p for _, p in existing], dtype=np.int64)
    if len(existing) and ex_order.max() > highest_order:
        raise ValueError(
            f"highest order {highest_order} is below the catalog's deepest partition (order {ex_order.max()})"
        )
    # Ranges of existing partitions at the mapping order.
    start = ex_pix << (2 * (highest_order - ex_order))
    stop = (ex_pix + 1) << (2 * (highest_order - ex_order))
    order_idx = np.argsort(start)
    start, stop, ex_order_s, ex_pix_s = (
        start[order_idx],
        stop[order_idx],
        ex_order[order_idx],
        ex_pix[order_idx],
    )
    k = np.searchsorted(start, pixels, side="right") - 1
    inside = (k >= 0) & (pixels < np.where(k >= 0, stop[np.maximum(k, 0)], 0))
    dest_order = np.full(len(pixels), highest_order, dtype=np.int64)
    dest_pixel = pixels.copy()
    dest_order[inside] = ex_order_s[k[inside]]
    dest_pixel[inside] = ex_pix_s[k[inside]]

    out = ~inside
    if out.any():
        new_pix, new_cnt = pixels[out], counts[out]
        if new_cnt.max() > threshold:
            worst = int(np.argmax(new_cnt))
            raise ThresholdError(
                f"pixel {int(new_pix[worst])} at order {highest_order} holds {int(new_cnt[worst])} new "
                f"rows, over the threshold of {threshold}"
            )
        sums = {highest_order: (new_pix, new_cnt)}
        for order in range(highest_order - 1, lowest_order - 1, -1):
            sums[order] = coarsen_histogram(*sums[order + 1])
        new_dest = np.full(len(new_pix), highest_order, dtype=np.int64)
        for order in range(highest_order - 1, lowest_order - 1, -1):
            child_pix, child_cnt = sums[order + 1]
            parent_of_child = child_pix >> 2
            starts = np.flatnonzero(np.r_[True, parent_of_child[1:] != parent_of_child[:-1]])
            quad_max = np.maximum.reduceat(child_cnt, starts)
            par_pix, par_sum = sums[order]
            # a candidate parent may not overlap any existing partition
            p_start = par_pix << (2 * (highest_order - order))
            p_stop = (par_pix + 1) << (2 * (highest_order - order))
            overlaps = _overlaps(p_start, p_stop, start, stop)
            collapse = (par_sum != quad_max) & (par_sum <= threshold) & ~overlaps
            _apply(new_dest, new_pix, highest_order, order, par_pix, collapse)
        dest_order[out] = new_dest
        dest_pixel[out] = new_pix >> (2 * (highest_order - new_dest))
    return Alignment(highest_order, pixels, counts, dest_order, dest_pixel)


def _overlaps(a_start, a_stop, b_start, b_stop) -> np.ndarray:
    """For each half-open range a, whether it intersects any of the disjoint sorted ranges b."""
    if len(b_start) == 0:
        return np.zeros(len(a_start), dtype=bool)
    # the last b starting before a_stop must end after a_start
    k = np.searchsorted(b_start, a_stop, side="left") - 1
    return (k >= 0) & (b_stop[np.maximum(k, 0)] > a_start)

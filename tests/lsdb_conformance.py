"""Client conformance: lsdb's queries on a catalog, each against a brute-force answer from the raw rows.

A :class:`Kind` describes one catalog healforge wrote: where it is, the rows it must hold (computed
from the RAW inputs with numpy/pandas, never read back from the catalog), its margin and index if
any, and optional nested columns. :data:`OPERATIONS` maps an operation name to a check; each
check opens the catalog with lsdb, runs one operation and compares with the brute-force answer.
Adding a catalog kind is one :class:`Kind`; adding a nested sub-column check is one
:class:`NestedSpec` on it (the ``nested_columns`` operation compares every object's lists).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

ID = "id"
# probe regions: chosen where the test inputs have rows (see :func:`probe_inputs`)
CONE = (45.0, 10.0, 4 * 3600.0)  # ra, dec, radius arcsec
BOX = ((40.0, 52.0), (2.0, 14.0))
POLYGON = [(38.0, 4.0), (52.0, 3.0), (50.0, 16.0), (40.0, 15.0)]
XMATCH_RADIUS = 20.0  # arcsec; margins of the kinds must be wider
MARGIN_ARCSEC = 30.0


@dataclass
class NestedSpec:
    """A nested column to check: ``column`` holds, per object ``ID``, the rows of ``sources``
    whose ``key`` equals it, sorted by ``sort_by`` (``None``: in any order); ``sub`` are
    sub-columns loaded partially."""

    column: str
    sources: pd.DataFrame
    key: str
    sort_by: str | None
    sub: list[str]


@dataclass
class Kind:
    """One catalog written by healforge and what lsdb must find in it.

    ``path`` is what a user passes to ``lsdb.open_catalog`` (a catalog or a collection);
    ``expected`` the rows (``ID``, ra, dec and other columns) from the raw inputs; ``margin`` and
    ``index`` the member paths when the user passes them (``None`` when the collection attaches
    them or there is none); ``storage_options`` for URLs."""

    name: str
    path: str
    expected: pd.DataFrame
    margin: str | None = None
    has_margin: bool = False
    index: str | None = None
    has_index: bool = False
    storage_options: dict | None = None
    nested: list[NestedSpec] = field(default_factory=list)
    hats_paths: list[str] = field(default_factory=list)  # every catalog to validate strictly


def _upath(kind: Kind, path: str):
    from upath import UPath

    if not kind.storage_options:
        return path
    p = UPath(path, **kind.storage_options)
    p.fs.invalidate_cache()
    return p


def open_kind(kind: Kind, **kwargs):
    """``lsdb.open_catalog`` of the kind, with its margin when the user has to pass it."""
    import lsdb

    if kind.margin is not None:
        kwargs.setdefault("margin_cache", _upath(kind, kind.margin))
    return lsdb.open_catalog(_upath(kind, kind.path), **kwargs)


def separation_arcsec(ra1, dec1, ra2, dec2) -> np.ndarray:
    """Great-circle distance (haversine), arcseconds."""
    ra1, dec1, ra2, dec2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((dec2 - dec1) / 2) ** 2 + np.cos(dec1) * np.cos(dec2) * np.sin((ra2 - ra1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600


def unit_vectors(ra, dec) -> np.ndarray:
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def in_convex_polygon(ra, dec, vertices) -> np.ndarray:
    """Inside a convex spherical polygon (smaller than a hemisphere) with great-circle edges,
    vertices in either orientation."""
    p = unit_vectors(ra, dec)
    v = unit_vectors(*zip(*vertices, strict=True))
    normals = [np.cross(v[i], v[(i + 1) % len(v)]) for i in range(len(v))]
    orientation = np.sign(v.sum(axis=0) @ normals[0])  # the side holding the polygon's centre
    return (np.stack([p @ n for n in normals]) * orientation >= 0).all(axis=0)


def spatial_index(ra, dec) -> np.ndarray:
    """Order-29 nested HEALPix index of raw positions (hats' own function, not healforge's)."""
    from hats.pixel_math.spatial_index import compute_spatial_index

    return np.asarray(compute_spatial_index(np.asarray(ra, float), np.asarray(dec, float)))


def _ids(df: pd.DataFrame) -> np.ndarray:
    return np.sort(df[ID].to_numpy(dtype=np.int64))


def _same_rows(got: pd.DataFrame, want: pd.DataFrame, columns=("ra", "dec")) -> None:
    got = got.sort_values(ID).reset_index(drop=True)
    want = want.sort_values(ID).reset_index(drop=True)
    assert len(got) == len(want), f"{len(got)} rows, expected {len(want)}"
    np.testing.assert_array_equal(got[ID].to_numpy(dtype=np.int64), want[ID].to_numpy(dtype=np.int64))
    for col in columns:
        np.testing.assert_array_equal(got[col].to_numpy(), want[col].to_numpy(), err_msg=col)


def check_all_rows(kind: Kind) -> None:
    _same_rows(open_kind(kind).compute(), kind.expected, [c for c in kind.expected.columns if c != ID])


def check_cone(kind: Kind) -> None:
    ra, dec, radius = CONE
    got = open_kind(kind).cone_search(ra, dec, radius).compute()
    e = kind.expected
    want = e[separation_arcsec(ra, dec, e["ra"], e["dec"]) <= radius]
    assert len(want) > 0, "the probe cone holds no row: move it"
    _same_rows(got, want)


def check_box(kind: Kind) -> None:
    (ra0, ra1), (dec0, dec1) = BOX
    got = open_kind(kind).box_search(ra=(ra0, ra1), dec=(dec0, dec1)).compute()
    e = kind.expected
    want = e[(e["ra"] >= ra0) & (e["ra"] <= ra1) & (e["dec"] >= dec0) & (e["dec"] <= dec1)]
    assert len(want) > 0
    _same_rows(got, want)


def check_polygon(kind: Kind) -> None:
    import pytest

    pytest.importorskip("lsst.sphgeom", reason="lsdb's polygon_search needs lsst-sphgeom")
    got = open_kind(kind).polygon_search(POLYGON).compute()
    e = kind.expected
    want = e[in_convex_polygon(e["ra"], e["dec"], POLYGON)]
    assert len(want) > 0
    _same_rows(got, want)


def check_partition(kind: Kind) -> None:
    cat = open_kind(kind)
    pixel = cat.get_healpix_pixels()[0]
    got = cat.partitions[0].compute()
    e = kind.expected
    h29 = spatial_index(e["ra"], e["dec"])
    want = e[(h29 >> (2 * (29 - pixel.order))) == pixel.pixel]
    assert len(want) > 0
    _same_rows(got, want)


def check_columns(kind: Kind) -> None:
    extra = [c for c in kind.expected.columns if c not in (ID, "ra", "dec")][:1]
    got = open_kind(kind, columns=[ID, *extra]).compute()
    # lsdb adds the coordinates; nothing else comes
    assert sorted(got.columns) == sorted([ID, *extra, "ra", "dec"]), list(got.columns)
    _same_rows(got.assign(ra=0.0, dec=0.0), kind.expected.assign(ra=0.0, dec=0.0), extra)


def check_id_search(kind: Kind) -> None:
    e = kind.expected
    ids = [int(i) for i in e[ID].to_numpy()[:: max(1, len(e) // 7)][:7]] + [-12345]
    cat = open_kind(kind)
    index = {ID: _upath(kind, kind.index)} if kind.index else None
    got = cat.id_search(values={ID: ids}, index_catalogs=index).compute()
    _same_rows(got, e[e[ID].isin(ids)])


def partition_of(pixels, ra, dec) -> np.ndarray:
    """Index into ``pixels`` (lsdb's HealpixPixel list) of each position's partition, -1 outside."""
    h29 = spatial_index(ra, dec)
    out = np.full(len(h29), -1)
    for i, p in enumerate(pixels):
        out[(h29 >> (2 * (29 - p.order))) == p.pixel] = i
    return out


def boundary_probes(kind: Kind, offset_arcsec: float = 12.0, count: int = 4) -> pd.DataFrame:
    """Positions ``offset_arcsec`` from a raw row but in another partition than that row: only
    a margin lets a crossmatch find their pairs."""
    e = kind.expected
    pixels = open_kind(kind).get_healpix_pixels()
    home = partition_of(pixels, e["ra"], e["dec"])
    found = []
    for theta in np.radians(np.arange(0, 360, 45)):
        d = offset_arcsec / 3600
        dec = np.clip(e["dec"].to_numpy() + d * np.cos(theta), -89.9, 89.9)
        ra = np.mod(e["ra"].to_numpy() + d * np.sin(theta) / np.cos(np.radians(dec)), 360)
        there = partition_of(pixels, ra, dec)
        hit = np.flatnonzero((there >= 0) & (there != home))
        found += [(ra[i], dec[i]) for i in hit[:count]]
        if len(found) >= count:
            break
    assert found, "no row near a partition boundary: add rows or lower the threshold"
    ra, dec = zip(*found[:count], strict=True)
    return pd.DataFrame({"ra": ra, "dec": dec})


def check_crossmatch(kind: Kind) -> None:
    """Probes matched to the catalog (with its margin attached) within XMATCH_RADIUS: the pairs
    equal the brute-force pairs over the raw rows. Probes are raw rows nudged by 0.5" and points
    just across a partition boundary from a raw row (found only through the margin)."""
    import lsdb

    e = kind.expected
    sample = e.iloc[:: max(1, len(e) // 40)]
    nudged = pd.DataFrame({"ra": sample["ra"].to_numpy(), "dec": sample["dec"].to_numpy() + 0.5 / 3600})
    probes = pd.concat([nudged, boundary_probes(kind)], ignore_index=True)
    probes.insert(0, "pid", np.arange(len(probes)))
    right = open_kind(kind)
    assert right.margin is not None, "no margin attached"
    left = lsdb.from_dataframe(probes, ra_column="ra", dec_column="dec", catalog_name="probes")
    got = left.crossmatch(
        right, radius_arcsec=XMATCH_RADIUS, n_neighbors=5, suffixes=("_l", "_r"), suffix_method="all_columns"
    ).compute()
    got_pairs = sorted(zip(got["pid_l"].astype(int), got[f"{ID}_r"].astype(int), strict=True))
    want_pairs = []
    for pid, pra, pdec in probes[["pid", "ra", "dec"]].itertuples(index=False):
        sep = separation_arcsec(pra, pdec, e["ra"].to_numpy(), e["dec"].to_numpy())
        want_pairs += [(int(pid), int(i)) for i in e[ID].to_numpy()[sep <= XMATCH_RADIUS]]
    assert got_pairs == sorted(want_pairs)


def check_nested_columns(kind: Kind) -> None:
    """Each nested column's sub-columns loaded partially (and in a cone) equal the raw sources of
    each object, sorted; a kind without nested columns has nothing to check."""
    import pytest

    if not kind.nested:
        pytest.skip("no nested columns")
    for spec in kind.nested:
        cols = [ID, *[f"{spec.column}.{s}" for s in spec.sub]]
        got = open_kind(kind, columns=cols).compute()
        want = spec.sources.sort_values([spec.key, spec.sort_by] if spec.sort_by else [spec.key])
        assert len(got) == len(kind.expected)
        lists = got[spec.column].nest.to_lists()
        by_id = dict(zip(got[ID].to_numpy(), range(len(got)), strict=True))
        for sub in spec.sub:
            for obj, values in want.groupby(spec.key)[sub]:
                row, values = np.asarray(lists[sub].iloc[by_id[obj]], float), values.to_numpy(float)
                if spec.sort_by is None:  # no order promised: compare as multisets
                    row, values = np.sort(row), np.sort(values)
                np.testing.assert_array_equal(row, values, err_msg=f"{spec.column}.{sub} of {obj}")
            empty = [i for obj, i in by_id.items() if obj not in set(want[spec.key])]
            assert all(np.size(lists[sub].iloc[i]) == 0 or pd.isna(lists[sub].iloc[i]) for i in empty)
        ra, dec, radius = CONE
        cone = open_kind(kind, columns=cols).cone_search(ra, dec, radius).compute()
        e = kind.expected
        _same_rows(cone, e[separation_arcsec(ra, dec, e["ra"], e["dec"]) <= radius])


def check_hats_strict(kind: Kind) -> None:
    from hats.io.validation import is_valid_catalog

    for path in kind.hats_paths or [kind.path]:
        assert is_valid_catalog(_upath(kind, path), strict=True), path


OPERATIONS: dict[str, Callable[[Kind], None]] = {
    "all_rows": check_all_rows,
    "cone_search": check_cone,
    "box_search": check_box,
    "polygon_search": check_polygon,
    "partitions[0]": check_partition,
    "columns": check_columns,
    "nested_columns": check_nested_columns,
    "id_search": check_id_search,
    "crossmatch": check_crossmatch,
    "hats_strict": check_hats_strict,
}


def base_boundary_dec(ra: float, lo: float = 0.0, hi: float = 20.0) -> float:
    """Declination where the meridian ``ra`` crosses a HEALPix base-pixel boundary (every
    partitioning has a partition boundary there), by bisection."""
    base = lambda dec: spatial_index([ra], [dec])[0] >> 58  # noqa: E731
    assert base(lo) != base(hi), f"no base-pixel boundary at ra {ra} between dec {lo} and {hi}"
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if base(mid) == base(lo) else (lo, mid)
    return hi


def probe_inputs(
    n: int, seed: int, start_id: int = 0, version: float = 1.0, boundary: int = 0
) -> pd.DataFrame:
    """Raw rows: half uniform on the sky, half in the probe region around ``CONE``; ``boundary``
    more rows 8" north of base-pixel boundaries there (see :func:`boundary_probes`)."""
    rng = np.random.default_rng(seed)
    k = n // 2
    ra = np.r_[rng.uniform(0, 360, n - k), rng.uniform(36, 56, k)]
    dec = np.r_[np.degrees(np.arcsin(rng.uniform(-1, 1, n - k))), rng.uniform(0, 20, k)]
    if boundary:
        b_ra = np.linspace(40, 52, boundary)
        b_dec = np.array([base_boundary_dec(r) for r in b_ra]) + 8 / 3600
        ra, dec = np.r_[ra, b_ra], np.r_[dec, b_dec]
    m = len(ra)
    return pd.DataFrame(
        {
            ID: np.arange(start_id, start_id + m, dtype=np.int64),
            "ra": ra,
            "dec": dec,
            "mag": np.full(m, version) + rng.normal(0, 0.01, m),
            "flag": rng.integers(0, 5, m).astype(np.int16),
        }
    )


def probe_sources(
    objects: pd.DataFrame, seed: int, start_id: int = 0, mjd0: float = 0.0, key: str = "obj_id"
) -> pd.DataFrame:
    """Raw sources of ``objects``: 0 to 5 per object (some objects get none), each within 0.5" of
    its object, keyed by ``key`` (not ``ID``: nest joins differently named keys), unique
    ``src_id`` from ``start_id``, times ``mjd`` in ``[mjd0, mjd0 + 1)``."""
    rng = np.random.default_rng(seed)
    count = rng.integers(0, 6, len(objects))
    m = int(count.sum())
    dec = np.clip(np.repeat(objects["dec"].to_numpy(), count) + rng.uniform(-1e-4, 1e-4, m), -90, 90)
    ra = np.mod(np.repeat(objects["ra"].to_numpy(), count) + rng.uniform(-1e-4, 1e-4, m), 360)
    return pd.DataFrame(
        {
            "src_id": np.arange(start_id, start_id + m, dtype=np.int64),
            key: np.repeat(objects[ID].to_numpy(), count),
            "ra": ra,
            "dec": dec,
            "mjd": mjd0 + rng.uniform(0, 1, m),
            "flux": rng.normal(1, 0.1, m),
        }
    )

"""Margin caches against an independent brute-force ground truth (healpy boundaries + scipy KD-tree)."""

from __future__ import annotations

from pathlib import Path

import healpy as hp
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

import healforge
import healforge.errors
from conftest import run_cli
from healforge.catalog.build.importer import import_catalog

TOL = 0.001  # arcsec
RAD = np.pi / 180 / 3600  # radians per arcsec


def xyz(ra, dec):
    return np.asarray(hp.ang2vec(np.asarray(ra, float), np.asarray(dec, float), lonlat=True)).reshape(-1, 3)


def read_all(root) -> pd.DataFrame:
    """Every row of a catalog with its Norder/Npix (single-file and directory pixels)."""
    base = Path(root, "dataset")
    files = sorted(base.glob("Norder=*/Dir=*/Npix=*.parquet")) + sorted(
        base.glob("Norder=*/Dir=*/Npix=*/*.parquet")
    )
    frames = []
    for f in files:
        npix = next(p for p in f.parts if p.startswith("Npix="))
        df = pq.read_table(f).to_pandas()
        df["Norder"] = int(next(p for p in f.parts if p.startswith("Norder=")).split("=")[1])
        df["Npix"] = int(npix.split("=")[1].split(".")[0])
        frames.append(df)
    return pd.concat(frames, ignore_index=True)


def boundary_distance(points: np.ndarray, order: int, pixel: int, max_arcsec: float) -> np.ndarray:
    """Great-circle distance (arcsec) from unit vectors to the boundary of one nested pixel, sampled
    with healpy so that arcs are at most 2 arcsec (sagitta far below 1e-4 arcsec). Distances above
    ``max_arcsec`` are returned as inf."""
    nside = 2**order
    edge = hp.nside2resol(nside, arcmin=True) * 60 * 2
    step = int(np.ceil(edge / 2.0))
    verts = hp.boundaries(nside, pixel, step=step, nest=True).T  # (4*step, 3)
    seg = np.max(np.linalg.norm(np.roll(verts, -1, 0) - verts, axis=1))
    tree = cKDTree(verts)
    out = np.full(len(points), np.inf)
    reach = max_arcsec * RAD + seg
    nearest, _ = tree.query(points, distance_upper_bound=reach)
    cand = np.flatnonzero(np.isfinite(nearest))
    near = tree.query_ball_point(points[cand], r=reach)
    if len(cand) == 0:
        return out
    lens = np.array([len(x) for x in near])
    owner = np.repeat(cand, lens)
    seg0 = np.concatenate([np.asarray(x, dtype=np.int64) for x in near])
    # both arcs at each vertex within reach
    owner, seg0 = np.concatenate([owner, owner]), np.concatenate([seg0, (seg0 - 1) % len(verts)])
    a, b, p = verts[seg0], verts[(seg0 + 1) % len(verts)], points[owner]
    n = np.cross(a, b)
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    on_arc = (np.einsum("ij,ij->i", np.cross(a, p), n) >= 0) & (np.einsum("ij,ij->i", np.cross(p, b), n) >= 0)
    d_line = np.arcsin(np.abs(np.einsum("ij,ij->i", n, p)))
    d_end = np.minimum(
        2 * np.arcsin(np.linalg.norm(a - p, axis=1) / 2), 2 * np.arcsin(np.linalg.norm(b - p, axis=1) / 2)
    )
    np.minimum.at(out, owner, np.where(on_arc, d_line, d_end) / RAD)
    return out


def negative_tree(cat: Path) -> list[tuple[int, int]]:
    """The empty pixels that hats-import gives margins to (hats' negative tree), by set logic:
    the base pixels and the children of every partition's strict ancestors, less the partitions
    and their ancestors. (hats' own ``generate_negative_tree_pixels`` compiles with numba for
    about 10 s; one test compares the two.)"""
    info = pd.read_csv(cat / "partition_info.csv")
    parts = {(int(o), int(p)) for o, p in zip(info["Norder"], info["Npix"], strict=True)}
    above = {(o - k, p >> (2 * k)) for o, p in parts for k in range(1, o + 1)}
    candidates = {(0, b) for b in range(12)} | {(o + 1, 4 * p + c) for o, p in above for c in range(4)}
    return sorted(candidates - parts - above)


def check_margin(cat: Path, mrg: Path, radius: float) -> int:
    """Margin rows must be exactly the rows of other pixels within ``radius`` of each pixel, for
    the partitions and the empty pixels of hats' negative tree (and no other pixel)."""
    primary = read_all(cat)
    margin = read_all(mrg) if any(Path(mrg, "dataset").glob("Norder=*")) else primary.iloc[:0]
    info = pd.read_csv(cat / "partition_info.csv")
    pixels = list(zip(info["Norder"], info["Npix"], strict=True)) + negative_tree(cat)
    assert set(zip(margin["Norder"], margin["Npix"], strict=True)) <= set(pixels)
    pts = xyz(primary["ra"], primary["dec"])
    points_tree = cKDTree(pts)
    total = 0
    for order, pixel in pixels:
        other = ~((primary["Norder"] == order) & (primary["Npix"] == pixel)).to_numpy()
        centre = np.asarray(hp.pix2vec(2**order, pixel, nest=True))
        reach = hp.max_pixrad(2**order) + (radius + 1) * RAD
        close = np.zeros(len(primary), dtype=bool)
        close[points_tree.query_ball_point(centre, 2 * np.sin(min(reach, np.pi) / 2))] = True
        sel = other & close
        d = np.full(len(primary), np.inf)
        if sel.any():
            d[sel] = boundary_distance(pts[sel], order, pixel, radius + 1)
        must = set(primary["id"][d < radius - TOL])
        may = set(primary["id"][d < radius + TOL])
        got = margin[(margin["Norder"] == order) & (margin["Npix"] == pixel)]
        ids = set(got["id"])
        assert len(ids) == len(got), "duplicate rows in a margin pixel"
        assert must <= ids, f"pixel {order}/{pixel}: missing {sorted(must - ids)[:5]}"
        assert ids <= may, f"pixel {order}/{pixel}: extra {sorted(ids - may)[:5]}"
        hp29 = got["_healpix_29"].to_numpy()
        assert np.all(np.diff(hp29) >= 0)
        assert not np.any((hp29 >> (2 * (29 - order))) == pixel)
        total += len(got)
    return total


def uniform(n, rng, ra=(0, 360), dec=(-90, 90)):
    z = rng.uniform(np.sin(np.radians(dec[0])), np.sin(np.radians(dec[1])), n)
    return rng.uniform(*ra, n), np.degrees(np.arcsin(z))


def write(tmp_path: Path, ra, dec, name="in") -> Path:
    rng = np.random.default_rng(len(ra))
    df = pd.DataFrame(
        {
            "id": np.arange(len(ra)),
            "ra": np.asarray(ra),
            "dec": np.asarray(dec),
            "mag": rng.normal(20, 1, len(ra)),
        }
    )
    path = tmp_path / f"{name}.parquet"
    df.to_parquet(path, index=False)
    return path


def build(tmp_path, ra, dec, threshold, highest_order=8, lowest_order=0, name="cat"):
    src = write(tmp_path, ra, dec, name)
    out = tmp_path / name
    import_catalog(
        [str(src)],
        out,
        threshold=threshold,
        highest_order=highest_order,
        lowest_order=lowest_order,
        synchronous=True,
        quiet=True,
    )
    return out


def clustered(rng):
    ra, dec = uniform(4000, rng)
    parts = [(ra, dec)]
    for c_ra, c_dec, s, n in [(45, 30, 2, 3000), (200, -60, 1, 3000), (300, 5, 0.5, 2000)]:
        parts.append((c_ra + rng.normal(0, s, n), np.clip(c_dec + rng.normal(0, s, n), -89.9, 89.9)))
    ra = np.concatenate([p[0] for p in parts]) % 360
    return ra, np.concatenate([p[1] for p in parts])


@pytest.mark.parametrize("radius", [30.0, 300.0])
@pytest.mark.slow
def test_uniform_and_clustered_mixed_orders(tmp_path, radius):
    rng = np.random.default_rng(1)
    ra, dec = clustered(rng)
    cat = build(tmp_path, ra, dec, threshold=600)
    orders = set(pd.read_csv(cat / "partition_info.csv")["Norder"])
    assert len(orders) >= 3, orders
    res = healforge.margin(cat, tmp_path / "m", radius, synchronous=True, quiet=True)
    n = check_margin(cat, tmp_path / "m", radius)
    assert n == res.rows > 0


@pytest.mark.slow
def test_seam_and_poles_dense(tmp_path):
    rng = np.random.default_rng(2)
    seam = uniform(6000, rng, ra=(-1.5, 1.5), dec=(-1.5, 1.5))
    north = uniform(5000, rng, ra=(0, 360), dec=(88.5, 90))
    south = uniform(5000, rng, ra=(0, 360), dec=(-90, -88.5))
    ra = np.concatenate([seam[0] % 360, north[0], south[0]])
    dec = np.concatenate([seam[1], north[1], south[1]])
    cat = build(tmp_path, ra, dec, threshold=400, highest_order=9)
    pix = pd.read_csv(cat / "partition_info.csv")
    assert pix["Norder"].max() >= 6
    for radius in (5.0, 40.0):
        out = tmp_path / f"m{radius:g}"
        res = healforge.margin(cat, out, radius, synchronous=True, quiet=True)
        assert check_margin(cat, out, radius) == res.rows > 0
    # rows within 40 arcsec of the seam cross it: pixels on both sides get margins from the other side
    m = read_all(tmp_path / "m40")
    lon_pix, _ = hp.pix2ang(2 ** m["Norder"].to_numpy(), m["Npix"].to_numpy(), nest=True, lonlat=True)
    crossing = ((m["ra"] > 300) & (lon_pix < 60)) | ((m["ra"] < 60) & (lon_pix > 300))
    assert crossing.sum() > 0


@pytest.mark.slow
def test_margin_rows_near_radius_are_decided_exactly(tmp_path):
    """Points placed 0.01 arcsec inside and outside the radius from pixel edges, poles included."""
    order, radius = 5, 20.0
    rng = np.random.default_rng(3)
    n = 4**order
    # random pixels, base-pixel corners, and pixels touching the north and south poles
    pixels = np.concatenate(
        [rng.integers(0, 12 * n, 25), [0, 3, 12 * n - 1, n - 1, 3 * n - 1, 8 * n, 10 * n]]
    )
    ra, dec = [], []
    for p in pixels:
        b = hp.boundaries(2**order, int(p), step=50, nest=True).T
        c = hp.pix2vec(2**order, int(p), nest=True)
        for k in rng.integers(0, len(b), 8):
            v = np.cross(b[k], b[(k + 1) % len(b)] - b[k - 1])  # normal to the edge at b[k]
            v /= np.linalg.norm(v)
            v *= np.sign(np.dot(v, b[k] - np.asarray(c)))  # pointing outwards
            for off in (radius - 0.01, radius + 0.01, 3.0, -3.0, -radius + 0.005, -radius - 0.005):
                w = b[k] * np.cos(off * RAD) + v * np.sin(off * RAD)
                lo, la = hp.vec2ang(w, lonlat=True)
                ra.append(lo[0])
                dec.append(la[0])
    cat = build(
        tmp_path,
        np.array(ra),
        np.array(dec),
        threshold=10**6,
        highest_order=order,
        lowest_order=order,
    )
    res = healforge.margin(cat, tmp_path / "m", radius, synchronous=True, quiet=True)
    assert check_margin(cat, tmp_path / "m", radius) == res.rows


@pytest.mark.slow
def test_hats_validation_lsdb_open_and_properties(tmp_path):
    import hats
    from hats.io.validation import is_valid_catalog

    rng = np.random.default_rng(4)
    ra, dec = uniform(8000, rng)
    cat = build(tmp_path, ra, dec, threshold=500, highest_order=4)
    out = tmp_path / "cat_margin"

    def margin_cli(*options):
        return run_cli("margin", cat, "-o", out, "--radius", "300", *options, check=False, timeout=120)

    proc = margin_cli("--synchronous", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert is_valid_catalog(out, strict=True)
    m = hats.read_hats(out)
    assert m.catalog_info.catalog_type == "margin"
    assert m.catalog_info.margin_threshold == 300
    assert m.catalog_info.primary_catalog == "cat"
    assert m.catalog_info.ra_column == "ra" and m.catalog_info.dec_column == "dec"
    assert m.catalog_info.total_rows == check_margin(cat, out, 300.0)
    assert pq.read_schema(out / "dataset" / "_common_metadata").equals(
        pq.read_schema(cat / "dataset" / "_common_metadata")
    )

    import lsdb

    c = lsdb.open_catalog(cat, margin_cache=out)
    assert len(c.compute()) == 8000
    assert len(c.margin.compute()) == m.catalog_info.total_rows

    # a rerun of the finished margin has nothing to do; other arguments need --overwrite
    stamp = {str(f): f.stat().st_mtime_ns for f in out.rglob("*.parquet")}
    proc = margin_cli("--synchronous")
    assert proc.returncode == 0 and proc.stdout.startswith("already complete: "), proc.stderr
    assert {str(f): f.stat().st_mtime_ns for f in out.rglob("*.parquet")} == stamp
    proc = run_cli("margin", cat, "-o", out, "--radius", "200", "--synchronous", check=False)
    assert proc.returncode == 2 and "radius_arcsec" in proc.stderr and "--overwrite" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_empty_margin_is_valid(tmp_path):
    from hats.io.validation import is_valid_catalog

    ra, dec = np.array([10.0, 200.0]), np.array([10.0, -30.0])
    cat = build(tmp_path, ra, dec, threshold=1, highest_order=3, lowest_order=3)
    res = healforge.margin(cat, tmp_path / "m", 5, synchronous=True, quiet=True)
    assert res.rows == 0
    assert is_valid_catalog(tmp_path / "m", strict=True)
    import lsdb

    c = lsdb.open_catalog(cat, margin_cache=tmp_path / "m")
    assert len(c.compute()) == 2


@pytest.mark.slow
def test_directory_pixels_are_read(tmp_path):
    """Pixels stored as ``Npix=P/`` directories with several files give the same margin."""
    rng = np.random.default_rng(5)
    ra, dec = uniform(5000, rng)
    cat = build(tmp_path, ra, dec, threshold=800, highest_order=4)
    ref = healforge.margin(cat, tmp_path / "m1", 900, synchronous=True, quiet=True)
    for f in sorted(Path(cat, "dataset").glob("Norder=*/Dir=*/Npix=*.parquet")):
        t = pq.read_table(f)
        d = f.with_suffix("")
        d.mkdir()
        half = len(t) // 2
        pq.write_table(t.slice(0, half), d / "a.parquet")
        pq.write_table(t.slice(half), d / "b.parquet")
        f.unlink()
    res = healforge.margin(cat, tmp_path / "m2", 900, synchronous=True, quiet=True)
    assert res.rows == ref.rows
    a, b = read_all(tmp_path / "m1"), read_all(tmp_path / "m2")
    assert sorted(a["id"]) == sorted(b["id"])

    # rebuilding over an existing margin replaces it (built aside, then swapped in)
    with pytest.raises(healforge.errors.CatalogError, match="other arguments .radius_arcsec.*--overwrite"):
        healforge.margin(cat, tmp_path / "m1", 300, synchronous=True, quiet=True)
    res = healforge.margin(cat, tmp_path / "m1", 300, overwrite=True, synchronous=True, quiet=True)
    assert res.rows < ref.rows
    assert check_margin(cat, tmp_path / "m1", 300.0) == res.rows
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_lsdb_crossmatch_with_margin_finds_straddling_pairs(tmp_path):
    import lsdb

    rng = np.random.default_rng(6)
    ra, dec = uniform(6000, rng, ra=(40, 50), dec=(-5, 5))
    # right catalog: every left point moved by 0.5-2 arcsec in a random direction
    sep = rng.uniform(0.5, 2.0, len(ra)) / 3600
    ang = rng.uniform(0, 2 * np.pi, len(ra))
    ra2 = ra + sep * np.cos(ang) / np.cos(np.radians(dec))
    dec2 = dec + sep * np.sin(ang)
    left = build(tmp_path, ra, dec, threshold=300, highest_order=8, name="left")
    right = build(tmp_path, ra2, dec2, threshold=700, highest_order=8, name="right")
    healforge.margin(right, tmp_path / "right_margin", 5, synchronous=True, quiet=True)

    # brute force: nearest right neighbour of every left row within 3 arcsec
    tree = cKDTree(xyz(ra2, dec2))
    dist, idx = tree.query(xyz(ra, dec), distance_upper_bound=2 * np.sin(3 * RAD / 2))
    truth = {(i, int(j)) for i, j in enumerate(idx) if np.isfinite(dist[i])}
    assert len(truth) == len(ra)

    lc = lsdb.open_catalog(left)
    rc = lsdb.open_catalog(right, margin_cache=tmp_path / "right_margin")
    res = lc.crossmatch(rc, radius_arcsec=3, n_neighbors=1, suffixes=("_l", "_r")).compute()
    got = set(zip(res["id_l"].astype(int), res["id_r"].astype(int), strict=True))
    assert got == truth

    # some pairs straddle partitions: the left row's pixel differs from the right row's partition
    rpix = pd.read_csv(right / "partition_info.csv")
    r_rows = read_all(right).set_index("id")
    l_hp = read_all(left).set_index("id")["_healpix_29"]
    li, rj = np.array(sorted(truth)).T
    r_order = r_rows.loc[rj, "Norder"].to_numpy()
    straddle = int(
        ((l_hp.loc[li].to_numpy() >> (2 * (29 - r_order))) != r_rows.loc[rj, "Npix"].to_numpy()).sum()
    )
    assert straddle > 0 and len(rpix) > 4
    # without the margin those pairs are lost
    bare = lc.crossmatch(
        lsdb.open_catalog(right), radius_arcsec=3, n_neighbors=1, suffixes=("_l", "_r")
    ).compute()
    assert len(bare) == len(truth) - straddle


def test_dask_workers_give_the_same_margin(tmp_path):
    rng = np.random.default_rng(8)
    ra, dec = clustered(rng)
    cat = build(tmp_path, ra, dec, threshold=1500, highest_order=6)
    a = healforge.margin(cat, tmp_path / "sync", 120, synchronous=True, quiet=True)
    b = healforge.margin(cat, tmp_path / "dask", 120, workers=2, quiet=True)
    assert a.rows == b.rows > 0 and a.pixels == b.pixels
    x, y = read_all(tmp_path / "sync"), read_all(tmp_path / "dask")
    pd.testing.assert_frame_equal(x, y)


def holed_survey(rng):
    """A dense box with holes (order-9 pixels and one order-8 pixel emptied, as masks around
    bright stars do) and a sparse blob beside it: partitions of orders 5 to 9 right next to empty
    pixels of hats' negative tree."""
    ra, dec = uniform(30000, rng, ra=(150, 151.5), dec=(19, 20.5))
    pix9 = hp.ang2pix(2**9, ra, dec, nest=True, lonlat=True)
    holes9 = hp.ang2pix(
        2**9,
        [150.3, 150.5, 150.9, 151.2, 150.6, 151.0],
        [19.3, 20.2, 19.6, 20.0, 19.8, 19.2],
        nest=True,
        lonlat=True,
    )
    hole8 = hp.ang2pix(2**8, 150.75, 19.75, nest=True, lonlat=True)
    keep = ~np.isin(pix9, holes9) & (pix9 >> 2 != hole8)
    blob_ra, blob_dec = 152.5 + rng.normal(0, 0.3, 3000), 20 + rng.normal(0, 0.3, 3000)
    return np.r_[ra[keep], blob_ra], np.r_[dec[keep], blob_dec]


@pytest.mark.slow
def test_margin_covers_empty_pixels_beside_dense_ones(tmp_path):
    """Rows near the empty pixels beside a dense footprint are in those pixels' margins, exactly
    (brute force against every partition and negative-tree pixel); ``validate`` agrees."""
    rng = np.random.default_rng(11)
    ra, dec = holed_survey(rng)
    cat = build(tmp_path, ra, dec, threshold=500, highest_order=9)
    import hats

    primary = set(map(tuple, pd.read_csv(cat / "partition_info.csv")[["Norder", "Npix"]].to_numpy()))
    empty = set(negative_tree(cat))
    assert empty == {(p.order, p.pixel) for p in hats.read_hats(cat).generate_negative_tree_pixels()}
    # empty pixels as fine as the densest partitions touch the footprint's edges
    assert max(o for o, _ in empty) == max(o for o, _ in primary) == 9
    for radius in (5.0, 60.0):
        out = tmp_path / f"m{radius:g}"
        res = healforge.margin(cat, out, radius, synchronous=True, quiet=True)
        assert check_margin(cat, out, radius) == res.rows
        rows = read_all(out)
        in_empty = rows[[p in empty for p in zip(rows["Norder"], rows["Npix"], strict=True)]]
        # every hole has margin rows (6 pixels: one order-9 hole lies inside the order-8 one)
        assert in_empty[["Norder", "Npix"]].drop_duplicates().shape[0] >= 6
        assert len(in_empty) > 20
    proc = run_cli("validate", tmp_path / "m5", check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    # lsdb: a catalog with rows inside the holes finds its neighbours across the holes' edges
    import lsdb

    rows = read_all(tmp_path / "m5")
    near = rows[[p in empty for p in zip(rows["Norder"], rows["Npix"], strict=True)]]
    # each margin row moved by 0.5-3 arcsec, into its hole when one of 16 directions gets there
    n, k = len(near), 16
    sep = rng.uniform(0.5, 3.0, (n, k)) / 3600
    ang = rng.uniform(0, 2 * np.pi, (n, k))
    m_ra, m_dec = near["ra"].to_numpy()[:, None], near["dec"].to_numpy()[:, None]
    c_ra, c_dec = m_ra + sep * np.cos(ang) / np.cos(np.radians(m_dec)), m_dec + sep * np.sin(ang)
    order = near["Norder"].to_numpy()[:, None]
    inside = hp.ang2pix(2**order, c_ra, c_dec, nest=True, lonlat=True) == near["Npix"].to_numpy()[:, None]
    pick = np.where(inside.any(axis=1), inside.argmax(axis=1), 0)
    l_ra, l_dec = c_ra[np.arange(n), pick], c_dec[np.arange(n), pick]
    left = build(tmp_path, l_ra, l_dec, threshold=10**6, highest_order=9, name="left")
    tree = cKDTree(xyz(ra, dec))
    dist, idx = tree.query(xyz(l_ra, l_dec), distance_upper_bound=2 * np.sin(4 * RAD / 2))
    truth = {(i, int(j)) for i, j in enumerate(idx) if np.isfinite(dist[i])}
    l_pix = hp.ang2pix(2**9, l_ra, l_dec, nest=True, lonlat=True)
    in_hole = [i for i, _ in truth if any((l_pix[i] >> (2 * (9 - o))) == p for o, p in empty)]
    assert len(in_hole) > 10
    rc = lsdb.open_catalog(cat, margin_cache=tmp_path / "m5")
    res = lsdb.open_catalog(left).crossmatch(rc, radius_arcsec=4, n_neighbors=1, suffixes=("_l", "_r"))
    got = res.compute()
    assert set(zip(got["id_l"].astype(int), got["id_r"].astype(int), strict=True)) == truth


def test_rerun_of_a_collection_member_is_already_complete(tmp_path):
    """Margin and index of a collection, asked for again with the same arguments: "already
    complete", no new version, ``collection.properties`` unchanged; other arguments are refused."""
    rng = np.random.default_rng(14)
    ra, dec = uniform(3000, rng)
    src = write(tmp_path, ra, dec, "cat")
    coll = tmp_path / "coll"
    import_catalog([str(src)], coll, collection=True, threshold=500, synchronous=True, quiet=True)
    first = healforge.margin(coll, None, 120, synchronous=True, quiet=True)
    idx = healforge.index_catalog(coll, "id", synchronous=True, quiet=True)
    props = (coll / "collection.properties").read_text()
    entries = sorted(p.name for p in coll.iterdir())
    again = healforge.margin(coll, None, 120, synchronous=True, quiet=True)
    assert again.complete and again.rows == first.rows and str(again).startswith("already complete")
    assert again.pixels == first.pixels
    idx2 = healforge.index_catalog(coll, "id", synchronous=True, quiet=True)
    assert idx2.complete and idx2.rows == idx.rows == 3000
    assert (coll / "collection.properties").read_text() == props
    assert sorted(p.name for p in coll.iterdir()) == entries
    with pytest.raises(healforge.errors.CatalogError, match="other arguments .include_columns"):
        healforge.index_catalog(coll, "id", include_columns=["ra"], synchronous=True, quiet=True)
    # with --overwrite the member is rebuilt as its next version
    new = healforge.index_catalog(
        coll, "id", include_columns=["ra"], overwrite=True, synchronous=True, quiet=True
    )
    assert not new.complete and new.path != idx.path

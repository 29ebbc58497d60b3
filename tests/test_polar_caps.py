"""Polar-cap footprints in fuzzy mode (issue 14): a lon/lat box round a pole is the cap it means,
its area weights sum to 1, and a footprint without area is quarantined, never aborting the run."""

from __future__ import annotations

import healpy as hp
import numpy as np
import pandas as pd
import pytest
import shapely

from conftest import run_cli

NORTH = shapely.box(-180, 89, 180, 90)
SHAPES = [
    shapely.box(10, 10, 10.5, 10.5),
    NORTH,
    shapely.box(-180, -90, 180, -89),  # south cap
    shapely.box(0, 89, 360, 90),  # the north cap again, in the 0..360 convention (across 180)
    shapely.Polygon([(170, 88), (-170, 88), (-170, 90), (170, 90)]),  # a wedge to the pole across 180
]


def write_footprints(path, geoms):
    df = pd.DataFrame({"geometry": shapely.to_wkb(np.array(geoms, dtype=object))})
    df["v"] = np.arange(len(df), dtype=float) + 1
    df.to_parquet(path)
    return path


def cap_reference(order: int, lat: float) -> dict[int, float]:
    """Area fractions of the cells of the cap beyond ``lat`` (sign: which pole), counted with
    healpy on order-14 pixels whose centres lie in the cap."""
    fine = 14
    pole = np.array([0.0, 0.0, np.sign(lat)])
    pix = hp.query_disc(2**fine, pole, np.radians(90 - abs(lat)), nest=True)
    cells, n = np.unique(pix >> (2 * (fine - order)), return_counts=True)
    return dict(zip(cells.tolist(), (n / n.sum()).tolist(), strict=True))


@pytest.mark.slow
def test_polar_caps_aggregate_with_weights_summing_to_one(tmp_path):
    src = write_footprints(tmp_path / "fp.parquet", SHAPES)
    out = tmp_path / "sc.parquet"
    run_cli("sidecar", src, "-o", out, "--order", "8", "--geometry", "geometry", "--mode", "fuzzy", "-q")
    sc = pd.read_parquet(out)
    assert set(sc.source_id) == set(range(len(SHAPES)))
    assert (sc.healpix_id >= 0).all() and (sc.healpix_id < 12 * 4**8).all()
    sums = sc.groupby("source_id").weight.sum()
    assert np.allclose(sums, 1.0, atol=1e-9)
    for sid, lat in [(1, 89.0), (2, -89.0), (3, 89.0)]:
        ref = cap_reference(8, lat)
        mine = sc[sc.source_id == sid].set_index("healpix_id").weight
        # every cell of the cap, and no other (cells the cap only grazes are tiny either way)
        assert {c for c, f in ref.items() if f > 1e-4} <= set(mine.index) <= set(ref)
        got = np.array([ref[c] for c in mine.index])
        assert np.abs(mine.to_numpy() - got).max() < 1e-3, sid
    # the same cap written in either longitude convention
    a = sc[sc.source_id == 1][["healpix_id", "weight"]].reset_index(drop=True)
    b = sc[sc.source_id == 3][["healpix_id", "weight"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b, atol=1e-6)
    # the wedge across the antimeridian touches the pole from both sides of it
    wedge = sc[sc.source_id == 4]
    assert set(wedge.healpix_id.to_numpy() >> 16) == {1, 2}


@pytest.mark.slow
def test_polar_cap_at_order_4_as_reported(tmp_path):
    """``box(-180, 89, 180, 90)`` with ``--mode fuzzy --order 4``: the four cells round the pole,
    a quarter each (the cap is symmetric about the sector meridians)."""
    src = write_footprints(tmp_path / "fp.parquet", [NORTH])
    out = tmp_path / "map.parquet"
    proc = run_cli(
        "aggregate", src, "-o", out, "--order", "4", "--geometry", "geometry", "--mode", "fuzzy",
        "--columns", "v", "-q", "--synchronous",
    )  # fmt: skip
    assert proc.returncode == 0
    m = pd.read_parquet(out)
    assert sorted(m.cell_ids) == [255, 511, 767, 1023]  # the last cell of base pixels 0-3
    assert (m.v_count == 1).all() and (m.v_mean == 1.0).all()
    sc = tmp_path / "sc.parquet"
    run_cli("sidecar", src, "-o", sc, "--order", "4", "--geometry", "geometry", "--mode", "fuzzy", "-q")
    assert np.allclose(pd.read_parquet(sc).weight, 0.25, atol=1e-9)


@pytest.mark.parametrize("command", ["sidecar", "aggregate"])
@pytest.mark.slow
def test_footprint_without_area_never_aborts_the_valid_ones(tmp_path, command):
    flat = shapely.Polygon([(0, 90), (90, 90), (180, 90), (0, 89.9)])  # 2 points on the sphere
    src = write_footprints(tmp_path / "fp.parquet", [*SHAPES[:3], flat, SHAPES[4]])
    extra = ["--columns", "v"] if command == "aggregate" else []
    args = [command, src, "--order", "4", "--geometry", "geometry", "--mode", "fuzzy", *extra, "-q"]
    proc = run_cli(*args, "-o", tmp_path / "a.parquet", check=False)
    assert proc.returncode == 2
    assert "zero area on the sphere" in proc.stderr and "row 3" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    out = tmp_path / "b.parquet"
    run_cli(*args, "-o", out, "--on-bad-rows", "quarantine")
    rejected = pd.read_parquet(tmp_path / "b.rejected.parquet")
    assert list(rejected._source_row) == [3] and list(rejected._reason) == ["zero area on the sphere"]
    result = pd.read_parquet(out)
    if command == "sidecar":
        assert set(result.source_id) == {0, 1, 2, 4}
        assert np.allclose(result.groupby("source_id").weight.sum(), 1.0)
    else:
        # the caps' cells are in the map: 4 round each pole (the wedge shares two of the north's)
        assert {255, 511, 767, 1023, 2048, 2304, 2560, 2816} <= set(result.cell_ids)
        assert result.v_count.sum() == 1 * 2 + 4 + 4 + 2  # rows counted once per cell they reach

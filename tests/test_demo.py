"""``healforge demo OUT``: catalog, streaming state, Zarr pyramid, Parquet map and a plot."""

import numpy as np
import pyarrow.parquet as pq
import pytest
import xarray as xr
import xdggs
from PIL import Image

import healforge
from conftest import run_cli


@pytest.mark.slow
def test_demo_cli_makes_catalog_pyramid_parquet_and_png(tmp_path):
    out = tmp_path / "demo"
    rows = 12_000
    proc = run_cli("demo", out, "--rows", rows, "--workers", 1, "-q")
    assert "xdggs.decode" in proc.stdout and "survey.zarr" in proc.stdout
    assert healforge.validate_catalog(out / "catalog").ok

    zarr_path = out / "maps" / "survey.zarr"
    png = out / "maps" / "mag_mean.png"
    parquet = out / "maps" / "survey_order06.parquet"
    for p in (zarr_path, png, parquet, out / "maps" / "survey_state.parquet"):
        assert p.exists(), p

    counts = {}
    for order in (3, 4, 5, 6):
        ds = xdggs.decode(xr.open_zarr(str(zarr_path), group=f"order_{order:02d}"))
        assert ds.dggs.grid_info.level == order
        for var in ("mag_count", "mag_mean", "mag_median", "mag_std"):
            assert var in ds
        counts[order] = ds["mag_count"].values
        assert counts[order].sum() == rows  # every row of the catalog lands once at every level
        m = ds["mag_mean"].values
        assert np.all((m > 10) & (m < 30))
    # the Parquet map is the finest level of the pyramid
    table = pq.read_table(parquet)
    np.testing.assert_array_equal(table.column("mag_count").to_numpy(), counts[6])

    img = np.asarray(Image.open(png).convert("RGB"))
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 10  # more than one colour: data were drawn

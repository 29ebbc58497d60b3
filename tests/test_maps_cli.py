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

    assert main(["export", str(tmp_path / "m.zarr"), "-o", str(tmp_path / "x.tiff")]) == 2

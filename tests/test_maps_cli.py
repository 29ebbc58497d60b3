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


def test_export_carries_provenance(tmp_path):
    import json

    import pyarrow.parquet as pq
    import zarr

    from healforge.maps.table import map_metadata

    prov = {"inputs": ["/data/g1.h5", "/data/g2.h5"], "pipeline": {"name": "atl06", "config": "c.yaml"}}
    write_zarr(pyramid((2, 4)), tmp_path / "m.zarr", metadata=prov)
    for out, extra in (("e.zarr", []), ("e.parquet", ["--order", "4"]), ("e.geoparquet", ["--order", "2"])):
        r = _run("export", str(tmp_path / "m.zarr"), "-o", str(tmp_path / out), *extra)
        assert r.returncode == 0, r.stderr
    root = dict(zarr.open_group(str(tmp_path / "e.zarr"), mode="r").attrs["healforge"])
    one = map_metadata(read_map(tmp_path / "e.parquet"))
    geo = json.loads(pq.read_schema(tmp_path / "e.geoparquet").metadata[b"healforge"])
    for meta in (root, one, geo):
        assert meta["inputs"] == prov["inputs"] and meta["pipeline"] == prov["pipeline"]
        assert meta["exported_from"] == str(tmp_path / "m.zarr")
    assert root["orders"] == [2, 4] and one["order"] == 4 and geo["order"] == 2

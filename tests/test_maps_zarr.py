import healpy as hp
import numpy as np
import pyarrow as pa
import pytest
import xarray as xr
import xdggs
import zarr

from healforge.maps import map_to_dataset, open_map, read_map, write_parquet, write_zarr
from healforge.maps.table import MapError, make_map_table
from healforge.pixel.latitude import authalic_to_geodetic, geodetic_to_authalic
from maps_util import point_map, pyramid, random_points, xdggs_centres


def test_pyramid_decodes_with_xdggs_and_round_trips(tmp_path):
    maps = pyramid((2, 5, 7))
    path = tmp_path / "m.zarr"
    product = write_zarr(maps, path, chunk_cells=1000, metadata={"inputs": ["synthetic"]})
    assert product["orders"] == [2, 5, 7]
    assert product["inputs"] == ["synthetic"]
    root = zarr.open_group(str(path), mode="r")
    assert sorted(root.group_keys()) == ["order_02", "order_05", "order_07"]
    for order, table in maps.items():
        ds = xr.open_zarr(str(path), group=f"order_{order:02d}")
        assert ds.cell_ids.attrs == {"grid_name": "healpix", "level": order, "indexing_scheme": "nested"}
        assert ds.attrs["dggs"]["refinement_level"] == order
        assert ds.attrs["zarr_conventions"][0]["uuid"] == "7b255807-140c-42ca-97f6-7a1cfecdbc38"
        assert "cell_ids" in ds.coords and ds.cell_ids.dims == ("cells",)
        # values round-trip exactly, dtypes kept
        for name in table.schema.names:
            got = ds[name].values
            want = table.column(name).to_numpy()
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)
        # centres from xdggs equal healpy's centres of the same cells
        lon, lat = xdggs_centres(ds)
        hlon, hlat = hp.pix2ang(2**order, ds.cell_ids.values, nest=True, lonlat=True)
        np.testing.assert_allclose(np.mod(lon, 360), hlon, atol=1e-9)
        np.testing.assert_allclose(lat, hlat, atol=1e-9)
        # the zarr dggs convention (group attrs) decodes too
        z = xdggs.decode(ds, convention="zarr", name="cell_ids")
        assert z.dggs.grid_info.level == order
        # chunks are compressed with zstd
        codecs = [type(c).__name__ for c in root[f"order_{order:02d}"]["value_mean"].metadata.codecs]
        assert "ZstdCodec" in codecs


def test_open_map_defaults_to_finest_and_decodes(tmp_path):
    maps = pyramid((3, 6))
    write_zarr(maps, tmp_path / "m.zarr")
    ds = open_map(tmp_path / "m.zarr", decode=True)
    assert ds.dggs.grid_info.level == 6
    assert open_map(tmp_path / "m.zarr", order=3).sizes["cells"] == maps[3].num_rows
    with pytest.raises(MapError, match="order 4 is not in"):
        open_map(tmp_path / "m.zarr", order=4)


def test_chunked_write_of_an_iterator_equals_whole_write(tmp_path):
    lon, lat, value = random_points(200_000, seed=3)
    table = point_map(lon, lat, value, 8)
    chunks = (table.slice(i, 7777) for i in range(0, table.num_rows, 7777))
    write_zarr(chunks, tmp_path / "c.zarr", chunk_cells=5000)
    write_zarr(table, tmp_path / "w.zarr")
    write_parquet((table.slice(i, 7777) for i in range(0, table.num_rows, 7777)), tmp_path / "c.parquet")
    assert read_map(tmp_path / "c.parquet").equals(table)
    a = read_map(tmp_path / "c.zarr")
    b = read_map(tmp_path / "w.zarr")
    assert a.equals(b) and a.equals(table)
    root = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert root["order_08"]["cell_ids"].chunks == (5000,)


def test_unsorted_chunks_are_refused(tmp_path):
    lon, lat, value = random_points(5000)
    table = point_map(lon, lat, value, 4)
    with pytest.raises(MapError, match="increase strictly"):
        write_zarr([table.slice(100), table.slice(0, 100)], tmp_path / "bad.zarr")
    assert not list(tmp_path.glob("bad.zarr*"))  # the partial store was removed
    with pytest.raises(MapError, match="increase strictly"):
        write_parquet([table.slice(100), table.slice(0, 100)], tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists() and not list(tmp_path.glob("bad.parquet.tmp*"))


def test_append_mode_adds_orders(tmp_path):
    maps = pyramid((2, 4))
    write_zarr(maps[4], tmp_path / "m.zarr")
    write_zarr(maps[2], tmp_path / "m.zarr", mode="a")
    ds2 = open_map(tmp_path / "m.zarr", order=2)
    np.testing.assert_array_equal(ds2.value_mean.values, maps[2].column("value_mean").to_numpy())
    assert xr.open_zarr(str(tmp_path / "m.zarr")).attrs["healforge"]["orders"] == [2, 4]
    other = pyramid((3,), latitude="authalic")[3]
    with pytest.raises(MapError, match="latitude 'authalic' but the store holds 'spherical'"):
        write_zarr(other, tmp_path / "m.zarr", mode="a")


def test_authalic_map_has_ellipsoid_and_geodetic_centres(tmp_path):
    cells = np.arange(0, 12 * 4**4, 7, dtype=np.int64)
    table = make_map_table(cells, {"x_mean": np.arange(cells.size, dtype=float)}, 4, latitude="authalic")
    write_zarr(table, tmp_path / "a.zarr")
    ds = xr.open_zarr(str(tmp_path / "a.zarr"), group="order_04")
    wgs84 = {"name": "WGS84", "inverse_flattening": 298.257223563}
    # the coordinate with xdggs' own names, the dggs block spelled as the Zarr DGGS convention
    assert ds.cell_ids.attrs["ellipsoid"] == {**wgs84, "semimajor_axis": 6378137.0}
    assert ds.attrs["dggs"]["ellipsoid"] == {**wgs84, "semi_major_axis": 6378137.0}
    assert set(ds.cell_ids.attrs) == {"grid_name", "level", "indexing_scheme", "ellipsoid"}
    decoded = xdggs.decode(ds)
    assert decoded.dggs.grid_info.ellipsoid.semimajor_axis == 6378137.0
    # what later xdggs releases do with the convention's block: rename the spelled-out keys to
    # their own, then decode it as the grid
    block = dict(ds.attrs["dggs"])
    block["ellipsoid"] = {
        {"semi_major_axis": "semimajor_axis"}.get(k, k): v for k, v in block["ellipsoid"].items()
    }
    z = xdggs.decode(ds, convention="zarr", grid_info=block, name="cell_ids")
    assert z.dggs.grid_info.ellipsoid.inverse_flattening == 298.257223563
    assert z.dggs.grid_info.level == 4
    lon, lat = xdggs_centres(ds)
    hlon, hlat = hp.pix2ang(16, cells, nest=True, lonlat=True)  # authalic sphere centres
    np.testing.assert_allclose(np.mod(lon, 360), hlon, atol=1e-9)
    np.testing.assert_allclose(lat, authalic_to_geodetic(hlat), atol=1e-9)


def test_authalic_conversion_inverts():
    lat = np.linspace(-90, 90, 2001)
    beta = geodetic_to_authalic(lat)
    assert np.max(np.abs(beta - lat)) > 0.1  # really converts (max difference ~0.128 deg)
    np.testing.assert_allclose(authalic_to_geodetic(beta), lat, atol=1e-10)


def test_parquet_map_round_trip(tmp_path):
    maps = pyramid((2, 5))
    write_parquet(maps, tmp_path / "p.parquet")
    write_parquet(maps[5], tmp_path / "one.parquet")
    for k in (2, 5):
        assert read_map(tmp_path / "p.parquet", k).equals(maps[k])
        assert read_map(tmp_path / "p.parquet", k).schema.metadata == maps[k].schema.metadata
    assert read_map(tmp_path / "one.parquet").equals(maps[5])
    got = read_map(tmp_path / "one.parquet", variables=["value_mean"])
    assert got.schema.names == ["cell_ids", "value_mean"]


def test_bad_map_tables_are_refused(tmp_path):
    good = pyramid((3,))[3]
    bad = good.set_column(0, "cell_ids", pa.array(good.column("cell_ids").to_numpy()[::-1]))
    with pytest.raises(MapError, match="strictly increasing"):
        write_zarr(bad, tmp_path / "x.zarr")
    with pytest.raises(MapError, match="no 'healforge'"):
        write_zarr(good.replace_schema_metadata(None), tmp_path / "x.zarr")


def test_chunked_write_memory_is_bounded(tmp_path):
    """A map fed as an iterator is written chunk by chunk: peak memory ~ a few chunks, not the map."""
    import tracemalloc

    order, step, total = 10, 50_000, 3_000_000

    def chunks():
        rng = np.random.default_rng(0)
        for start in range(0, total, step):
            cells = np.arange(start, start + step, dtype=np.int64) * 3
            yield make_map_table(
                cells, {"x_mean": rng.normal(size=step), "x_count": np.ones(step, np.int64)}, order
            )

    tracemalloc.start()
    write_zarr(chunks(), tmp_path / "big.zarr", chunk_cells=1 << 16)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full = total * 3 * 8  # bytes of the whole map's three columns
    assert peak < full / 4, (peak, full)
    ds = open_map(tmp_path / "big.zarr")
    assert ds.sizes["cells"] == total
    np.testing.assert_array_equal(ds.cell_ids.values[-3:], np.arange(total - 3, total) * 3)


def test_in_memory_dataset_matches_store(tmp_path):
    table = pyramid((4,))[4]
    write_zarr(table, tmp_path / "m.zarr")
    mem = map_to_dataset(table)
    disk = open_map(tmp_path / "m.zarr").load()
    assert mem.cell_ids.attrs == disk.cell_ids.attrs
    assert mem.attrs["dggs"] == disk.attrs["dggs"]
    for name in ("value_count", "value_mean", "value_min"):
        np.testing.assert_array_equal(mem[name].values, disk[name].values)
    assert xdggs.decode(mem).dggs.grid_info.level == 4


def test_empty_map_and_file_url(tmp_path):
    empty = make_map_table(np.empty(0, np.int64), {"x_mean": np.empty(0)}, 5)
    write_zarr(empty, f"file://{tmp_path / 'e.zarr'}")
    ds = open_map(tmp_path / "e.zarr")
    assert ds.sizes["cells"] == 0 and ds.cell_ids.attrs["level"] == 5
    assert read_map(tmp_path / "e.zarr").equals(empty)

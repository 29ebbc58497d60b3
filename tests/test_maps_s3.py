"""Map products and inputs on S3, against a local moto server bound to 127.0.0.1."""

import numpy as np
import pyarrow as pa
import xarray as xr
import xdggs

from conftest import BUCKET
from healforge.io.hdf5 import iter_hdf5_template
from healforge.maps import open_map, read_map, write_parquet, write_zarr
from healforge.maps.geoparquet import write_geoparquet
from maps_util import pyramid


def test_zarr_and_parquet_round_trip_on_s3(tmp_path, s3_options):
    maps = pyramid((2, 5))
    write_zarr(maps, tmp_path / "m.zarr")
    write_parquet(maps, tmp_path / "m.parquet")
    url = f"s3://{BUCKET}/maps/m.zarr"
    write_zarr(maps, url, storage_options=s3_options, chunk_cells=4096)
    write_parquet(maps, f"s3://{BUCKET}/maps/m.parquet", storage_options=s3_options)
    write_parquet(maps[5], f"s3://{BUCKET}/maps/one.parquet", storage_options=s3_options)
    write_geoparquet(maps[2], f"s3://{BUCKET}/maps/m.geoparquet", storage_options=s3_options)
    for k in (2, 5):
        remote = read_map(url, k, storage_options=s3_options)
        assert remote.equals(read_map(tmp_path / "m.zarr", k))
        assert (
            remote.equals(maps[k])
            and remote.schema.metadata == read_map(tmp_path / "m.zarr", k).schema.metadata
        )
        rp = read_map(f"s3://{BUCKET}/maps/m.parquet", k, storage_options=s3_options)
        assert rp.equals(read_map(tmp_path / "m.parquet", k))
        ds = open_map(url, k, storage_options=s3_options)
        local = open_map(tmp_path / "m.zarr", k)
        xr.testing.assert_identical(ds.load().drop_attrs(), local.load().drop_attrs())
        assert xdggs.decode(ds).dggs.grid_info.level == k
    assert read_map(f"s3://{BUCKET}/maps/one.parquet", storage_options=s3_options).equals(maps[5])
    # also plain xarray.open_zarr on the URL
    ds = xr.open_zarr(url, group="order_05", storage_options=s3_options)
    np.testing.assert_array_equal(ds.value_count.values, maps[5].column("value_count").to_numpy())


def test_hdf5_input_from_s3(tmp_path, s3_options):
    import s3fs

    from test_maps_config import TEMPLATES, make_atl06

    make_atl06(tmp_path / "g.h5")
    fs = s3fs.S3FileSystem(**s3_options)
    fs.put(str(tmp_path / "g.h5"), f"{BUCKET}/granules/g.h5")
    local = pa.concat_tables(t for _, t in iter_hdf5_template(str(tmp_path / "g.h5"), TEMPLATES, "gt*"))
    remote = pa.concat_tables(
        t
        for _, t in iter_hdf5_template(
            f"s3://{BUCKET}/granules/g.h5", TEMPLATES, "gt*", storage_options=s3_options
        )
    )
    assert remote.schema == local.schema and remote.num_rows == 2000
    for name in local.schema.names:  # NaN fill values compare equal here
        np.testing.assert_array_equal(remote.column(name).to_numpy(), local.column(name).to_numpy())

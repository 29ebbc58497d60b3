"""Map products: Zarr v3 DGGS pyramids, Parquet and GeoParquet maps, plots.

See :mod:`healforge.maps.table` for the map table that every writer takes.
"""

from healforge.maps.parquet import read_map, read_parquet_map, read_pyramid, write_parquet
from healforge.maps.table import make_map_table, map_metadata, validate_map_table
from healforge.maps.zarr_store import map_orders, map_to_dataset, open_map, read_map_table, write_zarr

__all__ = [
    "make_map_table",
    "map_metadata",
    "map_orders",
    "map_to_dataset",
    "open_map",
    "read_map",
    "read_map_table",
    "read_parquet_map",
    "read_pyramid",
    "validate_map_table",
    "write_parquet",
    "write_zarr",
]

"""Cell polygons for GIS: GeoDataFrames and GeoParquet files of a map.

Polygons are built vectorised from the cells' boundary vertices (cdshealpix) with longitudes in
[-180, 180]: vertices are unwrapped around the cell centre, a vertex on a pole becomes an edge
along the pole's latitude (so polar cells are proper lon/lat polygons), and cells that cross the
antimeridian are split into a MultiPolygon of their western and eastern parts. For maps with
authalic latitude the vertex latitudes are converted back to geodetic (WGS84) latitude.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import shapely
from fsspec.implementations.local import LocalFileSystem

from healforge.io.storage import remove_dead_siblings
from healforge.maps.table import CELL_IDS, map_metadata
from healforge.pixel import pixel_centers, pixel_vertices
from healforge.pixel.latitude import authalic_to_geodetic

CRS = "OGC:CRS84"
_EPS = 1e-9


def cell_polygons(cells: np.ndarray, order: int, *, step: int = 1, latitude: str = "spherical") -> np.ndarray:
    """Shapely (Multi)Polygons, lon/lat degrees in [-180, 180], of nested cells at ``order``.

    Parameters
    ----------
    cells
        Nested cell indices.
    order
        Their order.
    step
        Boundary points per cell edge (1: the 4 corners; more follows curved edges better).
    latitude
        ``authalic`` converts vertex latitudes to geodetic WGS84.
    """
    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        return np.empty(0, dtype=object)
    lon, lat = pixel_vertices(cells, order, step=step)  # (n, m), lon in [0, 360)
    clon, _ = pixel_centers(cells, order)
    clon = np.where(clon > 180.0, clon - 360.0, clon)
    lon = clon[:, None] + (np.mod(lon - clon[:, None] + 180.0, 360.0) - 180.0)

    if latitude == "authalic":
        lat = authalic_to_geodetic(lat)
    west = lon.min(axis=1) < -180.0 - _EPS
    east = lon.max(axis=1) > 180.0 + _EPS
    cross = west | east
    # Vertices exactly on the antimeridian may come out as +-180 +- tiny: snap into range.
    lon = np.where(cross[:, None], lon, np.clip(lon, -180.0, 180.0))
    lat = np.clip(lat, -90.0, 90.0)
    ring = np.stack([lon, lat], axis=2)
    polys = shapely.polygons(np.concatenate([ring, ring[:, :1]], axis=1))

    # A vertex on a pole has no longitude of its own: replace it by two vertices on the pole's
    # latitude at the longitudes of its two neighbours, so the edge runs along lat = +-90.
    # Only the 4 cells touching each pole have such a vertex.
    pole = np.abs(lat) >= 90.0 - _EPS
    for i in np.flatnonzero(pole.any(axis=1)):
        j = int(np.flatnonzero(pole[i])[0])
        lo, la = np.roll(lon[i], -j), np.roll(lat[i], -j)  # pole vertex first
        pts = [(lo[-1], la[0]), (lo[1], la[0]), *zip(lo[1:], la[1:], strict=True)]
        polys[i] = shapely.Polygon(pts)

    cross = np.flatnonzero(cross)
    if cross.size:
        # Shift crossing cells so they straddle +180, then cut at 180 and move the eastern part.
        sub = polys[cross]
        shift = np.where(west[cross], 360.0, 0.0)
        sub = np.array(
            [shapely.transform(p, lambda xy, s=s: xy + [s, 0.0]) for p, s in zip(sub, shift, strict=True)]
        )
        west_part = shapely.clip_by_rect(sub, -180.0, -90.0, 180.0, 90.0)
        east_part = shapely.clip_by_rect(sub, 180.0, -90.0, 540.0, 90.0)
        east_part = shapely.transform(east_part, lambda xy: xy - [360.0, 0.0])
        out = []
        for w, e in zip(west_part, east_part, strict=True):
            parts = [g for g in (*shapely.get_parts(w), *shapely.get_parts(e)) if g.area > 0]
            out.append(shapely.MultiPolygon(parts) if len(parts) > 1 else parts[0])
        polys[cross] = out
    return polys


def to_geodataframe(table: pa.Table, *, step: int = 1):
    """A :class:`geopandas.GeoDataFrame` of a map table with a ``geometry`` column of cell polygons."""
    import geopandas as gpd

    meta = map_metadata(table)
    cells = table.column(CELL_IDS).to_numpy()
    geoms = cell_polygons(cells, int(meta["order"]), step=step, latitude=meta.get("latitude", "spherical"))
    df = table.replace_schema_metadata(None).to_pandas()
    gdf = gpd.GeoDataFrame(df, geometry=geoms, crs=CRS)
    gdf.attrs["healforge"] = meta
    return gdf


def _crs_projjson() -> dict[str, Any] | None:
    try:
        from pyproj import CRS as _CRS
    except ImportError:  # GeoParquet: an absent "crs" means OGC:CRS84
        return None
    return _CRS.from_string(CRS).to_json_dict()


def _geo_metadata(types: list[str], bbox: list[float] | None) -> bytes:
    column: dict[str, Any] = {"encoding": "WKB", "geometry_types": types}
    if bbox:
        column["bbox"] = bbox
    crs = _crs_projjson()
    if crs is not None:
        column["crs"] = crs
    return json.dumps(
        {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    ).encode()


def _with_geometry(table: pa.Table, step: int) -> tuple[pa.Table, np.ndarray]:
    meta = map_metadata(table)
    cells = table.column(CELL_IDS).to_numpy()
    geoms = cell_polygons(cells, int(meta["order"]), step=step, latitude=meta.get("latitude", "spherical"))
    return table.append_column("geometry", pa.array(shapely.to_wkb(geoms), type=pa.binary())), geoms


def geoparquet_table(table: pa.Table, *, step: int = 1) -> pa.Table:
    """The map table plus a WKB ``geometry`` column and GeoParquet 1.1 ``geo`` metadata."""
    out, geoms = _with_geometry(table, step)
    types = sorted({"Polygon" if t == 3 else "MultiPolygon" for t in np.unique(shapely.get_type_id(geoms))})
    bbox = [float(b) for b in shapely.total_bounds(geoms)] if geoms.size else None
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[b"geo"] = _geo_metadata(types, bbox)
    return out.replace_schema_metadata(schema_meta)


def write_geoparquet(
    table: pa.Table,
    path: str | os.PathLike,
    *,
    step: int = 1,
    batch_cells: int = 500_000,
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write a map table with cell polygons as GeoParquet (CRS OGC:CRS84); returns ``path``.

    The ``healforge`` map metadata stays in the schema, so the file also reads back as a map.
    Maps above ``batch_cells`` cells are converted and written in batches (bounded memory); their
    ``geo`` metadata then lists both geometry types and no bbox.
    """
    import fsspec
    import pyarrow.parquet as pq

    fs, fs_path = fsspec.core.url_to_fs(str(path), **(storage_options or {}))
    tmp = f"{fs_path}.tmp-{os.getpid()}"
    if isinstance(fs, LocalFileSystem):
        remove_dead_siblings(Path(fs_path))  # what a killed write of this file left
    with fs.open(tmp, "wb") as f:
        if table.num_rows <= batch_cells:
            pq.write_table(geoparquet_table(table, step=step), f, compression="zstd")
        else:
            schema_meta = dict(table.schema.metadata or {})
            schema_meta[b"geo"] = _geo_metadata(["MultiPolygon", "Polygon"], None)
            schema = table.schema.append(pa.field("geometry", pa.binary())).with_metadata(schema_meta)
            with pq.ParquetWriter(f, schema, compression="zstd") as writer:
                for start in range(0, table.num_rows, batch_cells):
                    part, _ = _with_geometry(table.slice(start, batch_cells), step)
                    writer.write_table(part.replace_schema_metadata(schema_meta))
    fs.mv(tmp, fs_path)
    return str(path)

"""HATS on-disk layout: paths, data-file writing, and the catalog-level metadata files.

Data files are ours (written with pyarrow, sorted by ``_healpix_29``, ``sorting_columns`` set, no
pandas metadata); ``partition_info.csv``, ``_metadata``/``_common_metadata``, the properties and
the skymaps are written with hats' own classes so that they match what hats reads exactly.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge import __version__
from healforge.healpix import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER

DATASET_DIR = "dataset"


def pixel_dir(root: str | Path, order: int, pixel: int) -> Path:
    """``root/dataset/Norder=K/Dir=D``."""
    return Path(root) / DATASET_DIR / f"Norder={order}" / f"Dir={(pixel // 10_000) * 10_000}"


def pixel_file(root: str | Path, order: int, pixel: int, npix_suffix: str = ".parquet") -> Path:
    """Data file (``npix_suffix=".parquet"``) or directory (``npix_suffix="/"``) of a pixel."""
    base = pixel_dir(root, order, pixel) / f"Npix={pixel}"
    return base if npix_suffix == "/" else base.with_name(f"Npix={pixel}{npix_suffix}")


def _leaves(dtype: pa.DataType, path: str):
    if pa.types.is_struct(dtype):
        for f in dtype:
            yield from _leaves(f.type, f"{path}.{f.name}")
    elif pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
        yield from _leaves(dtype.value_type, f"{path}.list.element")
    else:
        yield path, dtype


def write_table_kwargs(schema: pa.Schema, sort_columns: Sequence[str], compression: str | None) -> dict:
    """Parquet writer options: the encodings hats uses (byte-stream-split floats, delta-packed
    spatial index and leading integer sort key, dictionary for the rest), page index and
    statistics, our compression, and the ``sorting_columns`` metadata."""
    leaves = [leaf for f in schema for leaf in _leaves(f.type, f.name)]
    encoding = {path: "BYTE_STREAM_SPLIT" for path, t in leaves if pa.types.is_floating(t)}
    for col in sort_columns[:1]:
        if col in schema.names and pa.types.is_integer(schema.field(col).type):
            encoding[col] = "DELTA_BINARY_PACKED"
    if SPATIAL_INDEX_COLUMN in schema.names:
        encoding[SPATIAL_INDEX_COLUMN] = "DELTA_BINARY_PACKED"
    codec, _, level = (compression or "zstd:3").partition(":")
    kwargs = {
        "compression": codec,
        "compression_level": int(level) if level else None,
        "column_encoding": encoding,
        "use_dictionary": [path for path, _ in leaves if path not in encoding],
        "data_page_size": 128 * 1024,
        "dictionary_pagesize_limit": 128 * 1024,
        "write_statistics": True,
        "write_page_index": True,
    }
    ordering = [(c, "ascending") for c in sort_columns]
    if ordering:
        kwargs["sorting_columns"] = pq.SortingColumn.from_ordering(schema, ordering)
    return kwargs


def atomic_write_parquet(
    table: pa.Table,
    path: str | Path,
    sort_columns: Sequence[str] = (SPATIAL_INDEX_COLUMN,),
    compression: str | None = None,
    row_group_rows: int = 500_000,
) -> int:
    """Write ``table`` to ``path`` via a temporary file and a rename; returns bytes written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    table = table.replace_schema_metadata(None)
    kwargs = write_table_kwargs(table.schema, sort_columns, compression)
    try:
        with pq.ParquetWriter(tmp, table.schema, **kwargs) as writer:
            writer.write_table(table, row_group_size=row_group_rows)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path.stat().st_size


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a small text file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def list_data_files(root: str | Path) -> list[Path]:
    """Every data file of a catalog (single-file and directory pixels alike), sorted."""
    base = Path(root) / DATASET_DIR
    return sorted(p for p in base.glob("Norder=*/Dir=*/Npix=*") if p.is_file()) + sorted(
        p for p in base.glob("Norder=*/Dir=*/Npix=*/*.parquet") if p.is_file()
    )


def has_multi_file_pixels(root: str | Path) -> bool:
    """Whether any pixel directory of the catalog holds more than one data file."""
    base = Path(root) / DATASET_DIR
    return any(len(list(d.glob("*.parquet"))) > 1 for d in base.glob("Norder=*/Dir=*/Npix=*") if d.is_dir())


def pixel_of_path(path: str | Path) -> tuple[int, int]:
    """``(order, pixel)`` parsed from a data file path."""
    parts = Path(path).parts
    order = next(int(p.split("=")[1]) for p in parts if p.startswith("Norder="))
    npix = next(p for p in parts if p.startswith("Npix="))
    return order, int(npix.split("=")[1].split(".")[0])


def write_partition_info(root: str | Path, pixels: Sequence[tuple[int, int]]) -> None:
    """``partition_info.csv`` with hats' writer (header ``Norder,Npix``, hats' pixel order)."""
    from hats.catalog import PartitionInfo
    from hats.pixel_math import HealpixPixel

    info = PartitionInfo.from_healpix([HealpixPixel(int(o), int(p)) for o, p in pixels])
    tmp = Path(root) / f".partition_info.{uuid.uuid4().hex}.csv"
    info.write_to_file(partition_info_file=tmp)
    os.replace(tmp, Path(root) / "partition_info.csv")


def sky_fraction(pixels: Sequence[tuple[int, int]]) -> float:
    """Fraction of the sky the partitions cover (hats' ``moc_sky_fraction``)."""
    return float(sum(1.0 / (12 * 4 ** int(order)) for order, _ in pixels))


def read_partition_info(root: str | Path) -> list[tuple[int, int]]:
    """Pixels listed in ``partition_info.csv``."""
    import pandas as pd

    df = pd.read_csv(Path(root) / "partition_info.csv")
    return [(int(o), int(p)) for o, p in zip(df["Norder"], df["Npix"], strict=True)]


def write_dataset_metadata(root: str | Path) -> int:
    """``dataset/_metadata`` and ``dataset/_common_metadata`` (hats' writer); returns total rows."""
    from hats.io.parquet_metadata import write_parquet_metadata

    return int(write_parquet_metadata(str(root)))


def write_metadata_unordered(root: str | Path) -> int:
    """``_metadata``/``_common_metadata`` of a dataset that is not HEALPix-partitioned (an index),
    files kept in name order; returns total rows."""
    from hats.io.parquet_metadata import write_parquet_metadata

    return int(write_parquet_metadata(str(root), order_by_healpix=False))


def write_skymaps(root: str | Path, histogram: np.ndarray) -> None:
    """``point_map.fits`` and ``skymap.fits`` from the row-count histogram at the mapping order."""
    from hats.io import paths
    from hats.io.file_io import write_fits_image
    from hats.io.skymap import write_skymap

    histogram = np.asarray(histogram, dtype=np.int64)
    write_fits_image(histogram, paths.get_point_map_file_pointer(str(root)))
    write_skymap(histogram=histogram, catalog_dir=str(root))
    # A sparse copy that appends read back quickly (reading the FITS map takes seconds at order 10).
    nz = np.flatnonzero(histogram)
    cache = Path(root) / ".healforge" / "histogram.npz"
    cache.parent.mkdir(exist_ok=True)
    tmp = cache.with_name(f".histogram.{uuid.uuid4().hex}.npz")
    np.savez(tmp, npix=len(histogram), pixels=nz, counts=histogram[nz])
    os.replace(tmp, cache)


def read_histogram(root: str | Path) -> np.ndarray:
    """The catalog's row-count map at its skymap order (``point_map.fits``, or our sparse copy)."""
    cache = Path(root) / ".healforge" / "histogram.npz"
    point_map = Path(root) / "point_map.fits"
    if cache.exists() and (not point_map.exists() or cache.stat().st_mtime >= point_map.stat().st_mtime):
        with np.load(cache) as z:
            out = np.zeros(int(z["npix"]), dtype=np.int64)
            out[z["pixels"]] = z["counts"]
            return out
    from hats.io.file_io import read_fits_image

    return np.asarray(read_fits_image(str(point_map)), dtype=np.int64)


def dir_size(root: str | Path) -> int:
    """Bytes of all files below ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def write_properties(root: str | Path, **fields) -> None:
    """Write ``hats.properties`` (and an identical ``properties``) with hats' TableProperties.

    ``fields`` use the hats property names (``obs_collection``, ``dataproduct_type``, ...).
    ``hats_builder``, ``hats_creation_date``, ``hats_version`` and ``hats_estsize`` are filled in.
    """
    from hats.catalog.dataset.table_properties import TableProperties

    root = Path(root)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M%Z")
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.setdefault("hats_builder", f"healforge v{__version__}")
    fields.setdefault("hats_creation_date", now)
    fields.setdefault("hats_version", "v1.0")
    if fields.get("dataproduct_type") in ("object", "source", "margin"):
        fields.setdefault("hats_col_healpix", SPATIAL_INDEX_COLUMN)
        fields.setdefault("hats_col_healpix_order", SPATIAL_INDEX_ORDER)
    fields["hats_estsize"] = int(np.ceil(dir_size(root / DATASET_DIR) / 1024))
    TableProperties(**fields).to_properties_file(str(root))


def read_properties(root: str | Path) -> dict[str, str]:
    """Raw ``hats.properties`` as a dict of strings."""
    out = {}
    for line in (Path(root) / "hats.properties").read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out

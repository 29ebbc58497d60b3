"""HATS on-disk layout: paths, data-file writing, and the catalog-level metadata files.

Data files are ours (written with pyarrow, sorted by ``_healpix_29``, ``sorting_columns`` set, no
pandas metadata); ``partition_info.csv``, ``_metadata``/``_common_metadata``, the properties and
the skymaps are written by :mod:`healforge.hats.files` in the form hats' own writers give, without
importing hats.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from healforge import __version__
from healforge.hats import files
from healforge.hats.keys import Key
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path
from healforge.pixel import SPATIAL_INDEX_COLUMN, SPATIAL_INDEX_ORDER

DATASET_DIR = "dataset"
PROPERTIES_FILE = "hats.properties"
LEGACY_PROPERTIES_FILE = "properties"  # the same content, for older readers
PARTITION_INFO_FILE = "partition_info.csv"
METADATA_FILE = "_metadata"
COMMON_METADATA_FILE = "_common_metadata"
SKYMAP_FILE = "skymap.fits"
POINT_MAP_FILE = "point_map.fits"


def properties_file(root: str | AnyPath) -> AnyPath:
    """``root/hats.properties``."""
    return as_path(root) / PROPERTIES_FILE


def metadata_file(root: str | AnyPath) -> AnyPath:
    """``root/dataset/_metadata``."""
    return as_path(root) / DATASET_DIR / METADATA_FILE


def common_metadata_file(root: str | AnyPath) -> AnyPath:
    """``root/dataset/_common_metadata``."""
    return as_path(root) / DATASET_DIR / COMMON_METADATA_FILE


def pixel_dir(root: str | AnyPath, order: int, pixel: int) -> AnyPath:
    """``root/dataset/Norder=K/Dir=D`` (a relative path when ``root`` is ``Path()``)."""
    root = root if isinstance(root, Path) and not root.is_absolute() else as_path(root)
    return root / DATASET_DIR / f"Norder={order}" / f"Dir={(pixel // 10_000) * 10_000}"


def pixel_file(root: str | AnyPath, order: int, pixel: int, npix_suffix: str = ".parquet") -> AnyPath:
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
    path: str | AnyPath,
    sort_columns: Sequence[str] = (SPATIAL_INDEX_COLUMN,),
    compression: str | None = None,
    row_group_rows: int = 500_000,
    row_group_starts: Sequence[int] | None = None,
) -> int:
    """Write ``table`` to ``path`` (local or URL) atomically; returns bytes written.

    ``row_group_starts``: first row of each row group (instead of ``row_group_rows`` per group).
    """
    table = table.replace_schema_metadata(None)
    kwargs = write_table_kwargs(table.schema, sort_columns, compression)
    with storage.atomic_output(path) as tmp:
        with pq.ParquetWriter(tmp, table.schema, **kwargs) as writer:
            if row_group_starts is None:
                writer.write_table(table, row_group_size=row_group_rows)
            else:
                bounds = [*row_group_starts, table.num_rows]
                for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
                    writer.write_table(table.slice(start, stop - start), row_group_size=stop - start)
        size = Path(tmp).stat().st_size
    return size


def atomic_write_text(path: str | AnyPath, text: str) -> None:
    """Write a small text file atomically (local or URL)."""
    storage.atomic_write_text(as_path(path), text)


_DATA_FILE = re.compile(r"^Norder=\d+/Dir=\d+/Npix=\d+(\.[^/]*|/[^/]+\.parquet)$")


def list_data_files(root: str | AnyPath) -> list[AnyPath]:
    """Every data file of a catalog (single-file and directory pixels alike), sorted."""
    base = as_path(root) / DATASET_DIR
    found = [p for p, _ in storage.list_files(base)]
    rel = [(p, "/".join(p.parts[len(base.parts) :])) for p in found]
    singles = sorted((p for p, r in rel if _DATA_FILE.match(r) and r.count("/") == 2), key=str)
    nested = sorted((p for p, r in rel if _DATA_FILE.match(r) and r.count("/") == 3), key=str)
    return singles + nested


def is_data_file(rel: str) -> bool:
    """Whether ``rel`` (relative to the dataset directory) names a pixel's data file."""
    return bool(_DATA_FILE.match(rel)) and rel.count("/") in (2, 3)


def has_multi_file_pixels(root: str | AnyPath) -> bool:
    """Whether any pixel directory of the catalog holds more than one data file."""
    per_pixel: dict[tuple, int] = {}
    for f in list_data_files(root):
        if f.parent.name.startswith("Npix="):
            per_pixel[f.parent.parts] = per_pixel.get(f.parent.parts, 0) + 1
    return any(n > 1 for n in per_pixel.values())


def pixel_of_path(path: str | AnyPath) -> tuple[int, int]:
    """``(order, pixel)`` parsed from a data file path."""
    parts = PurePosixPath(str(path)).parts
    order = next(int(p.split("=")[1]) for p in parts if p.startswith("Norder="))
    npix = next(p for p in parts if p.startswith("Npix="))
    return order, int(npix.split("=")[1].split(".")[0])


def write_partition_info(root: str | AnyPath, pixels: Sequence[tuple[int, int]]) -> None:
    """``partition_info.csv`` as hats writes it (header ``Norder,Npix``, hats' pixel order)."""
    storage.atomic_write_text(as_path(root) / PARTITION_INFO_FILE, files.partition_info_text(pixels))


def sky_fraction(pixels: Sequence[tuple[int, int]]) -> float:
    """Fraction of the sky the partitions cover (hats' ``moc_sky_fraction``)."""
    return float(sum(1.0 / (12 * 4 ** int(order)) for order, _ in pixels))


def partition_properties(pixels: Sequence[tuple[int, int]], rows: int, empty_order: int = 0) -> dict:
    """The properties a catalog's partitioning sets: rows, deepest order (``empty_order`` when
    there are no pixels) and sky fraction."""
    return {
        Key.NROWS: int(rows),
        Key.ORDER: max((int(o) for o, _ in pixels), default=empty_order),
        "moc_sky_fraction": f"{sky_fraction(pixels):0.5f}",
    }


def read_partition_info(root: str | AnyPath) -> list[tuple[int, int]]:
    """Pixels listed in ``partition_info.csv``."""
    import pandas as pd

    with (as_path(root) / PARTITION_INFO_FILE).open("rb") as f:
        df = pd.read_csv(f)
    return [(int(o), int(p)) for o, p in zip(df["Norder"], df["Npix"], strict=True)]


def write_dataset_metadata(root: str | AnyPath) -> int:
    """``dataset/_metadata`` and ``dataset/_common_metadata`` as hats writes them (row groups in
    hats' pixel order); returns total rows."""
    data = list_data_files(root)
    return files.write_parquet_metadata(root, data, [pixel_of_path(str(f)) for f in data])


def write_metadata_unordered(root: str | AnyPath) -> int:
    """``_metadata``/``_common_metadata`` of a dataset that is not HEALPix-partitioned (an index),
    files kept in name order; returns total rows."""
    base = as_path(root) / DATASET_DIR
    data = [p for p, _ in storage.list_files(base) if not p.name.startswith(("_", ".", "data_thumbnail"))]
    return files.write_parquet_metadata(root, data)


def write_skymaps(root: str | AnyPath, histogram: np.ndarray) -> None:
    """``point_map.fits`` and ``skymap.fits`` from the row-count histogram at the mapping order."""
    root = as_path(root)
    storage.atomic_write_bytes(
        root / POINT_MAP_FILE, files.skymap_fits(np.asarray(histogram, dtype=np.int64))
    )
    storage.link_file(root / POINT_MAP_FILE, root / SKYMAP_FILE)


def read_histogram(root: str | AnyPath) -> np.ndarray:
    """The catalog's row-count map at its skymap order (``point_map.fits``)."""
    point_map = as_path(root) / POINT_MAP_FILE
    histogram = files.read_skymap_fits(point_map.read_bytes())
    if histogram is not None:
        return histogram
    from hats.io.file_io import read_fits_image  # a FITS layout of another writer

    return np.asarray(
        read_fits_image(point_map if not storage.is_local(point_map) else str(point_map)), dtype=np.int64
    )


def dir_size(root: str | AnyPath) -> int:
    """Bytes of all files below ``root`` (one listing on object stores)."""
    return sum(size for _, size in storage.list_files(as_path(root)))


def write_properties(root: str | AnyPath, **fields) -> None:
    """Write ``hats.properties`` (and an identical ``properties``) as hats' TableProperties does.

    ``fields`` use the hats property names (``obs_collection``, ``dataproduct_type``, ...).
    ``hats_builder``, ``hats_creation_date``, ``hats_version`` and ``hats_estsize`` are filled in.
    """
    root = as_path(root)
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M%Z")
    fields = {k: v for k, v in fields.items() if v is not None}
    fields.setdefault(Key.BUILDER, f"healforge v{__version__}")
    fields.setdefault(Key.CREATION_DATE, now)
    fields.setdefault(Key.VERSION, "v1.0")
    if fields.get("dataproduct_type") in ("object", "source", "margin"):
        fields.setdefault(Key.COL_HEALPIX, SPATIAL_INDEX_COLUMN)
        fields.setdefault(Key.COL_HEALPIX_ORDER, SPATIAL_INDEX_ORDER)
    fields[Key.ESTSIZE] = int(np.ceil(dir_size(root / DATASET_DIR) / 1024))
    text = files.properties_text(fields)
    storage.atomic_write_text(root / PROPERTIES_FILE, text)
    storage.atomic_write_text(root / LEGACY_PROPERTIES_FILE, text)


def require_catalog(root: str | AnyPath) -> AnyPath:
    """``root`` if it is a HATS catalog directory, else a one-line :class:`CatalogError`."""
    from healforge.errors import CatalogError

    root = as_path(root)
    if not root.exists():
        raise CatalogError(f"catalog not found: {root}")
    if root.is_file():
        raise CatalogError(f"{root} is a file, not a HATS catalog directory")
    for name in (PROPERTIES_FILE, PARTITION_INFO_FILE):
        if not (root / name).is_file():
            raise CatalogError(f"{root} is not a HATS catalog (no {name})")
    return root


def read_properties(root: str | AnyPath) -> dict[str, str]:
    """Raw ``hats.properties`` as a dict of strings."""
    return parse_properties(properties_file(root).read_text())


def parse_properties(text: str) -> dict[str, str]:
    """The ``key=value`` lines of a Java-style properties text, comments left out."""
    out = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out

"""``catalog_info``: a short description of a HATS catalog on disk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from healforge.catalog import format as fmt
from healforge.errors import CatalogError
from healforge.io import storage
from healforge.io.storage import as_path


@dataclass
class CatalogInfo:
    """Rows, partitions per order, columns and size of a catalog."""

    path: str
    name: str
    catalog_type: str
    rows: int
    pixels_by_order: dict[int, int]
    columns: list[tuple[str, str]]
    files: int
    size_bytes: int

    def __str__(self) -> str:
        lines = [
            f"catalog   {self.name} ({self.catalog_type}) at {self.path}",
            f"rows      {self.rows:,}",
            f"pixels    {sum(self.pixels_by_order.values())} in {self.files} data files: "
            + ", ".join(f"order {o}: {n}" for o, n in sorted(self.pixels_by_order.items())),
            f"size      {self.size_bytes / 2**20:.1f} MiB",
            "columns",
        ]
        lines += [f"  {name:<24} {dtype}" for name, dtype in self.columns]
        return "\n".join(lines)


def catalog_info(path: str | Path, storage_options: dict | None = None) -> CatalogInfo:
    """Describe the catalog at ``path`` (local or URL, with fsspec ``storage_options``) from its
    metadata files (data files are not read)."""
    root = fmt.require_catalog(as_path(path, storage_options))
    props = fmt.read_properties(root)
    pixels = fmt.read_partition_info(root)
    common = root / fmt.DATASET_DIR / "_common_metadata"
    if not common.is_file():
        raise CatalogError(f"{root} is not a complete HATS catalog (no {fmt.DATASET_DIR}/_common_metadata)")
    schema = storage.read_parquet_schema(common)
    files = fmt.list_data_files(root)
    rows = (
        int(props["hats_nrows"])
        if "hats_nrows" in props
        else sum(storage.read_parquet_metadata(f).num_rows for f in files)
    )
    return CatalogInfo(
        path=str(root),
        name=props.get("obs_collection", root.name),
        catalog_type=props.get("dataproduct_type", "?"),
        rows=rows,
        pixels_by_order=dict(Counter(o for o, _ in pixels)),
        columns=[(f.name, str(f.type)) for f in schema],
        files=len(files),
        size_bytes=fmt.dir_size(root),
    )

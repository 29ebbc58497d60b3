"""``catalog_info``: a short description of a HATS catalog on disk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from healforge.errors import CatalogError
from healforge.hats import Key, layout
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


@dataclass
class CollectionInfo:
    """A collection: its primary catalog and members."""

    path: str
    name: str
    primary: CatalogInfo
    members: list[tuple[str, CatalogInfo | None, str]]

    def __str__(self) -> str:
        lines = [f"collection {self.name} at {self.path}", "", str(self.primary), "", "members"]
        for label, info, note in self.members:
            if info is None:
                lines.append(f"  {label:<32} MISSING ({note})")
            else:
                lines.append(f"  {label:<32} {info.catalog_type:<7} {info.rows:>12,} rows  {note}")
        return "\n".join(lines)


def collection_info(path: str | Path, storage_options: dict | None = None) -> CollectionInfo:
    """Describe a collection: its primary catalog in full, then each margin and index."""
    from healforge.catalog.derived.collection import open_collection

    coll = open_collection(as_path(path, storage_options))
    members = []
    for label, member in coll.margins.items():
        default = " (default)" if label == coll.default_margin else ""
        if not layout.properties_file(member).exists():
            members.append((label, None, f"margin{default}"))
            continue
        radius = layout.read_properties(member).get(Key.MARGIN_THRESHOLD, "?")
        members.append((label, catalog_info(member), f"{radius} arcsec{default}"))
    for column, member in coll.indexes.items():
        default = " (default)" if column == coll.default_index else ""
        if not layout.properties_file(member).exists():
            members.append((member.name, None, f"index on {column}{default}"))
            continue
        members.append((member.name, catalog_info(member), f"on {column}{default}"))
    return CollectionInfo(str(coll.path), coll.name, catalog_info(coll.primary), members)


def catalog_info(path: str | Path, storage_options: dict | None = None) -> CatalogInfo | CollectionInfo:
    """Describe the catalog (or collection) at ``path`` (local or URL, with fsspec
    ``storage_options``) from its metadata files (data files are not read)."""
    from healforge.catalog.derived.collection import is_collection

    root = as_path(path, storage_options)
    if is_collection(root):
        return collection_info(root)
    # an index catalog is not HEALPix-partitioned (no partition_info.csv)
    is_index = (
        layout.properties_file(root).is_file()
        and layout.read_properties(root).get("dataproduct_type") == "index"
    )
    if not is_index:
        root = layout.require_catalog(root)
    props = layout.read_properties(root)
    pixels = [] if is_index else layout.read_partition_info(root)
    common = layout.common_metadata_file(root)
    if not common.is_file():
        raise CatalogError(
            f"{root} is not a complete HATS catalog (no {layout.DATASET_DIR}/_common_metadata)"
        )
    schema = storage.read_parquet_schema(common)
    files = layout.list_data_files(root) or [
        p for p, _ in storage.list_files(root / layout.DATASET_DIR) if p.name.startswith("part.")
    ]
    rows = (
        int(props[Key.NROWS])
        if Key.NROWS in props
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
        size_bytes=layout.dir_size(root),
    )

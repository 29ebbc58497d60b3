"""``catalog_info``: a short description of a HATS catalog on disk."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from healforge.catalog import format as fmt


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


def collection_info(path: str | Path) -> CollectionInfo:
    """Describe a collection: its primary catalog in full, then each margin and index."""
    from healforge.catalog.collection import open_collection

    coll = open_collection(path)
    members = []
    for label, member in coll.margins.items():
        default = " (default)" if label == coll.default_margin else ""
        if not (member / "hats.properties").exists():
            members.append((label, None, f"margin{default}"))
            continue
        radius = fmt.read_properties(member).get("hats_margin_threshold", "?")
        members.append((label, catalog_info(member), f"{radius} arcsec{default}"))
    for column, member in coll.indexes.items():
        default = " (default)" if column == coll.default_index else ""
        if not (member / "hats.properties").exists():
            members.append((member.name, None, f"index on {column}{default}"))
            continue
        members.append((member.name, catalog_info(member), f"on {column}{default}"))
    return CollectionInfo(str(coll.path), coll.name, catalog_info(coll.primary), members)


def catalog_info(path: str | Path) -> CatalogInfo | CollectionInfo:
    """Describe the catalog (or collection) at ``path`` from its metadata files (data files are
    not read)."""
    from healforge.catalog.collection import is_collection

    if is_collection(path):
        return collection_info(path)
    root = Path(path)
    props = fmt.read_properties(root)
    pixels = fmt.read_partition_info(root) if (root / "partition_info.csv").exists() else []
    schema = pq.read_schema(root / fmt.DATASET_DIR / "_common_metadata")
    files = fmt.list_data_files(root) or sorted((root / fmt.DATASET_DIR).rglob("part.*.parquet"))
    rows = (
        int(props["hats_nrows"])
        if "hats_nrows" in props
        else sum(pq.read_metadata(f).num_rows for f in files)
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

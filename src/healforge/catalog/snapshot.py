"""A catalog as a list of partitions and their data files, possibly not yet committed.

Builders of derived catalogs (margins, indexes) read a :class:`CatalogSnapshot` rather than the
catalog directory, so that a change (append, compact) can build the members of the catalog it is
about to commit from the files it has staged, before the commit (see
:mod:`healforge.catalog.members`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from healforge.catalog import format as fmt


@dataclass
class CatalogSnapshot:
    """Partitions of a catalog and the files holding each, with its properties and schema."""

    root: Path
    props: dict
    pixels: list[tuple[int, int]]
    files: dict[tuple[int, int], list[str]]
    schema_file: Path

    @classmethod
    def of(cls, root: str | Path) -> CatalogSnapshot:
        """The catalog as it is on disk."""
        root = Path(root).absolute()
        pixels = fmt.read_partition_info(root)
        return cls(
            root=root,
            props=fmt.read_properties(root),
            pixels=pixels,
            files={pix: [str(f) for f in _current_files(root, *pix)] for pix in pixels},
            schema_file=root / fmt.DATASET_DIR / "_common_metadata",
        )

    @classmethod
    def after(cls, root: str | Path, manifest: dict, staging: Path) -> CatalogSnapshot:
        """The catalog as it will be once the change described by ``manifest`` is applied.

        ``manifest`` uses the transaction conventions: ``pixels`` (the new partition list),
        ``retire`` (pixel files or directories, relative to ``root``, that the change removes),
        ``move`` (``[staged name, destination relative to root]`` pairs) and ``properties``.
        """
        root = Path(root).absolute()
        retired = {root / rel for rel in manifest.get("retire", [])}
        staged: dict[tuple[int, int], list[str]] = {}
        for name, rel in manifest.get("move", []):
            staged.setdefault(fmt.pixel_of_path(rel), []).append(str(staging / name))
        files = {}
        for order, pixel in (tuple(p) for p in manifest["pixels"]):
            kept = [
                str(f)
                for f in _current_files(root, order, pixel)
                if f not in retired and f.parent not in retired
            ]
            files[(order, pixel)] = kept + staged.get((order, pixel), [])
        props = {k: str(v) for k, v in manifest["properties"].items()}
        return cls(
            root=root,
            props=props,
            pixels=[tuple(p) for p in manifest["pixels"]],
            files=files,
            schema_file=root / fmt.DATASET_DIR / "_common_metadata",
        )


def _current_files(root: Path, order: int, pixel: int) -> list[Path]:
    single = fmt.pixel_file(root, order, pixel, ".parquet")
    if single.is_file():
        return [single]
    folder = fmt.pixel_file(root, order, pixel, "/")
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []

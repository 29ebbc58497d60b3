"""A catalog as a list of partitions and their data files, possibly not yet committed.

Builders of derived catalogs (margins, indexes) read a :class:`CatalogSnapshot` rather than the
catalog directory, so that a change (append, compact) can build the members of the catalog it is
about to commit from the files it has staged, before the commit (see
:mod:`healforge.catalog.derived.members`). Files are path objects (local paths or UPaths), listed in
one listing of the dataset (one request on object stores).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from healforge.hats import layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path


@dataclass
class CatalogSnapshot:
    """Partitions of a catalog and the files holding each, with its properties and schema."""

    root: AnyPath
    props: dict
    pixels: list[tuple[int, int]]
    files: dict[tuple[int, int], list[AnyPath]]
    schema_file: AnyPath
    sizes: dict[str, int] = field(default_factory=dict)

    def size_of(self, pixel: tuple[int, int]) -> int:
        """Bytes of the data files of ``pixel`` (0 when unknown)."""
        return sum(self.sizes.get(str(f), 0) for f in self.files.get(pixel, []))

    @classmethod
    def of(cls, root: str | os.PathLike) -> CatalogSnapshot:
        """The catalog as it is on disk (or in its object store)."""
        root = as_path(root)
        pixels = layout.read_partition_info(root)
        current, sizes = _current_files(root)
        return cls(
            root=root,
            props=layout.read_properties(root),
            pixels=pixels,
            files={pix: current.get(pix, []) for pix in pixels},
            schema_file=layout.common_metadata_file(root),
            sizes=sizes,
        )

    @classmethod
    def after(cls, root: str | os.PathLike, manifest: dict, staging: AnyPath) -> CatalogSnapshot:
        """The catalog as it will be once the change described by ``manifest`` is applied.

        ``manifest`` uses the transaction conventions: ``pixels`` (the new partition list),
        ``retire`` (pixel files or directories, relative to ``root``, that the change removes),
        ``move`` (``[staged name, destination relative to root]`` pairs) and ``properties``.
        """
        root = as_path(root)
        retired = {str(root / rel) for rel in manifest.get("retire", [])}
        current, sizes = _current_files(root)
        staged: dict[tuple[int, int], list[AnyPath]] = {}
        for name, rel in manifest.get("move", []):
            staged.setdefault(layout.pixel_of_path(rel), []).append(staging / name)
        sizes |= {str(p): n for p, n in storage.list_files(staging)}
        files = {}
        for order, pixel in (tuple(p) for p in manifest["pixels"]):
            kept = [
                f
                for f in current.get((order, pixel), [])
                if str(f) not in retired and str(f.parent) not in retired
            ]
            files[(order, pixel)] = kept + staged.get((order, pixel), [])
        props = {k: str(v) for k, v in manifest["properties"].items()}
        return cls(
            root=root,
            props=props,
            pixels=[tuple(p) for p in manifest["pixels"]],
            files=files,
            schema_file=layout.common_metadata_file(root),
            sizes=sizes,
        )


def _current_files(root: AnyPath) -> tuple[dict[tuple[int, int], list[AnyPath]], dict[str, int]]:
    """Data files of every pixel (a single file, or the files of the pixel's directory) and sizes."""
    base = root / layout.DATASET_DIR
    listed = storage.list_files(base)
    by_pixel: dict[tuple[int, int], list[AnyPath]] = {}
    for f, _ in listed:
        rel = "/".join(f.parts[len(base.parts) :])
        if layout.is_data_file(rel):
            by_pixel.setdefault(layout.pixel_of_path(rel), []).append(f)
    sizes = {str(p): n for p, n in listed}
    return {pix: sorted(fs, key=str) for pix, fs in by_pixel.items()}, sizes

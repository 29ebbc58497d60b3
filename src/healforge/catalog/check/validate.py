"""``validate_catalog``: hats' strict checks plus the data checks hats skips, for a catalog, a
margin, an index or a collection."""

from __future__ import annotations

from pathlib import Path

from healforge.catalog.check import validate_members as vm
from healforge.catalog.check.partitioned import ValidationReport, read_any_properties, validate_partitioned
from healforge.catalog.derived.collection import is_collection
from healforge.errors import CatalogError
from healforge.hats import layout
from healforge.io.storage import as_path


def validate_catalog(
    path: str | Path,
    id_column: str | None = None,
    check_index: bool = True,
    storage_options: dict | None = None,
) -> ValidationReport:
    """Validate a HATS catalog.

    Runs ``hats.io.validation.is_valid_catalog(strict=True)``, reads the properties under either
    name (``hats.properties`` or the legacy ``properties``) and then decodes every data file
    (every column of every row group; an unreadable one is a problem). A file that readers skip
    (a name starting with ``.`` or ``_``) or that lies outside the HATS layout is a problem and
    its rows are not counted, so ``hats_nrows`` is compared with the rows lsdb reads. Checked:
    each row lies inside its file's pixel, rows are sorted by ``_healpix_29``, ``_healpix_29``
    matches ra/dec (``check_index``), the rows in ``_metadata`` equal the rows in the files and
    ``hats_nrows``, partitions do not overlap, and ``id_column`` (if given) is unique. ``path``
    may be an fsspec URL, with ``storage_options``.

    A collection is validated member by member (:func:`validate_collection`), a margin against
    its primary catalog (:func:`healforge.catalog.check.validate_members.validate_margin`) and an index
    against the rows of its primary (:func:`~healforge.catalog.check.validate_members.validate_index`).
    """
    root = as_path(path, storage_options)
    if not root.exists():
        raise CatalogError(f"catalog not found: {root}")
    if is_collection(root):
        return vm.validate_collection(root, id_column=id_column, check_index=check_index)
    if root.is_file() or not any(
        (root / n).is_file() for n in (layout.PROPERTIES_FILE, layout.LEGACY_PROPERTIES_FILE)
    ):
        raise CatalogError(f"{root} is not a HATS catalog (no hats.properties)")
    kind = (read_any_properties(root) or {}).get("dataproduct_type")
    if kind == "margin":
        return vm.validate_margin(root)
    if kind == "index":
        return vm.validate_index(root)
    return validate_partitioned(root, id_column, check_index)


__all__ = ["ValidationReport", "validate_catalog"]

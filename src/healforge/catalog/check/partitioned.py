"""The checks of one HEALPix-partitioned catalog (hats' strict checks plus the data checks hats
skips) and the report every validation returns."""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from healforge.catalog.check.unseen import unseen_files
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path
from healforge.pixel import SPATIAL_INDEX_COLUMN, index29_range, index_to_order, spatial_index, wrap_lon


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_catalog`: ``ok`` and one message per problem."""

    path: str
    problems: list[str] = field(default_factory=list)
    rows: int = 0
    files: int = 0
    kind: str = "catalog"
    members: list[ValidationReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        if self.ok and self.kind == "collection":
            return f"{self.path}: valid collection\n" + "\n".join(f"  {m}" for m in self.members)
        if self.ok:
            return f"{self.path}: valid {self.kind} ({self.rows} rows in {self.files} files)"
        return f"{self.path}: {len(self.problems)} problem(s)\n" + "\n".join(
            f"  - {p}" for p in self.problems
        )


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def hats_strict(root: AnyPath, problems: list[str]) -> None:
    """``hats.io.validation.is_valid_catalog(strict=True)``, its warnings into ``problems``."""
    from hats.io.validation import is_valid_catalog

    handler = _Collect()
    logging.getLogger().addHandler(handler)
    try:
        strict_ok = is_valid_catalog(str(root) if storage.is_local(root) else root, strict=True)
    except Exception as exc:  # hats raises on some malformed catalogs
        strict_ok = False
        handler.messages.append(f"{type(exc).__name__}: {exc}")
    finally:
        logging.getLogger().removeHandler(handler)
    if not strict_ok:
        problems.append("hats strict validation failed: " + ("; ".join(handler.messages) or "no detail"))


def begin_report(
    path: str | os.PathLike, kind: str, hats_check: bool = True
) -> tuple[AnyPath, ValidationReport, dict[str, str] | None]:
    """Start validating ``path``: its report (with hats' strict checks unless ``hats_check`` is
    false) and its properties (``None`` when it has no ``hats.properties``)."""
    root = as_path(path)
    report = ValidationReport(str(root), kind=kind)
    if hats_check:
        hats_strict(root, report.problems)
    return root, report, read_any_properties(root)


def read_any_properties(root: AnyPath) -> dict[str, str] | None:
    """The catalog's properties from ``hats.properties`` or, as hats reads it too, the legacy
    ``properties`` file; ``None`` when it has neither."""
    for name in (layout.PROPERTIES_FILE, layout.LEGACY_PROPERTIES_FILE):
        if (root / name).is_file():
            out = {}
            for line in (root / name).read_text().splitlines():
                if "=" in line and not line.lstrip().startswith("#"):
                    k, v = line.split("=", 1)
                    out[k.strip()] = v.strip()
            return out
    return None


def _known_id_column(root: AnyPath, id_column: str | None, problems: list[str]) -> str | None:
    """``id_column`` when the catalog's schema has it; else one problem naming the columns
    there are (instead of one per file) and ``None``."""
    meta = layout.common_metadata_file(root)
    if id_column is None or not meta.exists():
        return id_column
    try:
        names = storage.parquet_file(meta).schema_arrow.names
    except Exception:  # an unreadable _common_metadata is reported by hats' checks
        return id_column
    if id_column in names:
        return id_column
    shown = [n for n in names if n != SPATIAL_INDEX_COLUMN]
    problems.append(f"id column {id_column!r} is not in the catalog; its columns: {', '.join(shown)}")
    return None


def validate_partitioned(
    path: str | Path,
    id_column: str | None = None,
    check_index: bool = True,
    kind: str = "catalog",
    hats_check: bool = True,
) -> ValidationReport:
    """The checks of :func:`validate_catalog` for one HEALPix-partitioned catalog
    (``hats_check=False`` skips hats' own strict validation, e.g. when done for a collection)."""
    root, report, props = begin_report(path, kind, hats_check)
    problems = report.problems
    if props is None:
        return report
    try:
        pixels = layout.read_partition_info(root)
    except FileNotFoundError:
        problems.append("partition_info.csv is missing")
        return report
    _check_disjoint(pixels, problems)
    id_column = _known_id_column(root, id_column, problems)

    ra_col, dec_col = props.get(Key.COL_RA), props.get(Key.COL_DEC)
    # files readers skip (hidden), cannot read as data or would read where healforge does not
    # look are problems, and their rows are not counted: lsdb would not count them either
    unseen = unseen_files(root)
    for rel, reason in unseen:
        problems.append(f"{layout.DATASET_DIR}/{rel}: {reason}")
    skipped = {rel for rel, _ in unseen}
    base = root / layout.DATASET_DIR
    files = [f for f in layout.list_data_files(root) if "/".join(f.parts[len(base.parts) :]) not in skipped]
    report.files = len(files)
    listed = set(pixels)
    file_rows: dict[str, int] = {}
    ids = []
    for f in files:
        order, pixel = layout.pixel_of_path(f)
        rel = "/".join(f.parts[len((root / layout.DATASET_DIR).parts) :])
        if (order, pixel) not in listed:
            problems.append(f"{rel}: pixel ({order}, {pixel}) is not in partition_info.csv")
        try:
            pfile = storage.parquet_file(f)
        except Exception as exc:
            problems.append(f"{rel}: unreadable parquet file ({exc})")
            continue
        names = pfile.schema_arrow.names
        if not names or names[0] != SPATIAL_INDEX_COLUMN:
            problems.append(f"{rel}: first column is {names[:1]}, expected {SPATIAL_INDEX_COLUMN}")
        if b"pandas" in (pfile.schema_arrow.metadata or {}):
            problems.append(f"{rel}: carries pandas metadata")
        cols = [SPATIAL_INDEX_COLUMN] + [c for c in (ra_col, dec_col, id_column) if c and c in names]
        missing = [c for c in (ra_col, dec_col, id_column) if c and c not in names]
        if missing:
            problems.append(f"{rel}: missing column(s) {missing}")
        try:  # every column of every row group is decoded: a damaged page anywhere is found
            table = _read_checked(pfile, [c for c in cols if c in names])
        except Exception as exc:
            problems.append(f"{rel}: unreadable parquet file ({type(exc).__name__}: {exc})")
            continue
        file_rows[rel] = table.num_rows
        report.rows += table.num_rows
        if SPATIAL_INDEX_COLUMN not in table.column_names:
            continue
        h29 = table.column(SPATIAL_INDEX_COLUMN).to_numpy()
        outside = np.flatnonzero(index_to_order(h29, order) != pixel)
        if len(outside):
            problems.append(
                f"{rel}: {len(outside)} row(s) outside pixel ({order}, {pixel}), first at row {outside[0]}"
            )
        unsorted = np.flatnonzero(np.diff(h29) < 0)
        if len(unsorted):
            problems.append(f"{rel}: not sorted by {SPATIAL_INDEX_COLUMN} (first at row {unsorted[0] + 1})")
        if check_index and ra_col in table.column_names and dec_col in table.column_names:
            ra = table.column(ra_col).to_numpy(zero_copy_only=False).astype(np.float64)
            dec = table.column(dec_col).to_numpy(zero_copy_only=False).astype(np.float64)
            wrong = np.flatnonzero(spatial_index(wrap_lon(ra), dec) != h29)
            if len(wrong):
                problems.append(
                    f"{rel}: {SPATIAL_INDEX_COLUMN} does not match {ra_col}/{dec_col} in {len(wrong)} row(s), "
                    f"first at row {wrong[0]}"
                )
        if id_column and id_column in table.column_names:
            ids.append(table.column(id_column))
    present = {layout.pixel_of_path(f) for f in files}
    for pix in sorted(listed - present):
        problems.append(f"pixel {pix} is in partition_info.csv but has no data file")
    check_metadata(root, file_rows, problems)
    if Key.NROWS in props and int(props[Key.NROWS]) != report.rows:
        problems.append(f"{Key.NROWS} is {props[Key.NROWS]} but the data files hold {report.rows} rows")
    if id_column and ids:
        import pyarrow as pa

        all_ids = pa.chunked_array([c for chunk in ids for c in chunk.chunks])
        counts = pc.value_counts(all_ids)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))
        if len(dup):
            problems.append(
                f"column {id_column!r} has {len(dup)} duplicated value(s), e.g. {dup[0]['values'].as_py()!r}"
            )
    return report


def _read_checked(pfile, columns: list[str]):
    """``columns`` of a parquet file, after decoding every column of every row group."""
    import pyarrow as pa

    parts = []
    for i in range(pfile.num_row_groups):
        parts.append(pfile.read_row_group(i).select(columns))
    return pa.concat_tables(parts) if parts else pfile.schema_arrow.empty_table().select(columns)


def _check_disjoint(pixels, problems) -> None:
    if not pixels:
        return
    orders = np.array([o for o, _ in pixels])
    pix = np.array([p for _, p in pixels])
    start, stop = index29_range(pix, orders)
    idx = np.argsort(start)
    overlap = np.flatnonzero(start[idx][1:] < stop[idx][:-1])
    for k in overlap[:5]:
        a, b = idx[k], idx[k + 1]
        problems.append(f"partitions {pixels[a]} and {pixels[b]} overlap")


def check_metadata(root: AnyPath, file_rows: dict[str, int], problems: list[str]) -> None:
    meta_path = layout.metadata_file(root)
    if not meta_path.exists():
        if not layout.has_multi_file_pixels(root):
            problems.append("dataset/_metadata is missing")
        return
    meta = storage.read_parquet_metadata(meta_path)
    rows: dict[str, int] = defaultdict(int)
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        rows[rg.column(0).file_path] += rg.num_rows
    for rel, n in file_rows.items():
        if rows.get(rel) != n:
            problems.append(f"_metadata lists {rows.get(rel, 0)} rows for {rel}, the file holds {n}")
    for rel in set(rows) - set(file_rows):
        problems.append(f"_metadata lists {rel}, which does not exist")

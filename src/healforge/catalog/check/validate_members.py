"""Validation of collections, margins (exact rows against the primary) and index catalogs."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from healforge.catalog.check.partitioned import (
    ValidationReport,
    begin_report,
    check_metadata,
    hats_strict,
    validate_partitioned,
)
from healforge.catalog.check.unseen import unseen_files
from healforge.hats import Key, layout
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path
from healforge.pixel import SPATIAL_INDEX_COLUMN, index_to_order


def _prefixed(report: ValidationReport, name: str) -> list[str]:
    return [f"{name}: {p}" for p in report.problems]


def validate_collection(
    path: str | os.PathLike, id_column: str | None = None, check_index: bool = True
) -> ValidationReport:
    """Validate every member of a collection; fails when a listed default member is missing."""
    from healforge.catalog.derived.collection import open_collection
    from healforge.errors import CatalogError

    root = as_path(path)
    report = ValidationReport(str(root), kind="collection")
    try:
        coll = open_collection(root)
    except CatalogError as exc:
        report.problems.append(str(exc))
        return report
    hats_strict(root, report.problems)
    if not layout.properties_file(coll.primary).exists():
        report.problems.append(f"primary catalog {coll.primary} is missing")
        return report
    # hats' strict collection check above covered every member's hats checks
    primary = validate_partitioned(coll.primary, id_column, check_index, "primary catalog", hats_check=False)
    report.members.append(primary)
    report.problems += _prefixed(primary, coll.primary.name)
    report.rows, report.files = primary.rows, primary.files
    for label, path in coll.margins.items():
        if not layout.properties_file(path).exists():
            report.problems.append(f"margin {label} is listed in collection.properties but missing")
            continue
        member = validate_margin(path, coll.primary, hats_check=False)
        report.members.append(member)
        report.problems += _prefixed(member, label)
    for column, path in coll.indexes.items():
        if not layout.properties_file(path).exists():
            report.problems.append(f"index on {column} ({path.name}) is listed but missing")
            continue
        member = validate_index(path, coll.primary, hats_check=False)
        indexed = layout.read_properties(path).get(Key.INDEX_COLUMN)
        if indexed != column:
            member.problems.append(f"indexes column {indexed!r}, collection.properties says {column!r}")
        report.members.append(member)
        report.problems += _prefixed(member, path.name)
    if coll.margins and coll.default_margin is None:
        report.problems.append("collection has margins but no default_margin")
    if coll.indexes and coll.default_index is None:
        report.problems.append("collection has indexes but no default_index")
    return report


def find_primary(root: AnyPath) -> AnyPath | None:
    """The primary catalog of a margin or index: its collection's primary, else
    ``hats_primary_table_url`` as an absolute path, beside the member, or from here."""
    from healforge.catalog.derived.collection import is_collection, open_collection

    if is_collection(root.parent):
        return open_collection(root.parent).primary
    url = layout.read_properties(root).get(Key.PRIMARY_TABLE_URL)
    if not url:
        return None
    options = None if storage.is_local(root) else dict(root.storage_options)
    candidates = [root.parent / url, root.parent / url.rstrip("/").rsplit("/", 1)[-1]]
    if storage.protocol_of(url) or os.path.isabs(url):
        candidates.insert(0, as_path(url, options if storage.protocol_of(url) else None))
    for candidate in candidates:
        if layout.properties_file(candidate).exists():
            return candidate
    return None


def validate_margin(
    path: str | os.PathLike, primary: AnyPath | None = None, hats_check: bool = True
) -> ValidationReport:
    """A margin against its primary: hats' strict checks, and exactly the rows of other partitions
    within ``hats_margin_threshold`` of each pixel's boundary (the margin builder's exact
    distance code decides, from the primary's rows), for the primary's partitions and the empty
    pixels of its negative tree."""
    from healforge.catalog.change.snapshot import CatalogSnapshot
    from healforge.catalog.derived.margin import (
        margin_order_for,
        negative_tree_pixels,
        partition_table,
        select_margin_rows,
    )

    root, report, props = begin_report(path, "margin", hats_check)
    problems = report.problems
    if props is None:
        return report
    primary = primary or find_primary(root)
    if primary is None:
        problems.append(f"primary catalog {props.get(Key.PRIMARY_TABLE_URL)!r} not found")
        return report
    radius = float(props[Key.MARGIN_THRESHOLD])
    source = CatalogSnapshot.of(primary)
    ra, dec = source.props[Key.COL_RA], source.props[Key.COL_DEC]
    cols = [SPATIAL_INDEX_COLUMN, ra, dec]
    empty = negative_tree_pixels(source.pixels)
    table = partition_table(source.pixels, empty)
    known = set(source.pixels) | set(empty)

    present: dict[tuple[int, int], pd.DataFrame] = {}
    file_rows = {}
    unseen = unseen_files(root)  # files readers skip are problems, their rows not counted
    problems.extend(f"{layout.DATASET_DIR}/{rel}: {reason}" for rel, reason in unseen)
    for f in layout.list_data_files(root):
        order, pixel = layout.pixel_of_path(f)
        rel = "/".join(f.parts[len((root / layout.DATASET_DIR).parts) :])
        if rel in {r for r, _ in unseen}:
            continue
        df = storage.read_parquet_table(f, columns=cols).to_pandas()
        file_rows[rel] = len(df)
        report.files += 1
        report.rows += len(df)
        if (order, pixel) not in known:
            problems.append(
                f"{rel}: pixel ({order}, {pixel}) is neither a partition of the primary {primary} "
                "nor an empty pixel of its negative tree"
            )
        h29 = df[SPATIAL_INDEX_COLUMN].to_numpy()
        if np.any(np.diff(h29) < 0):
            problems.append(f"{rel}: not sorted by {SPATIAL_INDEX_COLUMN}")
        inside = int(np.sum(index_to_order(h29, order) == pixel))
        if inside:
            problems.append(f"{rel}: {inside} row(s) lie inside pixel ({order}, {pixel}) itself")
        present[(order, pixel)] = (
            pd.concat([present[(order, pixel)], df]) if (order, pixel) in present else df
        )
    check_metadata(root, file_rows, problems)
    if Key.NROWS in props and int(props[Key.NROWS]) != report.rows:
        problems.append(f"{Key.NROWS} is {props[Key.NROWS]} but the data files hold {report.rows} rows")

    expected: dict[tuple[int, int], list[pd.DataFrame]] = {}
    m_order = margin_order_for(radius)
    for i in np.flatnonzero(table["primary"]):
        pix = (int(table["orders"][i]), int(table["pixels"][i]))
        data = pa.concat_tables([storage.read_parquet_table(f, columns=cols) for f in source.files[pix]])
        h29 = data[SPATIAL_INDEX_COLUMN].to_numpy()
        rows, dests = select_margin_rows(
            data[ra].to_numpy().astype(np.float64),
            data[dec].to_numpy().astype(np.float64),
            h29,
            i,
            table,
            radius,
            m_order,
        )
        if len(rows) == 0:
            continue
        picked = data.take(pa.array(rows)).to_pandas()
        for d in np.unique(dests):
            key = (int(table["orders"][d]), int(table["pixels"][d]))
            expected.setdefault(key, []).append(picked[dests == d])
    for pix in sorted(set(expected) | set(present)):
        want = pd.concat(expected[pix]) if pix in expected else pd.DataFrame(columns=cols)
        have = present.get(pix, pd.DataFrame(columns=cols))
        missing, extra = _multiset_diff(want, have, cols)
        where = f"margin of pixel {pix}"
        if missing:
            problems.append(f"{where}: {missing} row(s) within {radius:g} arcsec of the boundary are missing")
        if extra:
            problems.append(
                f"{where}: {extra} row(s) are not within {radius:g} arcsec of the boundary "
                "(or not in the primary)"
            )
    return report


def _multiset_diff(want: pd.DataFrame, have: pd.DataFrame, cols: list[str]) -> tuple[int, int]:
    """Rows of ``want`` missing from ``have`` and rows of ``have`` not in ``want`` (with repeats)."""
    a = want[cols].astype({cols[0]: "int64", cols[1]: "float64", cols[2]: "float64"}).copy()
    b = have[cols].astype({cols[0]: "int64", cols[1]: "float64", cols[2]: "float64"}).copy()
    a["_k"] = a.groupby(cols).cumcount()
    b["_k"] = b.groupby(cols).cumcount()
    merged = a.merge(b, on=[*cols, "_k"], how="outer", indicator=True)
    return int((merged["_merge"] == "left_only").sum()), int((merged["_merge"] == "right_only").sum())


def validate_index(
    path: str | os.PathLike, primary: AnyPath | None = None, hats_check: bool = True
) -> ValidationReport:
    """An index catalog: hats' strict checks, sorted by the indexed column, and for every primary
    partition exactly the id values its rows hold."""
    from healforge.catalog.change.snapshot import CatalogSnapshot

    root, report, props = begin_report(path, "index", hats_check)
    problems = report.problems
    if props is None:
        return report
    column = props.get(Key.INDEX_COLUMN)
    if not column:
        problems.append(f"{Key.INDEX_COLUMN} is not set")
        return report
    primary = primary or find_primary(root)
    if primary is None:
        problems.append(f"primary catalog {props.get(Key.PRIMARY_TABLE_URL)!r} not found")
        return report
    files = sorted(
        (f for f, _ in storage.list_files(root / layout.DATASET_DIR) if f.name.endswith(".parquet")),
        key=lambda f: (len(f.name), f.name, str(f)),
    )
    tables, last = [], None
    for f in files:
        t = storage.read_parquet_table(f, columns=[column, "Norder", "Npix"])
        rel = "/".join(f.parts[len(root.parts) :])
        ids = t[column]
        if len(ids) > 1 and pc.any(pc.less(ids.slice(1), ids.slice(0, len(ids) - 1))).as_py():
            problems.append(f"{rel}: not sorted by {column}")
        if len(ids) and last is not None and pc.less(ids[0], last).as_py():
            problems.append(f"{rel}: starts below the end of the previous file (files not in id order)")
        last = ids[len(ids) - 1] if len(ids) else last
        tables.append(t)
        report.files += 1
    index = (
        pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame(columns=[column, "Norder", "Npix"])
    )
    report.rows = len(index)
    if Key.NROWS in props and int(props[Key.NROWS]) != report.rows:
        problems.append(f"{Key.NROWS} is {props[Key.NROWS]} but the data files hold {report.rows} rows")
    groups = {
        (int(o), int(p)): g[column].to_numpy() for (o, p), g in index.groupby(["Norder", "Npix"], sort=False)
    }
    source = CatalogSnapshot.of(primary)
    for pix in source.pixels:
        have = np.sort(groups.pop(pix, np.array([], dtype=object)))
        data = pa.concat_tables([storage.read_parquet_table(f, columns=[column]) for f in source.files[pix]])
        want = np.sort(data[column].to_numpy(zero_copy_only=False))
        if len(have) != len(want) or not np.array_equal(have, want):
            problems.append(
                f"pixel {pix}: the index lists {len(have)} row(s), the primary holds {len(want)}"
                + ("" if len(have) != len(want) else " with other values")
            )
    for pix in sorted(groups):
        problems.append(f"the index points at pixel {pix}, which is not a partition of {primary}")
    return report


__all__ = ["find_primary", "validate_collection", "validate_index", "validate_margin"]

"""HDF5 inputs whose columns live in datasets named by path templates.

Instrument files often repeat one layout under several groups, e.g. ICESat-2 ATL06 with beams
``gt1l ... gt3r`` each holding ``land_ice_segments/{latitude,longitude,h_li,...}``. A template
such as ``/{group}/land_ice_segments/h_li`` is expanded over a list of groups (or glob patterns
such as ``gt*``); every group yields tables with a ``group`` column naming it.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import fsspec
import numpy as np
import pyarrow as pa

from healforge.errors import BadInputError
from healforge.io.columns import check_columns, to_arrow
from healforge.io.fills import annotated, declared_fills


@contextlib.contextmanager
def open_hdf5(path: str, storage_options: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """The open ``h5py.File`` of a local path or URL; a missing or unreadable file is a
    :class:`~healforge.errors.BadInputError` naming it."""
    import h5py

    fs, fs_path = fsspec.core.url_to_fs(str(path), **dict(storage_options or {}))
    if not fs.exists(fs_path):
        raise BadInputError("input file not found", path=path)
    with fs.open(fs_path, "rb") as f:
        try:
            h5 = h5py.File(f, "r")
        except OSError as exc:
            raise BadInputError(f"not a readable HDF5 file: {exc}", path=path) from exc
        with h5:
            yield h5


GROUP_COLUMN = "group"
DEFAULT_BATCH_ROWS = 1_000_000


def _prefix(template: str) -> str:
    """The path before ``{group}`` (the parent whose children are the groups)."""
    head = template.split("{group}", 1)[0]
    return head.rstrip("/") or "/"


def expand_groups(h5, templates: Sequence[str], groups: Sequence[str] | str | None) -> list[str]:
    """Group names for ``templates`` in an open file: explicit names kept, glob patterns matched."""
    if groups is None:
        return []
    patterns = [groups] if isinstance(groups, str) else list(groups)
    with_group = [t for t in templates if "{group}" in t]
    if not with_group:
        return []
    parent = _prefix(with_group[0])
    children = sorted(h5[parent].keys()) if parent in h5 else []
    out: list[str] = []
    for pattern in patterns:
        if any(ch in pattern for ch in "*?["):
            out.extend(c for c in children if fnmatch.fnmatchcase(c, pattern) and c not in out)
        elif pattern not in out:
            out.append(pattern)
    return out


def _column(ds, start: int, stop: int) -> pa.Array:
    values = ds[start:stop]
    values = np.asarray(values)
    if values.dtype.kind == "S":
        return pa.array(np.char.decode(values, "ascii").astype(object), type=pa.string())
    values = values.astype(values.dtype.newbyteorder("="), copy=False)
    return pa.array(values)


def iter_hdf5_template(
    path: str,
    columns: Mapping[str, str],
    groups: Sequence[str] | str | None = None,
    *,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    on_missing_group: str = "skip",
    mask_fill: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first_row, table)`` batches of an HDF5 file read through dataset-path templates.

    Parameters
    ----------
    path
        Local path or fsspec URL.
    columns
        Output column name -> dataset path, which may contain ``{group}``.
    groups
        Group names or glob patterns substituted for ``{group}``; each batch then carries a
        ``group`` column (string). ``None`` when no template has ``{group}``.
    batch_rows
        Upper bound on rows per batch.
    on_missing_group
        ``"skip"`` a group with none of the datasets (e.g. an absent beam) or ``"error"``.
        A group holding only some of the datasets is always an error.
    mask_fill
        Declare each dataset's ``_FillValue`` / ``missing_value`` as the column's fill values
        (:mod:`healforge.io.fills`): never a value of a statistic.

    Raises
    ------
    BadInputError
        Missing file, datasets or groups, or datasets of unequal length within a group; the
        message names the file and the dataset and lists what exists.
    """
    import h5py

    if not columns:
        raise ValueError("no columns given")
    templates = list(columns.values())
    uses_group = any("{group}" in t for t in templates)
    if uses_group and not groups:
        raise ValueError("dataset templates contain {group} but no groups were given")
    total = 0
    with open_hdf5(path, storage_options) as h5:
        names = expand_groups(h5, templates, groups) if uses_group else [None]
        if uses_group and not names:
            parent = _prefix(next(t for t in templates if "{group}" in t))
            have = sorted(h5[parent].keys()) if parent in h5 else []
            raise BadInputError(
                f"no HDF5 group matches {groups!r} under {parent!r}; it holds {have}", path=path
            )
        for group in names:
            paths = {c: t.replace("{group}", group) if group is not None else t for c, t in columns.items()}
            present = {c: p for c, p in paths.items() if p in h5 and isinstance(h5[p], h5py.Dataset)}
            if not present and group is not None and on_missing_group == "skip":
                continue
            if len(present) < len(paths):
                missing = [p for c, p in paths.items() if c not in present]
                parent = missing[0].rsplit("/", 1)[0] or "/"
                have = sorted(h5[parent].keys()) if parent in h5 else []
                raise BadInputError(
                    f"HDF5 dataset(s) {missing} not found; {parent!r} holds {have}",
                    path=path,
                    column=next(c for c in paths if c not in present),
                )
            dsets = {c: h5[p] for c, p in paths.items()}
            shapes = {paths[c]: d.shape for c, d in dsets.items()}
            if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
                raise BadInputError(f"HDF5 datasets must be 1-D and of equal length: {shapes}", path=path)
            n = next(iter(shapes.values()))[0]
            fills = {c: declared_fills(d.attrs) for c, d in dsets.items()} if mask_fill else {}
            for start in range(0, n, batch_rows):
                stop = min(n, start + batch_rows)
                data = {c: _column(d, start, stop) for c, d in dsets.items()}
                if group is not None:
                    data[GROUP_COLUMN] = pa.repeat(pa.scalar(group, type=pa.string()), stop - start)
                yield total, annotated(data, fills)
                total += stop - start


def iter_hdf5(path, columns, batch_rows, group="/", storage_options=None, **_):
    """The ``hdf5`` input format: 1-D datasets of one group as columns (or a compound dataset
    as a table), in batches."""
    import h5py

    with open_hdf5(path, storage_options) as h5:
        if group not in h5:
            raise BadInputError(
                f"HDF5 group {group!r} not found; top-level keys: {list(h5.keys())}", path=path
            )
        node = h5[group]
        if isinstance(node, h5py.Dataset) and node.dtype.names:
            names = list(node.dtype.names)
            check_columns(path, names, columns)
            wanted = columns or names
            for start in range(0, node.shape[0], batch_rows):
                rec = node[start : start + batch_rows]
                yield pa.table({c: to_arrow(rec[c]) for c in wanted})
            return
        dsets = {k: v for k, v in node.items() if isinstance(v, h5py.Dataset) and v.ndim == 1}
        names = list(dsets)
        check_columns(path, names, columns)
        wanted = columns or names
        lengths = {c: dsets[c].shape[0] for c in wanted}
        if len(set(lengths.values())) > 1:
            raise BadInputError(f"HDF5 columns have different lengths: {lengths}", path=path)
        n = next(iter(lengths.values()), 0)
        fills = {c: declared_fills(dsets[c].attrs) for c in wanted}
        for start in range(0, n, batch_rows):
            yield annotated({c: to_arrow(dsets[c][start : start + batch_rows]) for c in wanted}, fills)

"""Reading HDF5 granules the way a zagg ``data_source`` describes them.

One table per group (beam): the base-rate coordinate and variable datasets, variables of coarser
levels broadcast to base rows through their ``link`` (``index_beg`` - ``index_base``, ``count``),
and a boolean ``_zagg_keep`` column: the AND of every structured filter (``op`` eq ne ge le lt gt
in not_in, ``keep``, a ``column`` of a 2-D dataset, filters of coarser levels expanded through
the link). Values are read raw, as zagg's h5coro reader gives them; unlike zagg, each dataset's
``_FillValue`` / ``missing_value`` is declared on its column, so fills never become values.
Rows are filtered later by the pipeline, so every dropped row is counted.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.errors import BadInputError
from healforge.io.fills import annotated, declared_fills
from healforge.io.hdf5 import GROUP_COLUMN, expand_groups, open_hdf5

KEEP = "_zagg_keep"
_COMPARE = {
    "eq": np.equal,
    "ne": np.not_equal,
    "ge": np.greater_equal,
    "le": np.less_equal,
    "lt": np.less,
    "gt": np.greater,
}


def _dataset(h5, path: str, file: str):
    import h5py

    if path not in h5 or not isinstance(h5[path], h5py.Dataset):
        parent = path.rsplit("/", 1)[0] or "/"
        have = sorted(h5[parent].keys()) if parent in h5 else []
        raise BadInputError(f"HDF5 dataset {path!r} not found; {parent!r} holds {have}", path=file)
    return h5[path]


def _read(h5, path: str, file: str) -> np.ndarray:
    values = np.asarray(_dataset(h5, path, file)[()])
    return values.astype(values.dtype.newbyteorder("="), copy=False) if values.dtype.kind in "iuf" else values


def _link_ranges(
    h5, link: Mapping[str, Any], group: str, n_base: int, file: str
) -> tuple[np.ndarray, np.ndarray]:
    """Start (0-based) and length of the base rows of every coarse-level row."""
    beg = _read(h5, link["index_beg"].format(group=group), file).astype(np.int64) - int(
        link.get("index_base", 0)
    )
    cnt = _read(h5, link["count"].format(group=group), file).astype(np.int64)
    if beg.shape != cnt.shape or beg.ndim != 1:
        raise BadInputError(
            f"link datasets {link['index_beg']!r} and {link['count']!r} must be 1-D of equal length",
            path=file,
        )
    used = cnt > 0
    if np.any(beg[used] < 0) or np.any(beg[used] + cnt[used] > n_base):
        i = int(np.flatnonzero(used & ((beg < 0) | (beg + cnt > n_base)))[0])
        raise BadInputError(
            f"link row {i} covers base rows [{beg[i]}, {beg[i] + cnt[i]}) outside the {n_base} base rows "
            f"(index_base {link.get('index_base', 0)})",
            path=file,
            column=link["index_beg"],
            row=i,
        )
    return beg, cnt


def _to_base(values: np.ndarray, beg: np.ndarray, cnt: np.ndarray, n_base: int, fill) -> np.ndarray:
    """A coarse-rate array repeated over the base rows each coarse row covers."""
    out = np.full(n_base, fill, dtype=values.dtype)
    used = cnt > 0
    idx = np.repeat(np.arange(values.shape[0])[used], cnt[used])
    starts = np.repeat(beg[used], cnt[used])
    offset = np.arange(idx.size) - np.repeat(np.cumsum(cnt[used]) - cnt[used], cnt[used])
    out[starts + offset] = values[idx]
    return out


def _predicate(arr: np.ndarray, f: Mapping[str, Any], path: str, file: str) -> np.ndarray:
    column = f.get("column")
    if arr.ndim > 1:
        if column is None:
            raise BadInputError(
                f"filter dataset {path!r} has shape {arr.shape}: set the filter's integer 'column'", path=file
            )
        if not -arr.shape[1] <= column < arr.shape[1]:
            raise BadInputError(f"filter column {column} is out of range for shape {arr.shape}", path=file)
        arr = arr[:, column]
    elif column is not None:
        raise BadInputError(f"filter sets column {column} but dataset {path!r} is 1-D", path=file)
    op = f["op"]
    if op == "in":
        mask = np.isin(arr, f["values"])
    elif op == "not_in":
        mask = ~np.isin(arr, f["values"])
    else:
        mask = _COMPARE[op](arr, f["value"])
    return mask if f.get("keep", True) else ~mask


def _in_shards(lon: np.ndarray, lat: np.ndarray, shards: Mapping[str, Any]) -> np.ndarray:
    """Rows whose cell at the shard order is one of ``shards["cells"]`` (bad coordinates kept,
    so that the pipeline reports them)."""
    from healforge.aggregate.coords import geodetic_to_authalic
    from healforge.pixel import bad_coordinate_mask, lonlat_to_pixel, wrap_lon

    lon, lat = np.asarray(lon, np.float64), np.asarray(lat, np.float64)
    bad = bad_coordinate_mask(lon, lat)
    out = np.ones(lon.size, dtype=bool)
    good = ~bad
    pix = lonlat_to_pixel(wrap_lon(lon[good]), geodetic_to_authalic(lat[good]), int(shards["order"]))
    out[good] = np.isin(pix, np.asarray(shards["cells"], dtype=np.int64))
    return out


def read_group(h5, group: str | None, layout: Mapping[str, Any], file: str) -> pa.Table | None:
    """Every column of one group as a table (``None`` when the group is absent)."""
    g = group or ""
    columns: dict[str, str] = layout["columns"]
    paths = {name: t.format(group=g) for name, t in columns.items()}
    if group is not None and not any(p in h5 for p in paths.values()):
        return None
    data = {name: _read(h5, p, file) for name, p in paths.items()}
    fills = {name: declared_fills(_dataset(h5, p, file).attrs) for name, p in paths.items()}
    shapes = {paths[n]: v.shape for n, v in data.items()}
    if any(len(s) != 1 for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
        raise BadInputError(f"base-rate datasets must be 1-D and of equal length: {shapes}", path=file)
    n = next(iter(shapes.values()))[0]
    levels = layout.get("levels") or {}
    links = {}

    def link_of(level: str):
        if level not in links:
            links[level] = _link_ranges(h5, levels[level]["link"], g, n, file)
        return links[level]

    for level, mapping in (layout.get("level_variables") or {}).items():
        beg, cnt = link_of(level)
        for name, template in mapping.items():
            values = _read(h5, template.format(group=g), file)
            if values.shape != beg.shape:
                raise BadInputError(
                    f"level {level!r} variable {template!r} has shape {values.shape}, its link {beg.shape}",
                    path=file,
                )
            fill = np.nan if values.dtype.kind == "f" else 0
            data[name] = _to_base(values, beg, cnt, n, fill)
            fills[name] = declared_fills(_dataset(h5, template.format(group=g), file).attrs)
    keep = np.ones(n, dtype=bool)
    for f in layout.get("filters") or []:
        path = f["dataset"].format(group=g)
        arr = _read(h5, path, file)
        level = f.get("level")
        if level is not None and level != layout.get("base_level"):
            beg, cnt = link_of(level)
            if arr.shape[0] != beg.shape[0]:
                raise BadInputError(
                    f"filter dataset {path!r} has {arr.shape[0]} rows, level {level!r} {beg.shape[0]}",
                    path=file,
                )
            keep &= _to_base(_predicate(arr, f, path, file), beg, cnt, n, False)
        else:
            if arr.shape[0] != n:
                raise BadInputError(
                    f"filter dataset {path!r} has {arr.shape[0]} rows, the base rate {n}", path=file
                )
            keep &= _predicate(arr, f, path, file)
    shards = layout.get("shards")
    if shards:  # a catalog's shards (authalic cells at the shard order): zagg writes these only
        keep &= _in_shards(data["longitude"], data["latitude"], shards)
    table = {name: pa.array(v) for name, v in data.items()}
    table[KEEP] = pa.array(keep)
    if group is not None:
        table[GROUP_COLUMN] = pa.repeat(pa.scalar(group, type=pa.string()), n)
    return annotated(table, fills)


def iter_granule(
    path: str,
    options: Mapping[str, Any],
    *,
    batch_rows: int = 1_000_000,
    storage_options: Mapping[str, Any] | None = None,
) -> Iterator[tuple[int, pa.Table]]:
    """Yield ``(first_row, table)`` batches of one granule (the ``reader`` of a zagg input).

    ``options["layout"]`` holds ``columns`` (name -> dataset template), ``groups``, ``filters``,
    ``levels``, ``base_level`` and ``level_variables`` as :mod:`healforge.zagg.translate` makes them.
    """
    layout = options["layout"]
    total = 0
    with open_hdf5(path, storage_options) as h5:
        groups = layout.get("groups") or []
        names = expand_groups(h5, list(layout["columns"].values()), groups) if groups else [None]
        for group in names:
            table = read_group(h5, group, layout, path)
            if table is None:
                continue
            for start in range(0, table.num_rows, batch_rows):
                part = table.slice(start, batch_rows)
                yield total, part
                total += part.num_rows

"""One self-contained HTML page about a catalog, a collection or a map product.

A catalog's page holds its coverage and row-density map, its partition orders (a map and a
table), row counts, every column with its type, minimum, maximum and null count (from the
row-group statistics of ``_metadata``), the margins and indexes of its collection, and its
provenance (``hats.properties``). A map product's page holds its levels, variables with their
ranges, provenance and a plot of each variable. Images are PNGs embedded as data URIs, so the
page is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from healforge.catalog.opener import open_path
from healforge.errors import BadInputError, OptionError
from healforge.hats import layout
from healforge.io import storage

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; font-size: .9em; margin: .5em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; border: 1px solid #eee; }
.muted { color: #777; }
"""


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(v):
        numeric = isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)
        text = f"{v:,}" if isinstance(v, int | np.integer) else (f"{v:.6g}" if numeric else v)
        return f"<td class='num'>{_esc(text)}</td>" if numeric else f"<td>{_esc(text)}</td>"

    head = "".join(f"<th>{_esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _png(fig) -> str:
    """An ``<img>`` of a matplotlib figure, embedded."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode()
    return f"<img alt='figure' src='data:image/png;base64,{data}'>"


def _page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<h2>{_esc(h)}</h2>{content}" for h, content in sections)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{_esc(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{_esc(title)}</h1>{body}"
        "<p class='muted'>Written by healforge report.</p></body></html>"
    )


def column_summary(metadata: Any, schema: pa.Schema) -> list[tuple[str, str, Any, Any, int]]:
    """``(name, type, min, max, nulls)`` of every column from the row-group statistics of a
    ``_metadata`` file (``pq.FileMetaData``); min/max empty where no statistics are stored."""
    stats: dict[str, list] = {}
    for rg in range(metadata.num_row_groups):
        group = metadata.row_group(rg)
        for c in range(group.num_columns):
            col = group.column(c)
            name = col.path_in_schema
            s = col.statistics
            entry = stats.setdefault(name, [None, None, 0])
            if s is None:
                continue
            if s.has_null_count:
                entry[2] += s.null_count
            if s.has_min_max:
                entry[0] = s.min if entry[0] is None else min(entry[0], s.min)
                entry[1] = s.max if entry[1] is None else max(entry[1], s.max)
    out = []
    for field in schema:
        lo, hi, nulls = stats.get(field.name, [None, None, 0])
        out.append((field.name, str(field.type), "" if lo is None else lo, "" if hi is None else hi, nulls))
    return out


def _catalog_maps(root, pixels: list[tuple[int, int]]) -> str:
    """Row density (the skymap) and partition orders, drawn as maps."""
    from healforge.maps.plot import plot_map
    from healforge.maps.table import make_map_table

    counts = layout.read_histogram(root)
    order = int(np.log2(len(counts) // 12) // 2)
    # a readable density map: about 20 rows a cell on average, order 7 at most
    rows = max(int(counts.sum()), 1)
    show = int(min(order, 7, max(0, np.floor(np.log(rows / 240) / np.log(4)))))
    coarse = counts.reshape(-1, 4 ** (order - show)).sum(axis=1) if order > show else counts
    cells = np.flatnonzero(coarse)
    density = make_map_table(cells, {"rows": coarse[cells].astype(np.float64)}, show, frame="sky")
    parts = []
    top = max(o for o, _ in pixels)
    ids, values = [], []
    for o, p in pixels:
        k = max(top, o)
        first = p << (2 * (k - o))
        ids.append(np.arange(first, first + 4 ** (k - o)))
        values.append(np.full(4 ** (k - o), float(o)))
    orders = make_map_table(
        np.concatenate(ids), {"partition_order": np.concatenate(values)}, top, frame="sky"
    )
    lo, hi = min(by for by, _ in pixels), top
    views = (
        (density, "rows", {"scale": "log"}),
        (orders, "partition_order", {"cmap": "tab10", "vrange": (lo - 0.5, max(hi, lo + 1) + 0.5)}),
    )
    for table, var, options in views:
        parts.append(_png(plot_map(table, var, width=900, out=None, dpi=80, graticule=30, **options)))
    return "".join(parts)


def catalog_report(path: str | os.PathLike, storage_options: dict | None = None) -> str:
    """The HTML page of a catalog or collection."""
    opened = open_path(path, storage_options)
    if not opened.is_hats:
        raise OptionError(f"{path} is neither a HATS catalog nor a collection")
    root, props = opened.table, opened.properties
    pixels = layout.read_partition_info(root)
    by_order: dict[int, int] = {}
    for o, _ in pixels:
        by_order[o] = by_order.get(o, 0) + 1
    meta = storage.read_parquet_metadata(layout.metadata_file(root))
    schema = storage.read_parquet_schema(layout.common_metadata_file(root))
    files = {rg: meta.row_group(rg).column(0).file_path for rg in range(meta.num_row_groups)}
    overview = [
        ("rows", int(props.get("hats_nrows", meta.num_rows))),
        ("partitions", len(pixels)),
        ("data files", len(set(files.values()))),
        ("row groups", meta.num_row_groups),
        ("sky fraction", float(props.get("moc_sky_fraction", "nan"))),
        ("size on disk (bytes)", layout.dir_size(root)),
    ]
    sections = [
        ("Overview", _table(["", "value"], overview)),
        ("Coverage and row density; partition orders", _catalog_maps(root, pixels)),
        ("Partitions by order", _table(["order", "partitions"], sorted(by_order.items()))),
        ("Columns", _table(["column", "type", "min", "max", "nulls"], column_summary(meta, schema))),
    ]
    if opened.kind == "collection":
        from healforge.catalog.derived.collection import open_collection

        col = open_collection(opened.path, storage_options)
        members = [("margin", name, _rows(p)) for name, p in col.margins.items()]
        members += [("index", f"{column} ({p.name})", _rows(p)) for column, p in col.indexes.items()]
        sections.append(
            ("Collection members", _table(["kind", "name", "rows"], members) if members else "none")
        )
    sections.append(("Provenance (hats.properties)", _table(["key", "value"], sorted(props.items()))))
    return _page(f"Catalog {props.get('obs_collection', root.name)}", sections)


def _rows(member) -> int | str:
    try:
        return int(layout.read_properties(member).get("hats_nrows", ""))
    except (ValueError, OSError):
        return "?"


def map_report(path: str | os.PathLike, storage_options: dict | None = None) -> str:
    """The HTML page of a map product (Zarr store or Parquet map)."""
    from healforge.maps.parquet import read_map, read_pyramid
    from healforge.maps.plot import plot_map
    from healforge.maps.provenance import source_provenance
    from healforge.maps.table import CELL_IDS, map_metadata

    pyramid = read_pyramid(path, storage_options=storage_options)
    finest = read_map(path, max(pyramid), storage_options=storage_options)
    meta = map_metadata(finest)
    levels = [(k, t.num_rows, len(t.column_names) - 1) for k, t in sorted(pyramid.items())]
    variables = []
    for name in finest.column_names:
        if name == CELL_IDS:
            continue
        v = finest.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        ok = v[np.isfinite(v)]
        variables.append((name, str(finest.schema.field(name).type), ok.min() if ok.size else "",
                          ok.max() if ok.size else "", int(v.size - ok.size)))  # fmt: skip
    plots = "".join(_png(plot_map(finest, name, width=800, out=None, dpi=80)) for name, *_ in variables[:6])
    prov = source_provenance(path)
    sections = [
        ("Levels", _table(["order", "cells", "variables"], levels)),
        (
            f"Variables at order {max(pyramid)}",
            _table(["variable", "type", "min", "max", "missing"], variables),
        ),
        (f"Maps at order {max(pyramid)}", plots),
        ("Provenance", _table(["key", "value"], sorted((k, str(v)[:300]) for k, v in prov.items()))),
    ]
    return _page(f"Map {meta.get('name') or os.path.basename(str(path).rstrip('/'))}", sections)


def write_report(
    path: str | os.PathLike, output: str | os.PathLike, storage_options: dict | None = None
) -> str:
    """Write the HTML report of a catalog, collection or map product to ``output``."""
    from healforge.maps.parquet import map_format

    opened = open_path(path, storage_options)
    if opened.kind == "missing":
        raise BadInputError("not found", path=os.fspath(path))
    if opened.is_hats:
        text = catalog_report(path, storage_options)
    elif opened.kind in ("directory", "file") and map_format(path) in ("zarr", "parquet"):
        text = map_report(path, storage_options)
    else:
        raise OptionError(f"{path}: not a catalog, collection or map product")
    storage.atomic_write_text(storage.as_path(output, storage_options), text)
    return os.fspath(output)

"""hats-import's optional catalog outputs: written at import and kept current by every change.

The files, all in the catalog root and written with hats' own writers where they exist:

- ``skymap.K.fits``: the row-count map summed to order K (property ``hats_skymap_alt_orders``);
- ``data_thumbnail.parquet`` (first row of every data file) and
  ``per_partition_statistics.parquet`` (footer statistics of every row group): hats'
  ``write_parquet_metadata``, one pass over the data files;
- ``README.md`` / ``index.html``: hats' catalog summary (its density image drawn at order 6 at
  most: hats draws one polygon per skymap pixel, which takes minutes at order 10);
- ``skymap.png`` / ``partition_info.png``: hats' plots (refreshed when found on disk).

Properties (``hats_cols_default``, any ``KEY=VALUE``) go into ``hats.properties`` at import and
are carried by append and compact. The choices made at import are recorded in
``.healforge/outputs.json``; :func:`refresh` regenerates what is recorded *or* found on disk
(a catalog made by hats-import), so that no optional file is left stale after a change. Each
file is written in a scratch directory and renamed into place.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from healforge.engine import failpoint
from healforge.errors import BadInputError, HealforgeError
from healforge.hats import Key, layout
from healforge.io import storage, workfiles
from healforge.io.storage import AnyPath, as_path
from healforge.pixel import SPATIAL_INDEX_COLUMN

STATE_DIR = ".healforge"
RECORD = "outputs.json"
THUMBNAIL = "data_thumbnail.parquet"
STATISTICS = "per_partition_statistics.parquet"
SUMMARIES = {"markdown": "README.md", "html": "index.html"}
PLOTS = ("skymap.png", "partition_info.png")
_ALT_SKYMAP = re.compile(r"^skymap\.(\d+)\.fits$")
_PROPERTY_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]*$")
# written by healforge itself (or by the dedicated options): not settable with --property
MANAGED_PROPERTIES = frozenset(
    {
        "obs_collection",
        "dataproduct_type",
        Key.NROWS,
        Key.COL_RA,
        Key.COL_DEC,
        Key.COL_ID,
        Key.COL_HEALPIX,
        Key.COL_HEALPIX_ORDER,
        Key.COLS_SORT,
        Key.COLS_DEFAULT,
        Key.NPIX_SUFFIX,
        Key.ORDER,
        Key.MAX_ROWS,
        Key.ESTSIZE,
        Key.SKYMAP_ORDER,
        Key.SKYMAP_ALT_ORDERS,
        Key.VERSION,
        "moc_sky_fraction",
    }
)


class OutputsError(HealforgeError, ValueError):
    """An optional-output choice that cannot be honoured (bad order, property or column)."""


@dataclass
class Outputs:
    """Which optional outputs a catalog has.

    Attributes
    ----------
    skymap_alt_orders
        Orders K of the extra ``skymap.K.fits`` maps.
    thumbnail, per_partition_stats
        Write ``data_thumbnail.parquet`` / ``per_partition_statistics.parquet``.
    summaries
        Summary formats: ``"markdown"`` (``README.md``) and/or ``"html"`` (``index.html``).
    plots
        Plot files (``skymap.png``, ``partition_info.png``).
    default_columns, properties
        ``hats_cols_default`` and extra properties (used at import; the properties file keeps them).
    """

    skymap_alt_orders: list[int] = field(default_factory=list)
    thumbnail: bool = False
    per_partition_stats: bool = False
    summaries: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    default_columns: list[str] | None = None
    properties: dict[str, str] = field(default_factory=dict)

    def hats_properties(self) -> dict[str, str]:
        """The properties these choices add to ``hats.properties``."""
        out = dict(self.properties)
        if self.skymap_alt_orders:
            out[Key.SKYMAP_ALT_ORDERS] = " ".join(map(str, self.skymap_alt_orders))
        if self.default_columns:
            out[Key.COLS_DEFAULT] = " ".join(self.default_columns)
        return out


def parse_property(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (as given to ``--property``) -> ``(key, value)``."""
    key, sep, value = text.partition("=")
    if not sep:
        raise OutputsError(f"property {text!r} is not KEY=VALUE")
    return key.strip(), value.strip()


def import_outputs(
    *,
    skymap_order: int,
    skymap_alt_orders: Iterable[int] = (),
    thumbnail: bool = False,
    per_partition_stats: bool = False,
    summary: bool = False,
    default_columns: Sequence[str] | None = None,
    properties: dict[str, str] | None = None,
    plots: bool = False,
) -> Outputs:
    """Check the optional-output options of an import and return them as :class:`Outputs`.

    Raises
    ------
    OutputsError
        For an alt order outside ``0..skymap_order``, a property healforge writes itself or with
        a malformed key or value, or a default column name hats cannot store.
    """
    orders = sorted({int(k) for k in skymap_alt_orders})
    for k in orders:
        if not 0 <= k <= skymap_order:
            raise OutputsError(
                f"skymap alt order {k} is outside 0..{skymap_order} (the skymap order, which is the "
                "highest order of the import)"
            )
    props = {}
    for key, value in (properties or {}).items():
        key, value = str(key), str(value)
        if not _PROPERTY_KEY.match(key):
            raise OutputsError(f"property key {key!r} is not a valid name (letters, digits, _ . -)")
        if key in MANAGED_PROPERTIES:
            hint = {
                Key.COLS_DEFAULT: " (use --default-columns)",
                Key.SKYMAP_ALT_ORDERS: " (use --skymap-alt-orders)",
            }
            raise OutputsError(f"property {key!r} is written by healforge itself{hint.get(key, '')}")
        if "\n" in value or "\r" in value:
            raise OutputsError(f"property {key!r} has a line break in its value")
        props[key] = value
    columns = None
    if default_columns:
        columns = list(dict.fromkeys(default_columns))
        for col in columns:
            if not col or re.search(r"[\s,;]", col):
                raise OutputsError(
                    f"default column {col!r} cannot be stored in hats_cols_default (spaces, commas and "
                    "semicolons separate the names there)"
                )
    return Outputs(
        skymap_alt_orders=orders,
        thumbnail=bool(thumbnail),
        per_partition_stats=bool(per_partition_stats),
        summaries=["markdown"] if summary else [],
        plots=list(PLOTS) if plots else [],
        default_columns=columns,
        properties=props,
    )


def check_columns(outputs: Outputs, names: Sequence[str]) -> None:
    """The default columns must be columns of the catalog (``names``)."""
    missing = [c for c in outputs.default_columns or () if c not in names and c != SPATIAL_INDEX_COLUMN]
    if missing:
        raise BadInputError(
            f"default column(s) {', '.join(missing)} not in the inputs; available columns: {', '.join(names)}",
            column=missing[0],
        )


def record(root: str | AnyPath, outputs: Outputs) -> None:
    """Keep the choices in ``.healforge/outputs.json`` for the changes to come."""
    layout.atomic_write_text(as_path(root) / STATE_DIR / RECORD, json.dumps(asdict(outputs), indent=1))


def recorded(root: str | AnyPath) -> Outputs:
    """The choices recorded at import (none for a catalog made elsewhere)."""
    path = as_path(root) / STATE_DIR / RECORD
    return Outputs(**json.loads(path.read_text())) if path.exists() else Outputs()


def present(root: str | AnyPath) -> Outputs:
    """The optional outputs a catalog has: recorded ones plus those found on disk."""
    root = as_path(root)
    out = recorded(root)
    props = layout.read_properties(root)
    orders = set(out.skymap_alt_orders)
    orders.update(int(k) for k in re.split(r"[\s,;]+", props.get(Key.SKYMAP_ALT_ORDERS, "")) if k)
    orders.update(int(m.group(1)) for p in root.iterdir() if (m := _ALT_SKYMAP.match(p.name)))
    out.skymap_alt_orders = sorted(orders)
    out.thumbnail = out.thumbnail or (root / THUMBNAIL).exists()
    out.per_partition_stats = out.per_partition_stats or (root / STATISTICS).exists()
    out.summaries = [f for f in SUMMARIES if f in out.summaries or _is_generated_summary(root / SUMMARIES[f])]
    out.plots = [p for p in PLOTS if p in out.plots or (root / p).exists()]
    return out


def _is_generated_summary(path: AnyPath) -> bool:
    """Whether ``path`` is a summary written by hats (a hand-written README is left alone)."""
    if not path.is_file():
        return False
    text = path.read_text(errors="replace")
    if path.suffix == ".md":
        return bool(re.search(r"^# .+ HATS Catalog\s*$", text, re.M)) and "### Catalog metadata" in text
    return bool(re.search(r"<title>.+ HATS Catalog</title>", text))


def write_at_import(root: str | AnyPath, outputs: Outputs) -> list[str]:
    """Record the import's choices and write its optional outputs; returns the files written."""
    record(root, outputs)
    return refresh(root)


def refresh(root: str | AnyPath, histogram: np.ndarray | None = None) -> list[str]:
    """Regenerate every optional output of a catalog from the data and metadata now in place.

    Called last when a catalog is written or changed (after the properties). Alt-order skymaps
    whose order exceeds the skymap order are removed; ``hats_skymap_alt_orders`` is set to the
    orders written.

    Parameters
    ----------
    root
        The catalog.
    histogram
        Its row-count map at the skymap order (default: read from the catalog).

    Returns
    -------
    list[str]
        Names of the files written, relative to ``root``.
    """
    root = as_path(root)
    want = present(root)
    if not (
        want.skymap_alt_orders or want.thumbnail or want.per_partition_stats or want.summaries or want.plots
    ):
        return []
    props = layout.read_properties(root)
    state = root / STATE_DIR
    for old in state.glob(".outputs-*"):
        storage.rmtree(old)
    scratch = workfiles.scratch_dir(root, f"{STATE_DIR}/.outputs-{uuid.uuid4().hex}")
    scratch.mkdir(parents=True)
    written: list[str] = []
    try:
        written += _skymaps(root, scratch, want.skymap_alt_orders, histogram, props)
        if want.thumbnail or want.per_partition_stats:
            from hats.io.parquet_metadata import write_parquet_metadata

            write_parquet_metadata(
                root,
                output_path=str(scratch),
                order_by_healpix=False,
                create_metadata=False,
                create_thumbnail=want.thumbnail,
                thumbnail_threshold=int(props.get(Key.MAX_ROWS) or 1_000_000),
                create_per_partition_stats=want.per_partition_stats,
            )
            for name, wanted in ((THUMBNAIL, want.thumbnail), (STATISTICS, want.per_partition_stats)):
                if wanted:
                    storage.copy_file(scratch / name, root / name)
                    written.append(name)
        failpoint("Outputs", len(written))  # crash tests
        # the summaries and plots read the files above, so they come last
        for kind in want.summaries:
            _summary(root, scratch, kind)
            written.append(SUMMARIES[kind])
        for name in want.plots:
            _plot(root, scratch, name)
            written.append(name)
        failpoint("Outputs", len(written))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return written


def _skymaps(root: AnyPath, scratch: Path, orders: list[int], histogram, props: dict) -> list[str]:
    """Write ``skymap.K.fits`` for the valid orders, remove the others, fix the property."""
    if not orders and Key.SKYMAP_ALT_ORDERS not in props:
        return []
    from hats.io.file_io import write_fits_image

    histogram = layout.read_histogram(root) if histogram is None else np.asarray(histogram, dtype=np.int64)
    skymap_order = int(np.log2(len(histogram) // 12) // 2)
    valid = [k for k in orders if k <= skymap_order]
    written = []
    for k in valid:
        name = f"skymap.{k}.fits"
        write_fits_image(histogram.reshape(12 * 4**k, -1).sum(axis=1), scratch / name)
        storage.copy_file(scratch / name, root / name)
        written.append(name)
    for p in root.iterdir():
        if (m := _ALT_SKYMAP.match(p.name)) and int(m.group(1)) not in valid:
            p.unlink()
    value = " ".join(map(str, valid)) or None
    if props.get(Key.SKYMAP_ALT_ORDERS) != value:
        fields = {k: v for k, v in props.items() if k != Key.ESTSIZE}
        fields[Key.SKYMAP_ALT_ORDERS] = value
        layout.write_properties(root, **fields)
    return written


def _summary(root: AnyPath, scratch: Path, kind: str) -> None:
    """hats' catalog summary (``generate_summary``, through a :class:`~healforge.hats.summary.SummaryView`
    that caps the density map's order), written atomically."""
    from healforge.hats.summary import summary_text, summary_view

    metadata = None
    if not layout.metadata_file(root).exists() and not (root / STATISTICS).exists():
        # hats takes the column statistics from _metadata, which a catalog with several files in
        # a pixel does not have: the view reads them from one written to the scratch directory.
        from hats.io.parquet_metadata import write_parquet_metadata

        write_parquet_metadata(root, output_path=str(scratch / "meta"))
        metadata = str(layout.metadata_file(scratch / "meta"))
    text = summary_text(summary_view(root, scratch / f"view-{kind}", metadata), kind)
    target = scratch / SUMMARIES[kind]
    target.write_text(text)
    storage.copy_file(target, root / SUMMARIES[kind])


def write_plots(root: str | AnyPath, folder: str | AnyPath, names: Sequence[str] = PLOTS) -> list[str]:
    """hats-import's ``skymap.png`` and ``partition_info.png`` of catalog ``root``, written to
    ``folder``; returns their paths."""
    folder = as_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scratch = storage.local_scratch() / f"healforge-plots-{uuid.uuid4().hex[:8]}"
    scratch.mkdir(parents=True)
    try:
        for name in names:
            _plot(as_path(root), scratch, name, folder / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return [str(folder / n) for n in names]


def _plot(root: AnyPath, scratch: Path, name: str, target_path: AnyPath | None = None) -> None:
    """``skymap.png`` (density) or ``partition_info.png`` (partitions), as hats-import draws them."""
    import matplotlib.pyplot as plt
    from hats import read_hats

    catalog = read_hats(root)
    if name == "skymap.png":
        from matplotlib.colors import LogNorm

        from healforge.hats.summary import plot_density_capped

        fig, _ = plot_density_capped(catalog, norm=LogNorm(), edgecolors="face")
    else:
        fig, _ = catalog.plot_pixels()
    target = scratch / name
    fig.savefig(target, format="png", bbox_inches="tight")
    plt.close(fig)
    storage.copy_file(target, target_path if target_path is not None else root / name)


__all__ = [
    "Outputs",
    "OutputsError",
    "check_columns",
    "import_outputs",
    "parse_property",
    "present",
    "record",
    "recorded",
    "refresh",
    "write_at_import",
    "write_plots",
]

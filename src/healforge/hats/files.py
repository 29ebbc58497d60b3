"""HATS catalog-level files written without importing hats (about 1.5 s of imports, most of a
small job): ``hats.properties``, ``partition_info.csv``, ``dataset/_metadata`` and
``_common_metadata``, and the skymap FITS files, each in the form hats itself writes and reads
(checked against hats' writers in ``tests/test_hats_layout.py``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pyarrow.parquet as pq

from healforge.hats.keys import Key
from healforge.io import storage
from healforge.io.storage import AnyPath, as_path
from healforge.pixel import index29_range

_FITS_BLOCK = 2880
_CARD = 80


def breadth_first_order(pixels: Sequence[tuple[int, int]]) -> np.ndarray:
    """Indices that sort ``(order, pixel)`` pairs breadth-first, as hats orders partitions (by the
    first descendant at the deepest order; stable)."""
    if not len(pixels):
        return np.empty(0, dtype=np.int64)
    orders = np.array([o for o, _ in pixels], dtype=np.int64)
    npix = np.array([p for _, p in pixels], dtype=np.int64)
    return np.argsort(index29_range(npix, orders)[0], kind="stable")


def partition_info_text(pixels: Sequence[tuple[int, int]]) -> str:
    """``partition_info.csv``: header ``Norder,Npix``, pixels breadth-first."""
    rows = [pixels[i] for i in breadth_first_order(pixels)]
    return "Norder,Npix\n" + "".join(f"{int(o)},{int(p)}\n" for o, p in rows)


#: Properties hats requires, by ``dataproduct_type`` (besides ``obs_collection``).
REQUIRED_PROPERTIES = {
    "object": (Key.COL_RA, Key.COL_DEC),
    "source": (Key.COL_RA, Key.COL_DEC),
    "margin": (Key.PRIMARY_TABLE_URL, Key.MARGIN_THRESHOLD),
    "index": (Key.PRIMARY_TABLE_URL, Key.INDEX_COLUMN),
}
_LISTS = (Key.COLS_SORT, Key.COLS_DEFAULT, Key.SKYMAP_ALT_ORDERS, Key.INDEX_EXTRA_COLUMN)


def properties_text(fields: dict) -> str:
    """A java-style properties file as hats writes it (``key=value`` lines after a comment; list
    properties space-delimited).

    Raises
    ------
    ValueError
        When a property hats requires for the ``dataproduct_type`` is missing, or a value holds
        a line break.
    """
    fields = {k: v for k, v in fields.items() if v is not None}
    kind = fields.get("dataproduct_type")
    missing = [
        k
        for k in ("obs_collection", "dataproduct_type", *REQUIRED_PROPERTIES.get(kind, ()))
        if k not in fields
    ]
    if missing:
        raise ValueError(f"properties of a {kind} catalog miss {', '.join(missing)}")
    lines = ["#HATS catalog"]
    for key, value in fields.items():
        if key in _LISTS and isinstance(value, str):
            value = re.split(r"[\s,;]+", value.strip())
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        text = str(value)
        if "\n" in text or "\r" in text:
            raise ValueError(f"property {key} holds a line break: {text!r}")
        lines.append(f"{key}={text}")
    return "\n".join(lines) + "\n"


def write_parquet_metadata(root: str | AnyPath, files: Sequence[AnyPath], pixels=None) -> int:
    """``dataset/_metadata`` (every file's row groups, file paths relative to ``dataset/``, in the
    order of ``pixels``' breadth-first sort when given, else as listed) and ``_common_metadata``
    (the first file's schema); returns the total rows."""
    dataset = as_path(root) / "dataset"
    if not files:
        raise ValueError(f"no data files in {dataset}")
    metas = []
    for f in files:
        with f.open("rb") as handle:
            meta = pq.read_metadata(handle)
        meta.set_file_path("/".join(f.parts[len(dataset.parts) :]))
        metas.append(meta)
    if pixels is not None:
        metas = [metas[i] for i in breadth_first_order(pixels)]
    with files[0].open("rb") as handle:
        schema = pq.read_schema(handle)
    total = int(sum(m.num_rows for m in metas))
    combined = metas[0]  # gathers every row group (so its num_rows grows)
    for meta in metas[1:]:
        combined.append_row_groups(meta)
    with storage.atomic_output(dataset / "_metadata") as tmp, open(tmp, "wb") as out:
        combined.write_metadata_file(out)
    with storage.atomic_output(dataset / "_common_metadata") as tmp:
        pq.write_metadata(schema, tmp)
    return total


def _card(key: str, value) -> str:
    if isinstance(value, bool):
        text = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int | np.integer):
        text = f"{int(value):>20}"
    else:
        text = "'" + f"{value:<8}".replace("'", "''") + "'"
    return f"{key:<8}= {text}".ljust(_CARD)


def _block(cards: list[str]) -> bytes:
    text = "".join(cards) + "END".ljust(_CARD)
    return text.ljust(-(-len(text) // _FITS_BLOCK) * _FITS_BLOCK).encode("ascii")


def skymap_fits(histogram: np.ndarray) -> bytes:
    """A HEALPix map as cdshealpix writes it (and hats reads it): a FITS binary table of 64-bit
    counts, implicit (one value per pixel) or, when more than half the pixels are empty,
    explicit (``PIXEL``, ``VALUE`` of the others)."""
    histogram = np.asarray(histogram, dtype=np.int64)
    npix = len(histogram)
    nside = int(round(np.sqrt(npix // 12)))
    if 12 * nside * nside != npix:
        raise ValueError(f"{npix} values are no HEALPix map")
    explicit = np.count_nonzero(histogram == 0) / npix > 0.5
    cards = [_card("XTENSION", "BINTABLE"), _card("BITPIX", 8), _card("NAXIS", 2)]
    if explicit:
        pixels = np.flatnonzero(histogram)
        data = np.empty(len(pixels), dtype=[("PIXEL", ">i8"), ("VALUE", ">i8")])
        data["PIXEL"], data["VALUE"] = pixels, histogram[pixels]
        columns = [("TTYPE1", "PIXEL"), ("TTYPE2", "VALUE"), ("TFORM1", "K"), ("TFORM2", "K")]
        scheme = [("INDXSCHM", "EXPLICIT"), ("ORDERING", "NESTED"), ("COORDSYS", "C")]
        scheme += [("EXTNAME", "xtension"), ("NSIDE", nside), ("OBS_NPIX", len(pixels))]
    else:
        data = histogram.astype(">i8").view([("VALUE", ">i8")])
        columns = [("TTYPE1", "VALUE"), ("TFORM1", "K")]
        scheme = [("INDXSCHM", "IMPLICIT"), ("ORDERING", "NESTED"), ("NSIDE", nside)]
        scheme += [("FIRSTPIX", 0), ("LASTPIX", npix - 1), ("OBJECT", "FULLSKY"), ("COORDSYS", "C")]
        scheme += [("EXTNAME", "xtension")]
    cards += [_card("NAXIS1", data.dtype.itemsize), _card("NAXIS2", len(data))]
    cards += [_card("PCOUNT", 0), _card("GCOUNT", 1), _card("TFIELDS", len(data.dtype.names))]
    cards += [_card(k, v) for k, v in columns + [("PIXTYPE", "HEALPIX"), *scheme]]
    cards.append(_card("CREATOR", "healforge"))
    primary = _block([_card("SIMPLE", True), _card("BITPIX", 8), _card("NAXIS", 0), _card("EXTEND", True)])
    body = memoryview(np.ascontiguousarray(data)).cast("B")
    return b"".join([primary, _block(cards), body, b"\0" * (-len(body) % _FITS_BLOCK)])


_FITS_TYPES = {"K": ">i8", "J": ">i4", "I": ">i2", "B": "u1", "D": ">f8", "E": ">f4"}


def _header(data: bytes, start: int) -> tuple[dict[str, object], int]:
    """The cards of the FITS header at ``start`` and where its data begins."""
    cards: dict[str, object] = {}
    pos = start
    while pos < len(data):
        block = data[pos : pos + _FITS_BLOCK].decode("ascii")
        pos += _FITS_BLOCK
        for i in range(0, _FITS_BLOCK, 80):
            card = block[i : i + 80]
            key = card[:8].strip()
            if key == "END":
                return cards, pos
            if card[8:10] == "= ":
                value = card[10:].split("/", 1)[0].strip() if "'" not in card[10:] else card[10:]
                if value.startswith("'"):
                    value = value[1:].split("'", 1)[0].strip()
                elif value in ("T", "F"):
                    value = value == "T"
                else:
                    try:
                        value = int(value)
                    except ValueError:
                        value = float(value)
                cards[key] = value
    raise ValueError("FITS header without END")


def read_skymap_fits(data: bytes) -> np.ndarray | None:
    """The HEALPix map of a skymap FITS file (as :func:`skymap_fits`, hats or healpy write it:
    implicit or explicit, one or many values per table row); ``None`` for a layout it does not
    know (the caller then uses a general FITS reader)."""
    primary, pos = _header(data, 0)
    if primary.get("NAXIS", 0) != 0:
        return None
    head, pos = _header(data, pos)
    fields = []
    for k in range(1, int(head.get("TFIELDS", 0)) + 1):
        form = str(head.get(f"TFORM{k}", ""))
        count, code = (int(form[:-1]) if form[:-1] else 1), form[-1:]
        if code not in _FITS_TYPES:
            return None
        fields.append((str(head.get(f"TTYPE{k}", f"F{k}")), _FITS_TYPES[code], (count,) if count > 1 else ()))
    dtype = np.dtype(fields)
    rows = int(head["NAXIS2"])
    if dtype.itemsize != head.get("NAXIS1"):
        return None
    table = np.frombuffer(data, dtype=dtype, count=rows, offset=pos)
    nside = int(head["NSIDE"])
    if str(head.get("INDXSCHM", "IMPLICIT")).upper() == "EXPLICIT":
        out = np.zeros(12 * nside * nside, dtype=np.int64)
        out[table[dtype.names[0]].reshape(-1).astype(np.int64)] = table[dtype.names[1]].reshape(-1)
        return out
    values = table[dtype.names[0]].reshape(-1)
    return values[: 12 * nside * nside].astype(np.int64)


__all__ = [
    "breadth_first_order",
    "partition_info_text",
    "properties_text",
    "read_skymap_fits",
    "skymap_fits",
    "write_parquet_metadata",
]

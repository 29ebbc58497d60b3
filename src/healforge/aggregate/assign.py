"""Per-batch assignment of rows (points or footprints) to cells, with bad-input handling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from healforge.aggregate import footprints as fp
from healforge.aggregate.coords import Rejects, positions
from healforge.errors import BadInputError, OptionError
from healforge.pixel import bad_coordinate_mask, lonlat_to_pixel, to_parent, wrap_lon
from healforge.pixel.latitude import geodetic_to_authalic


@dataclass
class Assignment:
    """Rows of a batch assigned to cells: ``row`` (index within the batch), ``cell``, ``weight``."""

    row: np.ndarray
    cell: np.ndarray
    weight: np.ndarray


@dataclass
class Spec:
    """How rows map to cells."""

    lon: str | None = None
    lat: str | None = None
    geometry: str | None = None
    mode: str = "strict"
    latitude: str = "spherical"
    on_bad_rows: str = "error"

    def __post_init__(self):
        if self.geometry is None and (self.lon is None or self.lat is None):
            raise OptionError("give lon and lat columns, or a geometry column")
        if self.geometry is not None and (self.lon is not None or self.lat is not None):
            raise OptionError("give either lon/lat columns or a geometry column, not both")
        if self.mode not in fp.MODES:
            raise OptionError(f"mode must be one of {', '.join(fp.MODES)}; got {self.mode!r}")
        self.mode = fp.MODES[self.mode]

    @property
    def columns(self) -> list[str]:
        return [self.geometry] if self.geometry else [self.lon, self.lat]


def assign_batch(
    table: pa.Table,
    spec: Spec,
    orders: list[int],
    *,
    path: str | None,
    first_row: int,
    rejects: Rejects | None,
) -> tuple[np.ndarray, dict[int, Assignment]]:
    """Assign a batch at each of ``orders``; returns (indices of accepted rows, order -> assignment)."""
    if spec.geometry is None:
        good, lon, lat = positions(
            table,
            spec.lon,
            spec.lat,
            path=path,
            first_row=first_row,
            on_bad_rows=spec.on_bad_rows,
            latitude=spec.latitude,
            rejects=rejects,
        )
        top = max(orders)
        pix = lonlat_to_pixel(lon, lat, top)
        ones = np.ones(good.size)
        return good, {o: Assignment(good, to_parent(pix, top, o), ones) for o in orders}
    good, rings = _footprints(table, spec, path, first_row, rejects)
    out = {}
    if good.size == 0:
        e = np.empty(0, np.int64)
        return good, {o: Assignment(e, e.copy(), np.empty(0)) for o in orders}
    if spec.mode == "strict":
        top = max(orders)
        pix = fp.strict_cells(rings, top)
        ones = np.ones(good.size)
        for o in orders:
            out[o] = Assignment(good, to_parent(pix, top, o), ones)
    else:
        for o in orders:
            poly, cell, w = fp.fuzzy_cells(rings, o)
            out[o] = Assignment(good[poly], cell, w)
    return good, out


def _footprints(table, spec, path, first_row, rejects):
    import shapely

    col = spec.geometry
    if col not in table.column_names:
        raise BadInputError(
            f"geometry column {col!r} not found; available columns: {', '.join(table.column_names)}",
            path=path,
            column=col,
        )
    arr = table.column(col).combine_chunks()
    n = len(arr)
    geoms = np.full(n, None, dtype=object)
    valid = ~np.asarray(arr.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    if pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type):
        raw = np.asarray(arr.to_pylist(), dtype=object)
        geoms[valid] = shapely.from_wkb(raw[valid], on_invalid="ignore")
    elif pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        raw = np.asarray(arr.to_pylist(), dtype=object)
        geoms[valid] = shapely.from_wkt(raw[valid], on_invalid="ignore")
    else:
        raise BadInputError(
            f"geometry column {col!r} must hold WKB (binary) or WKT (string), found {arr.type}",
            path=path,
            column=col,
        )
    reason = np.full(n, "", dtype=object)
    isnull = np.equal(geoms, None)
    reason[isnull] = "null or unparsable geometry"
    ok = ~isnull
    gt = np.full(n, -1)
    gt[ok] = shapely.get_type_id(geoms[ok])
    notpoly = ok & (gt != 3)
    reason[notpoly] = "not a Polygon"
    ok &= ~notpoly
    empty = np.zeros(n, bool)
    empty[ok] = shapely.is_empty(geoms[ok])
    reason[empty] = "empty geometry"
    ok &= ~empty
    idx = np.flatnonzero(ok)
    rings = fp.rings_from_shapely(geoms[idx]) if idx.size else _no_rings()
    # validity in the lon/lat plane: strictly convex rings are valid; shapely judges the rest
    invalid = np.zeros(idx.size, bool)
    check = np.flatnonzero(~fp.simple_convex(rings))
    if check.size:
        g = geoms[idx[check]]
        bad = ~shapely.is_valid(g) | (shapely.area(g) <= 0)
        # planar lon/lat validity fails for valid footprints across the antimeridian: judge
        # those in their own gnomonic plane
        recheck = check[bad]
        invalid[recheck[~fp.valid_on_sphere(g[bad])]] = True
    reason[idx[invalid]] = "invalid geometry"
    badv = np.zeros(idx.size, bool)
    np.logical_or.at(badv, rings.vertex_poly, bad_coordinate_mask(rings.lon, rings.lat))
    badv &= ~invalid
    reason[idx[badv]] = "vertex coordinate out of range"
    drop = invalid | badv
    if drop.any():
        rings = rings.subset(np.flatnonzero(~drop))
    rings = fp.Rings(
        wrap_lon(rings.lon),
        geodetic_to_authalic(rings.lat) if spec.latitude == "authalic" else rings.lat,
        rings.ring_off,
        rings.ring_sign,
        rings.poly_ring_off,
    )
    kept = idx[~drop]
    big = ~fp.footprint_sizes_ok(rings)
    reason[kept[big]] = f"footprint larger than {fp.MAX_FOOTPRINT_DEG:g} degrees from its centre"
    flat = fp.zero_area(rings) & ~big
    reason[kept[flat]] = "zero area on the sphere"
    big |= flat
    if big.any():
        rings = rings.subset(np.flatnonzero(~big))
    ok[idx[drop]] = False
    ok[kept[big]] = False
    bad_rows = np.flatnonzero(~ok)
    if bad_rows.size:
        if spec.on_bad_rows != "quarantine":
            i = int(bad_rows[0])
            g = geoms[i]
            val = None if g is None else shapely.to_wkt(g, rounding_precision=6)[:120]
            raise BadInputError(
                f"bad footprint: {reason[i]} ({bad_rows.size} bad row(s) in this batch; use "
                "on_bad_rows='quarantine' / --on-bad-rows quarantine to set them aside)",
                path=path,
                column=col,
                row=first_row + i,
                value=val,
            )
        if rejects is not None:
            rejects.add(table, bad_rows, path, reason[bad_rows], first_row)
    return np.flatnonzero(ok), rings


def _no_rings() -> fp.Rings:
    return fp.Rings(np.empty(0), np.empty(0), np.zeros(1, np.int64), np.empty(0), np.zeros(1, np.int64))

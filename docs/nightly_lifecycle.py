"""A survey's nightly nested catalog, replayed on generated data (see docs/nightly-lifecycle.md).

Night 0 becomes a nested catalog (objects with their sources and forced sources as two nested
columns, each sorted by time, in the layout lsdb reads and writes: a struct of lists); seven
nightly increments follow (the first also builds the index lsdb's ``id_search`` reads), then a
weekly consolidation. After every step lsdb finds one object with ``id_search`` (loading only
some nested sub-columns) and its light curve is printed; at the end a cone search around it.

After every step :func:`conformance` also checks lsdb's reads against a brute-force answer from
the raw nightly files (never from the catalog): a cone search with a nested sub-column, the
first partition, a partial load of the other nested column over the whole catalog, and
``id_search`` (from night 1 on, when the catalog has its index); after the consolidation, one
row per object holding its latest version.

    python docs/nightly_lifecycle.py --size 20000 --out /tmp/nightly
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import lsdb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from hats.pixel_math.spatial_index import compute_spatial_index

import healforge
from healforge.demo import nightly_batches

ID, TIME = "diaObjectId", "midpointMjdTai"


COLUMNS = [
    ID,
    "ra",
    "dec",
    "validityStart",
    "sources.diaSourceId",
    f"sources.{TIME}",
    "sources.psfFlux",
    f"forced.{TIME}",
]


def light_curve(
    catalog: Path, object_id: int, indexed: bool
) -> tuple[int, pd.DataFrame, pd.DataFrame, tuple[float, float]]:
    """Rows of the catalog, and the object's sources and forced sources, read by lsdb (with
    ``id_search`` through the index when there is one), and its latest position; only the
    columns listed are loaded."""
    cat = lsdb.open_catalog(str(catalog), columns=COLUMNS)
    n = int(cat.hc_structure.catalog_info.total_rows)
    if indexed:  # the first change made the catalog a collection holding the index: lsdb attaches it
        found = cat.id_search(values={ID: object_id}).compute()
    else:
        found = cat.compute()
    rows = found[found[ID] == object_id].sort_values("validityStart")
    # before a consolidation an object can have one row per night; each row's lists hold the
    # sources of that night, so the light curve is their union (the consolidation makes it one row)
    sources = pd.concat(list(rows["sources"])).sort_values(TIME)
    forced = pd.concat(list(rows["forced"])).sort_values(TIME)
    return n, sources, forced, (float(rows["ra"].iloc[-1]), float(rows["dec"].iloc[-1]))


CONE = (37.5, 0.0, 2.5 * 3600)  # ra, dec, radius arcsec: inside the generated survey area


def _in_cone(ra, dec, ra0: float, dec0: float, radius_arcsec: float) -> np.ndarray:
    r1, d1, r0, d0 = map(np.radians, (np.asarray(ra, float), np.asarray(dec, float), ra0, dec0))
    h = np.sin((d1 - d0) / 2) ** 2 + np.cos(d1) * np.cos(d0) * np.sin((r1 - r0) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(h, 0, 1)))) * 3600 <= radius_arcsec


def _times(frame: pd.DataFrame, column: str, consolidated: bool) -> dict[int, list[float]]:
    """``{object: times of the nested column}`` read by lsdb: one row per object once
    consolidated (its list must be in time order as stored), else the union of its rows."""
    out: dict[int, list[float]] = {}
    for obj, rows in zip(frame[ID].tolist(), frame[column], strict=True):
        out.setdefault(int(obj), []).extend(rows[TIME].tolist())
    if consolidated:
        assert frame[ID].is_unique, "an object has several rows after the consolidation"
        return out
    return {k: sorted(v) for k, v in out.items()}


def _same(got: list[float], want: list[float]) -> bool:
    return len(got) == len(want) and np.allclose(got, want)


def conformance(catalog: Path, raw: list[dict[str, str]], indexed: bool, consolidated: bool) -> str:
    """lsdb's reads of ``catalog`` against a brute force over the raw files ``raw`` applied so
    far (objects keep their position; orphan sources belong to no object and are left out)."""
    objects = pd.concat([pq.read_table(b["objects"]).to_pandas() for b in raw])
    latest = objects.sort_values("validityStart").drop_duplicates(ID, keep="last").set_index(ID)
    want = {}
    for kind in ("sources", "forced"):
        src = pd.concat([pq.read_table(b[kind]).to_pandas() for b in raw])
        src = src[src[ID].isin(latest.index)].sort_values([ID, TIME], kind="stable")
        lists = src.groupby(ID)[TIME].apply(list).to_dict()
        want[kind] = {int(i): lists.get(i, []) for i in latest.index}

    ra0, dec0, radius = CONE
    cols = [ID, "ra", "dec", "validityStart", f"sources.{TIME}"]
    cone = lsdb.open_catalog(str(catalog), columns=cols).cone_search(ra0, dec0, radius).compute()
    inside = latest.index[_in_cone(latest["ra"], latest["dec"], ra0, dec0, radius)]
    assert set(cone[ID]) == set(inside) and len(inside) > 0, "cone search"
    got = _times(cone, "sources", consolidated)
    assert all(_same(got[i], want["sources"][i]) for i in inside), "sources in the cone"

    cat = lsdb.open_catalog(str(catalog), columns=[ID, f"forced.{TIME}"])
    pixel = cat.get_healpix_pixels()[0]
    h = compute_spatial_index(latest["ra"].to_numpy(), latest["dec"].to_numpy()) >> 2 * (29 - pixel.order)
    assert set(cat.partitions[0].compute()[ID]) == set(latest.index[h == pixel.pixel]), "partitions[0]"
    got = _times(cat.compute(), "forced", consolidated)
    assert got.keys() == want["forced"].keys(), "objects of the catalog"
    assert all(_same(got[i], w) for i, w in want["forced"].items()), "forced sources"

    done = "cone search, partitions[0], forced.{TIME} of every object"
    if indexed:  # the collection's index: lsdb attaches it
        ids = [int(i) for i in latest.index[:: max(1, len(latest) // 5)]] + [-1]
        found = lsdb.open_catalog(str(catalog)).id_search(values={ID: ids}).compute()
        assert set(found[ID]) == set(ids[:-1]), "id_search"
        done += ", id_search"
    if consolidated:
        full = lsdb.open_catalog(str(catalog), columns=[ID, "validityStart"]).compute().set_index(ID)
        assert len(full) == len(latest) and full.index.is_unique, "one row per object"
        want_start = latest["validityStart"].loc[full.index].to_numpy()
        assert (full["validityStart"].to_numpy() == want_start).all(), "latest version"
        done += ", latest version of each object"
    return "conformance ok: " + done.replace("{TIME}", TIME)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000, help="number of objects over the week")
    parser.add_argument("--out", default="nightly_lifecycle_out", help="work directory (replaced)")
    parser.add_argument("--nights", type=int, default=7)
    parser.add_argument("--workers", type=int, default=None, help="Dask workers (default: in-process)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)
    engine = {"synchronous": args.workers is None, "workers": args.workers, "quiet": True}
    threshold = max(200, args.size // 20)

    batches = nightly_batches(out / "alerts", args.size, args.nights, orphans=3)
    # night 0: latest version per object, imported, then sources and forced sources nested
    first = pq.read_table(batches[0]["objects"]).to_pandas()
    first.sort_values("validityStart").drop_duplicates(ID, keep="last").to_parquet(
        out / "objects0.parquet", index=False
    )
    healforge.import_catalog([str(out / "objects0.parquet")], out / "objects", threshold=threshold, **engine)
    for kind in ("sources", "forced"):
        healforge.import_catalog([batches[0][kind]], out / kind, threshold=threshold * 10, **engine)
    healforge.nest(
        out / "objects", out / "sources", out / "step", on=ID, as_name="sources", sort_by=TIME, **engine
    )
    catalog = out / "dia_object_lc"
    healforge.nest(out / "step", out / "forced", catalog, on=ID, as_name="forced", sort_by=TIME, **engine)
    # follow one object observed on night 0
    object_id = int(first[ID].iloc[0])
    n, src, forced, position = light_curve(catalog, object_id, False)
    print(f"night 0: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")
    print("  " + conformance(catalog, batches[:1], indexed=False, consolidated=False))

    orphans = 0
    timings = {}
    for night in range(1, args.nights + 1):
        t0 = time.perf_counter()
        result = healforge.increment(
            catalog,
            batches[night]["objects"],
            {"sources": batches[night]["sources"], "forced": batches[night]["forced"]},
            on=ID,
            latest_by="validityStart",
            batch=f"night{night:02d}",
            on_orphans="quarantine",
            index=ID if night == 1 else None,  # built once, then kept current by every change
            **engine,
        )
        timings[f"night{night}"] = time.perf_counter() - t0
        orphans += sum(result.orphans.values())
        n, src, forced, position = light_curve(catalog, object_id, True)
        print(f"night {night}: {result}")
        print(f"  lsdb: {n} rows; object {object_id}: {len(src)} sources, {len(forced)} forced sources")
        print("  " + conformance(catalog, batches[: night + 1], indexed=True, consolidated=False))

    t0 = time.perf_counter()
    result = healforge.compact(
        catalog,
        ID,
        "validityStart",
        nested_dedupe_on={"sources": "diaSourceId", "forced": "diaForcedSourceId"},
        **engine,
    )
    timings["consolidation"] = time.perf_counter() - t0
    n, src, forced, position = light_curve(catalog, object_id, True)
    print(f"weekly consolidation: {result}")
    print(f"  lsdb: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")
    print(src[["diaSourceId", TIME, "psfFlux"]].tail(5).to_string(index=False))
    print("  " + conformance(catalog, batches, indexed=True, consolidated=True))

    # a cone search of 10 arcsec around the object finds it, with the same light curve
    ra, dec = position  # the object's latest position
    cone = lsdb.open_catalog(str(catalog), columns=COLUMNS).cone_search(ra, dec, 10).compute()
    mine = cone[cone[ID] == object_id]
    assert len(mine) == 1 and mine["sources"].iloc[0]["diaSourceId"].tolist() == src["diaSourceId"].tolist()
    print(f"cone search of 10 arcsec around object {object_id}: {len(cone)} objects")

    # nothing lost: every source of the week is in the catalog, or among the reported orphans
    nested_in = sum(pq.read_table(b[k]).num_rows for b in batches for k in ("sources", "forced"))
    nested_out = sum(result.nested_after.values())
    print(f"sources in {nested_in} = nested {nested_out} + orphans {orphans}")
    assert nested_in == nested_out + orphans
    return {
        "objects": n,
        "nested_in": nested_in,
        "nested_out": nested_out,
        "orphans": orphans,
        "timings": timings,
    }


if __name__ == "__main__":
    main()

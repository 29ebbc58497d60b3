"""A survey's nightly nested catalog, replayed on generated data (see docs/nightly-lifecycle.md).

Night 0 becomes a nested catalog (objects with their sources and forced sources as two nested
columns, each sorted by time, in the layout lsdb reads and writes: a struct of lists); seven
nightly increments follow (the first also builds the index lsdb's ``id_search`` reads), then a
weekly consolidation. After every step lsdb finds one object with ``id_search`` (loading only
some nested sub-columns) and its light curve is printed; at the end a cone search around it.

    python docs/nightly_lifecycle.py --size 20000 --out /tmp/nightly
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import lsdb
import pandas as pd
import pyarrow.parquet as pq

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
    catalog: Path, object_id: int, index: Path | None
) -> tuple[int, pd.DataFrame, pd.DataFrame, tuple[float, float]]:
    """Rows of the catalog, and the object's sources and forced sources, read by lsdb (with
    ``id_search`` through the index when there is one), and its latest position; only the
    columns listed are loaded."""
    cat = lsdb.open_catalog(str(catalog), columns=COLUMNS)
    n = int(cat.hc_structure.catalog_info.total_rows)
    if index is not None:
        found = cat.id_search(values={ID: object_id}, index_catalogs={ID: str(index)}).compute()
    else:
        found = cat.compute()
    rows = found[found[ID] == object_id].sort_values("validityStart")
    # before a consolidation an object can have one row per night; each row's lists hold the
    # sources of that night, so the light curve is their union (the consolidation makes it one row)
    sources = pd.concat(list(rows["sources"])).sort_values(TIME)
    forced = pd.concat(list(rows["forced"])).sort_values(TIME)
    return n, sources, forced, (float(rows["ra"].iloc[-1]), float(rows["dec"].iloc[-1]))


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
    n, src, forced, position = light_curve(catalog, object_id, None)
    print(f"night 0: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")

    orphans = 0
    timings = {}
    index = None
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
        index = catalog.with_name(f"{catalog.name}_{ID}_index")
        n, src, forced, position = light_curve(catalog, object_id, index)
        print(f"night {night}: {result}")
        print(f"  lsdb: {n} rows; object {object_id}: {len(src)} sources, {len(forced)} forced sources")

    t0 = time.perf_counter()
    result = healforge.compact(
        catalog,
        ID,
        "validityStart",
        nested_dedupe_on={"sources": "diaSourceId", "forced": "diaForcedSourceId"},
        **engine,
    )
    timings["consolidation"] = time.perf_counter() - t0
    n, src, forced, position = light_curve(catalog, object_id, index)
    print(f"weekly consolidation: {result}")
    print(f"  lsdb: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")
    print(src[["diaSourceId", TIME, "psfFlux"]].tail(5).to_string(index=False))

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

"""A survey's nightly nested catalog, replayed on generated data (see docs/nightly-lifecycle.md).

Night 0 becomes a nested catalog (objects with their sources and forced sources as two nested
columns, each sorted by time); seven nightly increments follow, then a weekly consolidation.
After every step lsdb reads the catalog and one object's light curve is printed.

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


def light_curve(catalog: Path, object_id: int) -> tuple[int, pd.DataFrame, pd.DataFrame]:
    """Rows lsdb reads, and the object's sources and forced sources (from its latest row)."""
    df = lsdb.open_catalog(str(catalog)).compute()
    rows = df[df[ID] == object_id].sort_values("validityStart")
    # before a consolidation an object can have one row per night; each row's lists hold the
    # sources of that night, so the light curve is their union (the consolidation makes it one row)
    sources = pd.concat(list(rows["sources"])).sort_values(TIME)
    forced = pd.concat(list(rows["forced"])).sort_values(TIME)
    return len(df), sources, forced


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
    n, src, forced = light_curve(catalog, object_id)
    print(f"night 0: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")

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
            **engine,
        )
        timings[f"night{night}"] = time.perf_counter() - t0
        orphans += sum(result.orphans.values())
        n, src, forced = light_curve(catalog, object_id)
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
    n, src, forced = light_curve(catalog, object_id)
    print(f"weekly consolidation: {result}")
    print(f"  lsdb: {n} objects; object {object_id}: {len(src)} sources, {len(forced)} forced sources")
    print(src[["diaSourceId", TIME, "psfFlux"]].tail(5).to_string(index=False))

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

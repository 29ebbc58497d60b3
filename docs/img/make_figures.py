"""Draw the example figures of docs/img (python docs/img/make_figures.py): every plot view.

Synthetic data: a sky survey with a density gradient and two clusters (sky frame), and heights
round the South Pole (a body frame), aggregated with healforge, then drawn with healforge plot.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import healforge
from healforge.maps.plot import plot_map

HERE = Path(__file__).resolve().parent


def main() -> None:
    rng = np.random.default_rng(7)
    n = 400_000
    ra = rng.uniform(0, 360, n)
    dec = np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    k = n // 4
    ra[:k] = np.mod(rng.normal(150, 6, k), 360)
    dec[:k] = np.clip(rng.normal(25, 4, k), -90, 90)
    mag = 18 + 0.02 * np.abs(dec) + rng.normal(0, 0.5, n)
    sky = pa.table({"ra": ra, "dec": dec, "mag": mag})
    m = healforge.aggregate(sky, ["mag"], ["count", "mean", "std"], order=5, lon="ra", lat="dec")
    kw = {"width": 700, "dpi": 80}
    plot_map(m, "mag_count", frame="sky", scale="log", out=HERE / "sky_counts_log.png", **kw)
    plot_map(m, ["mag_mean", "mag_std"], frame="sky", out=HERE / "sky_panels.png", **kw)
    plot_map(m, "mag_count", frame="sky", scale="log", projection="gnomonic", center=(150, 25), extent=40,
             out=HERE / "sky_gnomonic.png", **kw)  # fmt: skip
    lon = rng.uniform(-180, 180, n)
    lat = -90 + np.degrees(np.arccos(rng.uniform(np.cos(np.radians(30)), 1, n)))
    h = 3000 * np.cos(np.radians(lat + 90) * 3) + 200 * np.sin(np.radians(lon * 2)) + rng.normal(0, 20, n)
    ice = pa.table({"lon": lon, "lat": lat, "h": h})
    hm = healforge.aggregate(ice, ["h"], ["mean"], order=6, lon="lon", lat="lat", latitude="authalic")
    plot_map(hm, "h_mean", projection="polar-south", scale="percentile", cmap="terrain",
             out=HERE / "polar_percentile.png", **kw)  # fmt: skip
    plot_map(
        hm, "h_mean", projection="cartesian", center=(0, -75), extent=60, out=HERE / "cartesian.png", **kw
    )
    with tempfile.TemporaryDirectory() as tmp:
        pq.write_table(sky.append_column("id", pa.array(np.arange(n))), f"{tmp}/sky.parquet")
        run = [sys.executable, "-m", "healforge"]
        subprocess.run(
            [*run, "import", f"{tmp}/sky.parquet", "-o", f"{tmp}/cat", "--threshold", "40000", "-q"],
            check=True,
        )
        subprocess.run([*run, "plot", f"{tmp}/cat", "-o", str(HERE)], check=True)


if __name__ == "__main__":
    main()

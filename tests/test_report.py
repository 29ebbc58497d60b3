"""healforge report: one self-contained HTML page, checked against the data and in a browser."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _images(page: str) -> list[np.ndarray]:
    """Every embedded image, decoded (each must be a real PNG)."""
    from PIL import Image

    out = []
    for data in re.findall(r"src='data:image/png;base64,([^']+)'", page):
        with Image.open(io.BytesIO(base64.b64decode(data))) as img:
            assert img.format == "PNG"
            out.append(np.asarray(img.convert("RGB")))
    return out


def _screenshot(page, tmp_path) -> np.ndarray:
    from PIL import Image

    shot = tmp_path / f"{page.stem}.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1200,1600",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    return np.asarray(Image.open(shot).convert("RGB"))


def _colourful(rgb: np.ndarray) -> int:
    """Pixels of a saturated colour (a map's, not text or a broken-image icon)."""
    rgb = rgb.reshape(-1, 3).astype(int)
    return int(((rgb.max(1) - rgb.min(1)) > 60).sum())


@pytest.mark.slow
def test_catalog_and_map_reports(tmp_path):
    rng = np.random.default_rng(5)
    n = 30_000
    data = pa.table(
        {
            "id": np.arange(n),
            "ra": rng.uniform(0, 360, n),
            "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
            "mag": np.where(rng.random(n) < 0.01, np.nan, rng.normal(20, 1, n)),
            "band": pa.array(rng.choice(["g", "r", "i"], n)),
        }
    )
    pq.write_table(data, tmp_path / "in.parquet")
    run_cli("import", tmp_path / "in.parquet", "-o", tmp_path / "survey", "--threshold", "4000", "--margin", "20",
            "--collection", "--index", "id", "-q", "--synchronous")  # fmt: skip
    run_cli("report", tmp_path / "survey", "-o", tmp_path / "survey.html")
    page = (tmp_path / "survey.html").read_text()
    for text in ("Coverage and row density", "Partitions by order", "Collection members", "hats_builder"):
        assert text in page
    assert "30,000" in page and "survey_20arcs" in page and "id (" in page
    # every column with its type and range, from the row-group statistics: the data's own
    for col in ("ra", "dec"):
        v = data.column(col).to_numpy()
        assert f"{v.min():.6g}" in page and f"{v.max():.6g}" in page
    assert re.search(r"<td>band</td><td>(large_)?string</td>", page)
    images = _images(page)
    assert len(images) == 2 and all(_colourful(img) > 10_000 for img in images)
    # a map product
    cfg = tmp_path / "p.yaml"
    cfg.write_text(
        "inputs: [{paths: [in.parquet]}]\ncoordinates: {lon: ra, lat: dec}\nassignment: {order: 3}\n"
        "statistics: {n: {function: count}, m: {function: mean, column: mag}}\n"
        "outputs: {zarr: {path: m.zarr, orders: [3, 1]}}\n"
    )
    run_cli("run", cfg, "--synchronous", "-q")
    run_cli("report", tmp_path / "m.zarr", "-o", tmp_path / "map.html")
    page = (tmp_path / "map.html").read_text()
    assert "Levels" in page and "in.parquet" in page and len(_images(page)) == 2
    assert "<td class='num'>768</td>" in page  # order 3: every cell of the sphere
    if CHROMIUM is None:
        pytest.skip("no chromium to render the pages (Debian package chromium)")
    for name in ("survey.html", "map.html"):
        shot = _screenshot(tmp_path / name, tmp_path)
        assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50  # not blank
        assert _colourful(shot) > 20_000  # the maps are drawn: the embedded images loaded

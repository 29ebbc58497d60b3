"""--plan: the estimate printed before a run, compared with the run itself."""

from __future__ import annotations

import re
import resource
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import run_cli


@pytest.mark.slow
def test_import_plan_matches_the_import(tmp_path):
    rng = np.random.default_rng(8)
    files = []
    for i in range(4):
        n = 300_000
        ra = np.where(rng.random(n) < 0.4, rng.normal(40, 3, n) % 360, rng.uniform(0, 360, n))
        table = pa.table(
            {
                "id": np.arange(i * n, (i + 1) * n),
                "ra": ra,
                "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                "mag": rng.normal(20, 1, n).astype(np.float32),
                "flag": rng.integers(0, 3, n).astype(np.int16),
            }
        )
        files.append(tmp_path / f"in{i}.parquet")
        pq.write_table(table, files[-1])
    common = ["-o", tmp_path / "cat", "--threshold", "100000", "--highest-order", "8", "--workers", "2"]
    plan = run_cli("import", *files, *common, "--plan").stdout
    assert not (tmp_path / "cat").exists()  # nothing written
    number = lambda label: float(re.search(rf"{label}[^0-9]*([0-9][0-9,.]*)", plan).group(1).replace(",", ""))  # noqa: E731
    _, took = _timed("import", *files, *common, "-q")
    partitions = len((tmp_path / "cat" / "partition_info.csv").read_text().splitlines()) - 1
    size = sum(p.stat().st_size for p in (tmp_path / "cat" / "dataset").rglob("*.parquet"))
    assert number("rows:") == 1_200_000
    assert number("partitions:") == partitions > 12  # exact: the same alignment
    assert 0.5 < number("output: about") * 2**30 / size < 2
    assert _matches(number(r"wall time on 2 worker\(s\): about"), took)


def _numbers(text: str) -> dict[str, float]:
    def find(label):
        return float(re.search(rf"{label}[^0-9]*([0-9][0-9,.e+-]*)", text).group(1).replace(",", ""))

    return {"wall": find(r"wall time on \d+ worker\(s\): about"), "output": find("output: about") * 2**30}


def _timed(*args, **kw):
    """The command's result and its (wall, CPU) seconds."""
    cpu0, t0 = _child_cpu(), time.perf_counter()
    proc = run_cli(*args, **kw)
    return proc, (time.perf_counter() - t0, _child_cpu() - cpu0)


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _matches(estimate: float, took: tuple[float, float]) -> bool:
    """The estimated wall time (an idle machine's) within 2x of the run's wall time, or, when
    other work slowed the run down, of its CPU time: a run on 2 workers takes 1-2 CPU seconds
    per wall second, so against the CPU the band is 0.35-2."""
    wall, cpu = took
    return 0.5 < estimate / wall < 2 or 0.35 < estimate / cpu < 2


@pytest.mark.slow
def test_margin_aggregate_and_run_plans_match_the_runs(tmp_path):
    rng = np.random.default_rng(9)
    n = 400_000
    for i in range(3):
        pq.write_table(
            pa.table({"ra": rng.uniform(0, 360, n), "dec": np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
                      "mag": rng.normal(20, 1, n)}),
            tmp_path / f"p{i}.parquet",
        )  # fmt: skip
    files = [tmp_path / f"p{i}.parquet" for i in range(3)]
    run_cli("import", *files, "-o", tmp_path / "cat", "--threshold", "150000", "-q", "--workers", "2")
    # margin: its rows (from the skymap) and time
    plan = run_cli("margin", tmp_path / "cat", "--radius", "30", "--plan", "--workers", "2").stdout
    assert not (tmp_path / "cat_30arcs").exists()
    proc, took = _timed("margin", tmp_path / "cat", "-o", tmp_path / "m", "--radius", "30", "--workers", "2")
    got = int(re.search(r"([0-9]+) margin rows", proc.stdout).group(1))
    est = float(re.search(r"margin rows: about ([0-9,]+)", plan).group(1).replace(",", ""))
    assert 0.5 < est / got < 2 and _matches(_numbers(plan)["wall"], took)
    # aggregate: exact cells, output size and time
    args = ("aggregate", *files, "--lon", "ra", "--lat", "dec", "--order", "6", "--columns", "mag",
            "--stats", "count", "mean", "median", "--workers", "2")  # fmt: skip
    plan = run_cli(*args, "-o", tmp_path / "a.parquet", "--plan").stdout
    assert not (tmp_path / "a.parquet").exists()
    _, took = _timed(*args, "-o", tmp_path / "a.parquet", "-q")
    cells = pq.read_metadata(tmp_path / "a.parquet").num_rows
    assert f"cells at order 6: {cells:,}" in plan
    est = _numbers(plan)
    assert 0.5 < est["output"] / (tmp_path / "a.parquet").stat().st_size < 2 and _matches(est["wall"], took)
    # run: a streaming pipeline with two orders
    (tmp_path / "p.yaml").write_text(
        "inputs: [{paths: [p*.parquet]}]\ncoordinates: {lon: ra, lat: dec}\nassignment: {order: 6}\n"
        "statistics: {n: {function: count}, m: {function: mean, column: mag}}\n"
        "outputs: {zarr: {path: r.zarr, orders: [6, 4]}}\n"
    )
    plan = run_cli("run", tmp_path / "p.yaml", "--plan", "--workers", "2").stdout
    assert not (tmp_path / "r.zarr").exists()
    _, took = _timed("run", tmp_path / "p.yaml", "-q", "--workers", "2")
    size = sum(p.stat().st_size for p in (tmp_path / "r.zarr").rglob("*") if p.is_file())
    est = _numbers(plan)
    assert _matches(est["wall"], took) and 0.4 < est["output"] / size < 2.5

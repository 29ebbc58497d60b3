"""--plan: the estimate printed before a run, compared with the run itself."""

from __future__ import annotations

import re
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
    t0 = time.perf_counter()
    run_cli("import", *files, *common, "-q")
    wall = time.perf_counter() - t0
    partitions = len((tmp_path / "cat" / "partition_info.csv").read_text().splitlines()) - 1
    size = sum(p.stat().st_size for p in (tmp_path / "cat" / "dataset").rglob("*.parquet"))
    assert number("rows:") == 1_200_000
    assert number("partitions:") == partitions > 12  # exact: the same alignment
    assert 0.5 < number("output: about") * 2**30 / size < 2
    assert 0.5 < number(r"wall time on 2 worker\(s\): about") / wall < 2

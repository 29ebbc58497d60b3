"""A killed import, rerun with the same arguments, yields what an uninterrupted run yields."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import make_points, run_cli, survey_table, write_parquet_files
from healforge.hats import layout


def _catalog_content(path: Path) -> dict:
    return {str(f.relative_to(path)): pq.read_table(f).to_pydict() for f in layout.list_data_files(path)}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    ra, dec = make_points("clustered", 24_000, seed=21)
    write_parquet_files(folder / "in", survey_table(ra, dec), 6)
    args = ["--threshold", "1500", "--highest-order", "9", "--synchronous", "-q"]
    ref = folder / "reference"
    run_cli("import", folder / "in", "-o", ref, *args)
    return folder, args, _catalog_content(ref), (ref / "partition_info.csv").read_text()


@pytest.mark.parametrize("kill_at", ["Splitting:3", "Reducing:5"])
@pytest.mark.slow
def test_sigkill_then_rerun(inputs, kill_at):
    folder, args, reference, partitions = inputs
    out = folder / f"killed-{kill_at.replace(':', '-')}"
    proc = run_cli(
        "import", folder / "in", "-o", out, *args, env={"HEALFORGE_KILL_AFTER": kill_at}, check=False
    )
    assert proc.returncode == -9, proc.stderr
    work = out / ".healforge-import"
    assert (work / "plan.json").exists()
    # leftovers of writes cut short: a half-written temporary and a truncated shard of a task not done
    (work / "split" / ".in00005.deadbeef.arrow.tmp").write_bytes(b"\x00" * 100)
    if kill_at.startswith("Splitting"):
        (work / "split" / "in00004.arrow").write_bytes(b"ARROW1 truncated")
        assert not (work / "split" / "in00004.hist.npz").exists()
    else:
        done = {p.name for p in (work / "reduce").iterdir()}
        pending = next(
            (o, p)
            for o, p in (tuple(map(int, line.split(","))) for line in partitions.splitlines()[1:])
            if f"{o}_{p}.done" not in done
        )
        target = layout.pixel_file(out, *pending)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"PAR1 truncated")
    # the same command again finishes the job
    again = run_cli("import", folder / "in", "-o", out, *args)
    assert "resumed" in again.stdout
    assert (out / "partition_info.csv").read_text() == partitions
    assert _catalog_content(out) == reference
    assert not work.exists()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_resume_with_other_arguments_is_refused(inputs):
    folder, args, _, _ = inputs
    out = folder / "killed-other"
    run_cli(
        "import", folder / "in", "-o", out, *args, env={"HEALFORGE_KILL_AFTER": "Splitting:2"}, check=False
    )
    proc = run_cli(
        "import",
        folder / "in",
        "-o",
        out,
        "--threshold",
        "999",
        "--resume",
        "--synchronous",
        "-q",
        check=False,
    )
    assert proc.returncode == 2 and "arguments differ" in proc.stderr and "threshold" in proc.stderr
    proc = run_cli("import", folder / "in", "-o", out, *args, "--overwrite")
    assert "imported" in proc.stdout
    assert os.path.exists(out / "hats.properties")

"""Writers under SIGKILL: for each healforge writer, a command on prepared inputs, the files whose
appearance means "mid-write", and a check of the rerun's result against the raw inputs.

:func:`build_templates` makes the inputs and the catalogs the writers start from (uninterrupted
runs); :func:`trial` copies what a scenario needs into a fresh directory, runs its command under
the killer (kill when a pattern appears, or after a delay), reruns the same command and checks.
Used by ``tests/test_kill.py`` (a few trials) and ``benchmarks/kill_storm.py`` (a storm).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from killer import Outcome, catalog_ids, healforge_command, run_killed, stray_temporaries

CAT_ARGS = ["--threshold", "800", "--highest-order", "7"]
QUIET = ["--synchronous", "-q"]
PIPELINE = """\
name: killtest
inputs:
  - paths: ["{inputs}/*.parquet"]
coordinates: {{lon: ra, lat: dec}}
assignment: {{order: 4, mode: points}}
statistics:
  n: {{function: count}}
  mag_mean: {{function: mean, column: mag}}
outputs:
  state: {out}/state.parquet
  zarr: {{path: {out}/map.zarr, orders: [4, 3]}}
  parquet: {{path: {out}/map.parquet, orders: [4]}}
"""


def cli(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(healforge_command(*args), capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"healforge {' '.join(map(str, args))} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def _table(ra, dec, start_id: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = len(ra)
    return pa.table(
        {
            "id": np.arange(start_id, start_id + n, dtype=np.int64),
            "ra": np.asarray(ra, np.float64),
            "dec": np.asarray(dec, np.float64),
            "mag": rng.normal(20, 1, n).astype(np.float32),
        }
    )


def _points(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    k = n // 2
    ra = np.r_[rng.uniform(0, 360, n - k), np.mod(200 + rng.normal(0, 0.5, k), 360)]
    dec = np.r_[
        np.degrees(np.arcsin(rng.uniform(-1, 1, n - k))), np.clip(-20 + rng.normal(0, 0.5, k), -90, 90)
    ]
    return ra, dec


def build_templates(base: Path, rows: int = 12_000, files: int = 6, writers: list[str] | None = None) -> dict:
    """Inputs and the catalogs/states the ``writers`` (default: all) start from, in ``base``;
    returns what they hold (ids, rows, ...)."""
    base.mkdir(parents=True, exist_ok=True)
    ra, dec = _points(rows, 1)
    table = _table(ra, dec, 0, 2)
    (base / "in").mkdir(exist_ok=True)
    bounds = np.linspace(0, rows, files + 1).astype(int)
    for i in range(files):
        pq.write_table(
            table.slice(bounds[i], bounds[i + 1] - bounds[i]), base / "in" / f"part{i:02d}.parquet"
        )
    n_new = max(rows // 4, 1)
    ra_b, dec_b = _points(n_new, 3)
    (base / "b1").mkdir(exist_ok=True)
    pq.write_table(_table(ra_b, dec_b, 10_000_000, 4), base / "b1" / "part00.parquet")
    # sources of the objects, 2 per object, near them
    rng = np.random.default_rng(5)
    owner = np.repeat(np.arange(rows), 2)
    src = pa.table(
        {
            "sid": np.arange(len(owner), dtype=np.int64),
            "id": owner.astype(np.int64),
            "ra": np.mod(ra[owner] + rng.normal(0, 1e-4, len(owner)), 360),
            "dec": np.clip(dec[owner] + rng.normal(0, 1e-4, len(owner)), -90, 90),
            "mjd": rng.uniform(60000, 61000, len(owner)),
        }
    )
    (base / "src").mkdir(exist_ok=True)
    pq.write_table(src, base / "src" / "part00.parquet")
    deleted = np.arange(0, rows, 10)
    (base / "ids.txt").write_text("\n".join(map(str, deleted)) + "\n")
    writers = list(SCENARIOS) if writers is None else list(writers)
    need = {n for w in writers for n in SCENARIOS[w].copy}
    if need & {"cat", "appended"} or "margin" in writers:
        cli("import", base / "in", "-o", base / "cat", *CAT_ARGS, *QUIET)
    if "srccat" in need:
        cli(
            "import",
            base / "src",
            "-o",
            base / "srccat",
            "--catalog-type",
            "source",
            "--threshold",
            "2000",
            *QUIET,
        )
    if "appended" in need:
        shutil.copytree(base / "cat", base / "appended")
        cli("append", base / "appended", base / "b1", "--batch", "b1", *QUIET)
    margin_ids = None
    if "margin" in writers:
        cli("margin", base / "cat", "-o", base / "ref_margin", "--radius", "60", *QUIET)
        margin_ids = np.sort(pq.read_table(base / "ref_margin" / "dataset", columns=["id"])["id"].to_numpy())
    acc = ["--order", "5", "--lon", "ra", "--lat", "dec", "--columns", "mag", *QUIET]
    parts = sorted(str(p) for p in (base / "in").glob("*.parquet"))
    half = len(parts) // 2
    if "map.zarr" in need:
        need.add("state_full.parquet")
    for name, chosen in [("state_a", parts[:half]), ("state_b", parts[half:]), ("state_full", parts)]:
        if f"{name}.parquet" in need:
            cli("accumulate", *chosen, "--state", base / f"{name}.parquet", *acc)
    if "map.zarr" in need:
        cli("finalize", base / "state_full.parquet", "-o", base / "map.zarr", "--min-order", "3", "--stats",
            "count", "mean")  # fmt: skip
    zagg_rows = 0
    if "zagg" in writers:
        from test_zagg import make_granule

        (base / "granules").mkdir(exist_ok=True)
        for i in range(2):
            rows_i = make_granule(base / "granules" / f"ATL06_{i}.h5", n=300, seed=i, lon0=10.0 + i)
            zagg_rows += int((rows_i["q"] == 0).sum())
    return {
        "zagg_rows": zagg_rows,
        "base": base,
        "rows": rows,
        "ids": table["id"].to_numpy(),
        "new_ids": np.arange(10_000_000, 10_000_000 + n_new),
        "deleted": deleted,
        "sources": len(owner),
        "margin_ids": margin_ids,
        "parts": parts,
    }


@dataclass
class Check:
    """A rerun's result compared with what the inputs say."""

    expected: int
    found: int
    lost: int = 0
    duplicated: int = 0
    unreadable: bool = False
    detail: str = ""
    leftovers: int = 0  # temporaries of killed writers still there after the rerun


def compare_ids(found: np.ndarray, expected: np.ndarray) -> Check:
    """Rows lost and rows extra, comparing the ids as multisets (a margin may hold a row twice)."""
    found, expected = np.asarray(found), np.asarray(expected)
    ids = np.union1d(found, expected)
    n_found = np.bincount(np.searchsorted(ids, found), minlength=len(ids))
    n_expected = np.bincount(np.searchsorted(ids, expected), minlength=len(ids))
    lost = int(np.maximum(n_expected - n_found, 0).sum())
    duplicated = int(np.maximum(n_found - n_expected, 0).sum())
    return Check(len(expected), len(found), lost, duplicated)


def _catalog_check(path: Path, expected: np.ndarray) -> Check:
    try:
        ids = catalog_ids(path)
    except Exception as exc:  # noqa: BLE001 - any reader failure counts as "unreadable"
        return Check(len(expected), 0, len(expected), 0, True, f"{type(exc).__name__}: {exc}"[:300])
    check = compare_ids(ids, expected)
    stray = stray_temporaries(path)
    if stray:
        check.unreadable, check.detail = True, f"temporary files under dataset/: {stray[:3]}"
    return check


def _state_check(path: Path, expected_rows: int) -> Check:
    from healforge.aggregate.state import State

    try:
        st = State.load(path)
    except Exception as exc:  # noqa: BLE001
        return Check(expected_rows, 0, expected_rows, 0, True, str(exc)[:300])
    n = int(st.moments["mag"]["n"].sum())
    return Check(expected_rows, n, max(expected_rows - n, 0), max(n - expected_rows, 0))


def _map_check(path: Path, expected_rows: int, variable: str) -> Check:
    from healforge.maps import read_map

    try:
        maps = read_map(str(path))
        table = maps if isinstance(maps, pa.Table) else maps[max(maps)]
        n = int(np.nansum(table.column(variable).to_numpy(zero_copy_only=False)))
    except Exception as exc:  # noqa: BLE001
        return Check(expected_rows, 0, expected_rows, 0, True, f"{type(exc).__name__}: {exc}"[:300])
    return Check(expected_rows, n, max(expected_rows - n, 0), max(n - expected_rows, 0))


def _rows_check(path: Path, expected_rows: int) -> Check:
    try:
        n = pq.read_metadata(path).num_rows
    except Exception as exc:  # noqa: BLE001
        return Check(expected_rows, 0, expected_rows, 0, True, f"{type(exc).__name__}: {exc}"[:300])
    return Check(expected_rows, n, max(expected_rows - n, 0), max(n - expected_rows, 0))


@dataclass
class Scenario:
    """One writer under test: what to copy, the command, the mid-write patterns, the check."""

    name: str
    copy: list[str]
    command: Callable[[Path, dict], list]
    check: Callable[[Path, dict], Check]
    patterns: list[str] = field(default_factory=list)


def _nest_check(d: Path, t: dict) -> Check:
    import lsdb

    try:
        df = lsdb.open_catalog(str(d / "nested"), columns=["id", "lc"]).compute()
        n_src = int(df["lc"].apply(len).sum())
    except Exception as exc:  # noqa: BLE001
        return Check(t["rows"], 0, t["rows"], 0, True, f"{type(exc).__name__}: {exc}"[:300])
    check = compare_ids(np.sort(df["id"].to_numpy()), t["ids"])
    if n_src != t["sources"]:
        check.detail = f"{n_src} nested sources, expected {t['sources']}"
        check.lost += max(t["sources"] - n_src, 0)
        check.duplicated += max(n_src - t["sources"], 0)
    return check


def _index_check(d: Path, t: dict) -> Check:
    import hats

    try:
        hats.read_hats(str(d / "cat_id_index"))
        ids = np.sort(pq.read_table(d / "cat_id_index" / "dataset", columns=["id"])["id"].to_numpy())
    except Exception as exc:  # noqa: BLE001
        return Check(t["rows"], 0, t["rows"], 0, True, f"{type(exc).__name__}: {exc}"[:300])
    return compare_ids(ids, t["ids"])


def _margin_check(d: Path, t: dict) -> Check:
    import hats

    try:
        hats.read_hats(str(d / "cat_margin"))
        ids = np.sort(pq.read_table(d / "cat_margin" / "dataset", columns=["id"])["id"].to_numpy())
    except Exception as exc:  # noqa: BLE001
        return Check(len(t["margin_ids"]), 0, len(t["margin_ids"]), 0, True, str(exc)[:300])
    return compare_ids(ids, t["margin_ids"])


ZAGG = Path(__file__).resolve().parent / "data" / "zagg_atl06.yaml"
ACC = ["--order", "5", "--lon", "ra", "--lat", "dec", "--columns", "mag"]
MIDWRITE_CAT = ["cat/.healforge-tmp/*"]
TXN = [".healforge-txn/*/*.parquet*", ".healforge-txn/*.parquet*"]
SCENARIOS = {
    s.name: s
    for s in [
        Scenario(
            "import",
            [],
            lambda d, t: ["import", t["base"] / "in", "-o", d / "cat", *CAT_ARGS, *QUIET],
            lambda d, t: _catalog_check(d / "cat", t["ids"]),
            MIDWRITE_CAT,
        ),
        Scenario(
            "append",
            ["cat"],
            lambda d, t: ["append", d / "cat", t["base"] / "b1", "--batch", "b1", *QUIET],
            lambda d, t: _catalog_check(d / "cat", np.r_[t["ids"], t["new_ids"]]),
            [f"*/{p}" for p in TXN],
        ),
        Scenario(
            "compact",
            ["appended"],
            lambda d, t: ["compact", d / "appended", *QUIET],
            lambda d, t: _catalog_check(d / "appended", np.r_[t["ids"], t["new_ids"]]),
            [f"*/{p}" for p in TXN],
        ),
        Scenario(
            "increment",
            ["cat"],
            lambda d, t: [
                "increment",
                d / "cat",
                "--objects",
                t["base"] / "b1" / "part00.parquet",
                "--on",
                "id",
                "--batch",
                "n1",
                *QUIET,
            ],  # fmt: skip
            lambda d, t: _catalog_check(d / "cat", np.r_[t["ids"], t["new_ids"]]),
            [f"*/{p}" for p in TXN],
        ),
        Scenario(
            "delete",
            ["cat"],
            lambda d, t: ["delete", d / "cat", "--ids", t["base"] / "ids.txt", "--on", "id", *QUIET],
            lambda d, t: _catalog_check(d / "cat", np.setdiff1d(t["ids"], t["deleted"])),
            [f"*/{p}" for p in TXN],
        ),
        Scenario(
            "margin",
            ["cat"],
            lambda d, t: ["margin", d / "cat", "-o", d / "cat_margin", "--radius", "60", *QUIET],
            _margin_check,
            [".cat_margin.building-*/dataset/*.parquet", "cat_margin/*.parquet", "*.tmp"],
        ),
        Scenario(
            "index",
            ["cat"],
            lambda d, t: ["index", d / "cat", "--column", "id", "-o", d / "cat_id_index", *QUIET],
            _index_check,
            [".cat_id_index.building-*/dataset/*.parquet", "cat_id_index/*.parquet", "*.tmp"],
        ),
        Scenario(
            "nest",
            ["cat", "srccat"],
            lambda d, t: [
                "nest",
                d / "cat",
                d / "srccat",
                "-o",
                d / "nested",
                "--on",
                "id",
                "--as",
                "lc",
                "--sort-by",
                "mjd",
                *QUIET,
            ],  # fmt: skip
            _nest_check,
            [".nested.building-*/dataset/*.parquet", "nested/*.parquet", "*.tmp"],
        ),
        Scenario(
            "accumulate",
            ["state_a.parquet"],
            lambda d, t: [
                "accumulate",
                *t["parts"][len(t["parts"]) // 2 :],
                "--state",
                d / "state_a.parquet",
                *ACC,
                *QUIET,
            ],  # fmt: skip
            lambda d, t: _state_check(d / "state_a.parquet", t["rows"]),
            ["*.tmp*"],
        ),
        Scenario(
            "merge-states",
            ["state_a.parquet", "state_b.parquet"],
            lambda d, t: [
                "merge-states",
                d / "state_a.parquet",
                d / "state_b.parquet",
                "-o",
                d / "merged.parquet",
            ],
            lambda d, t: _state_check(d / "merged.parquet", t["rows"]),
            ["*.tmp*"],
        ),
        Scenario(
            "finalize",
            ["state_full.parquet"],
            lambda d, t: [
                "finalize",
                d / "state_full.parquet",
                "-o",
                d / "map.zarr",
                "--min-order",
                "3",
                "--stats",
                "count",
                "mean",
            ],  # fmt: skip
            lambda d, t: _map_check(d / "map.zarr", t["rows"], "mag_count"),
            ["*.tmp*/*"],
        ),
        Scenario(
            "sidecar",
            [],
            lambda d, t: [
                "sidecar",
                *t["parts"],
                "-o",
                d / "sidecar.parquet",
                "--order",
                "5",
                "--lon",
                "ra",
                "--lat",
                "dec",
                *QUIET,
            ],  # fmt: skip
            lambda d, t: _rows_check(d / "sidecar.parquet", t["rows"]),
            ["*.tmp*"],
        ),
        Scenario(
            "aggregate",
            [],
            lambda d, t: [
                "aggregate",
                *t["parts"],
                "-o",
                d / "agg.parquet",
                "--order",
                "5",
                "--lon",
                "ra",
                "--lat",
                "dec",
                "--columns",
                "mag",
                "--stats",
                "count",
                "mean",
                *QUIET,
            ],  # fmt: skip
            lambda d, t: _map_check(d / "agg.parquet", t["rows"], "mag_count"),
            ["*.tmp*"],
        ),
        Scenario(
            "export",
            ["map.zarr"],
            lambda d, t: ["export", d / "map.zarr", "-o", d / "exported.parquet", "--order", "5"],
            lambda d, t: _map_check(d / "exported.parquet", t["rows"], "mag_count"),
            ["*.tmp*"],
        ),
        Scenario(
            "zagg",
            [],
            lambda d, t: [
                "run",
                ZAGG,
                "--inputs",
                *sorted((t["base"] / "granules").glob("*.h5")),
                "--store",
                d / "zagg.zarr",
                *QUIET,
            ],  # fmt: skip
            lambda d, t: _map_check(d / "zagg.zarr", t["zagg_rows"], "count"),
            ["*.tmp*/*", "*.tmp*"],
        ),
        Scenario(
            "run",
            [],
            lambda d, t: ["run", _pipeline(d, t), *QUIET],
            lambda d, t: _map_check(d / "out" / "map.zarr", t["rows"], "n"),
            ["out/*.tmp*", "out/state.parquet.parts/*"],
        ),
    ]
}


def _pipeline(d: Path, t: dict) -> Path:
    path = d / "p.yaml"
    if not path.exists():
        path.write_text(PIPELINE.format(inputs=t["base"] / "in", out=d / "out"))
    return path


def leftover_temporaries(where: Path, base: Path) -> list[str]:
    """Our temporary files (``.NAME.<pid>-<uuid>.tmp``, ``NAME.tmp-<pid>``, files in a
    ``.healforge-tmp`` staging directory) anywhere below ``where`` (work directories of
    unfinished runs aside)."""
    from healforge.io.storage import STAGING_DIR, is_stale_tmp

    found = []
    for p in where.rglob("*"):
        if p.is_file() and (is_stale_tmp(p.name) or STAGING_DIR in p.parts or ".tmp-" in str(p)):
            found.append(str(p))
    return found


@dataclass
class Trial:
    """One kill and rerun of a scenario."""

    scenario: str
    how: str
    killed: Outcome
    rerun_rc: int
    rerun_out: str
    check: Check


def prepare(scenario: Scenario, templates: dict, where: Path) -> list:
    """Copy the scenario's starting files into ``where``; returns its command."""
    where.mkdir(parents=True, exist_ok=True)
    for name in scenario.copy:
        src = templates["base"] / name
        (shutil.copytree if src.is_dir() else shutil.copyfile)(src, where / name)
    return scenario.command(where, templates)


def trial(
    scenario: Scenario, templates: dict, where: Path, *, midwrite: bool = True, delay: float | None = None
) -> Trial:
    """Run the scenario, SIGKILL its process group mid-write (``midwrite``) or after ``delay``,
    rerun the same command, and check the result against the inputs."""
    args = prepare(scenario, templates, where)
    if midwrite:
        killed = run_killed(args, watch=where, patterns=scenario.patterns, delay=delay)
        how = (
            f"midwrite:{killed.trigger and Path(killed.trigger).name}" if killed.trigger else f"delay:{delay}"
        )
    else:
        killed = run_killed(args, delay=delay)
        how = f"delay:{delay:.2f}"
    if not killed.killed and killed.returncode != 0:
        raise AssertionError(f"{scenario.name} failed without a kill:\n{killed.stderr}")
    rerun = subprocess.run(healforge_command(*args), capture_output=True, text=True, timeout=600)
    check = scenario.check(where, templates)
    check.leftovers = len(leftover_temporaries(where, templates["base"]))
    if rerun.returncode != 0:
        check.detail = (
            (check.detail + " | rerun: " + rerun.stderr.strip().splitlines()[-1:][0])[:400]
            if rerun.stderr.strip()
            else check.detail
        )
    return Trial(scenario.name, how, killed, rerun.returncode, rerun.stdout + rerun.stderr, check)


if __name__ == "__main__":  # pragma: no cover - quick manual run
    t = build_templates(Path(sys.argv[1]), writers=sys.argv[2:])
    for name in sys.argv[2:]:
        print(trial(SCENARIOS[name], t, Path(sys.argv[1]) / f"try-{name}", midwrite=True))

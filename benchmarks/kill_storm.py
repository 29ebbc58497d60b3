"""Kill storm: SIGKILL healforge writers at random moments, rerun each, check against the inputs.

Every trial copies a writer's starting files into a fresh directory, runs the writer in its own
process group and SIGKILLs the whole group either the moment one of its staged or temporary
files appears (mid-write) or after a random delay (uniform between 5% and 100% of the writer's
uninterrupted duration, measured first), then reruns the same command and checks the result
against the raw inputs (every input row present exactly once, the output readable by hats/lsdb
or healforge's map reader). Writers: import, append, compact, increment, delete, margin, index,
nest, accumulate, merge-states, finalize, run (see ``tests/kill_scenarios.py``).

Usage::

    python benchmarks/kill_storm.py --kills 60 --seed 14 --rows 4000 --json docs/kill-storm.json

Prints one line per trial and a table per writer; writes the same as JSON: kills tried, kills
that landed before the command ended, reruns finished, rows lost, rows duplicated, outputs left
unreadable.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "src"))  # this checkout's healforge, here and in the commands
os.environ["PYTHONPATH"] = str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")

from kill_scenarios import SCENARIOS, build_templates, prepare, trial  # noqa: E402
from killer import run_killed  # noqa: E402


def calibrate(templates: dict, writers: list[str], work: Path) -> dict[str, float]:
    """Seconds each writer takes uninterrupted (on a fresh copy)."""
    out = {}
    for w in writers:
        where = work / f"calibrate-{w}"
        args = prepare(SCENARIOS[w], templates, where)
        res = run_killed(args, delay=None, timeout=900)
        if res.returncode != 0:
            raise SystemExit(f"{w} fails without a kill:\n{res.stderr}")
        out[w] = res.seconds
        shutil.rmtree(where, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=60, help="number of kill trials (default 60)")
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--rows", type=int, default=4000, help="input rows (default 4000)")
    p.add_argument("--files", type=int, default=4, help="input files (default 4)")
    p.add_argument("--writers", nargs="+", default=list(SCENARIOS), choices=list(SCENARIOS))
    p.add_argument("--midwrite-share", type=float, default=0.5, help="share of kills at a file's appearance")
    p.add_argument("--work", help="work directory (default: a temporary one, removed)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="kill-storm-"))
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    templates = build_templates(work / "templates", rows=args.rows, files=args.files, writers=args.writers)
    durations = calibrate(templates, args.writers, work)
    print("uninterrupted seconds: " + ", ".join(f"{w} {s:.1f}" for w, s in durations.items()), flush=True)

    order = [args.writers[i % len(args.writers)] for i in range(args.kills)]
    rng.shuffle(order)
    per = {
        w: {
            "kills_tried": 0,
            "kills_landed": 0,
            "midwrite_kills": 0,
            "reruns_finished": 0,
            "rows_lost": 0,
            "rows_duplicated": 0,
            "unreadable": 0,
            "leftover_temporaries": 0,
            "failures": [],
        }
        for w in args.writers
    }
    trials = []
    for i, writer in enumerate(order):
        midwrite = bool(rng.random() < args.midwrite_share)
        delay = float(rng.uniform(0.05, 1.0) * durations[writer])
        where = work / f"trial-{i:03d}-{writer}"
        try:
            res = trial(SCENARIOS[writer], templates, where, midwrite=midwrite, delay=delay)
        except Exception as exc:  # noqa: BLE001 - a harness failure is a finding too
            per[writer]["kills_tried"] += 1
            per[writer]["failures"].append(f"trial {i}: {type(exc).__name__}: {str(exc)[:300]}")
            print(f"[{i:3d}] {writer:12s} harness error: {exc}", flush=True)
            shutil.rmtree(where, ignore_errors=True)
            continue
        s = per[writer]
        s["kills_tried"] += 1
        s["kills_landed"] += int(res.killed.killed)
        s["midwrite_kills"] += int(res.killed.killed and res.killed.trigger is not None)
        s["reruns_finished"] += int(res.rerun_rc == 0)
        s["rows_lost"] += res.check.lost
        s["rows_duplicated"] += res.check.duplicated
        s["unreadable"] += int(res.check.unreadable)
        s["leftover_temporaries"] += res.check.leftovers
        ok = (
            res.rerun_rc == 0 and not res.check.unreadable and not res.check.lost and not res.check.duplicated
        )
        if not ok:
            last = res.rerun_out.strip().splitlines()[-1:] or [""]
            s["failures"].append(
                f"trial {i} ({res.how}, landed={res.killed.killed}): rerun rc {res.rerun_rc} {last[0][:240]}; "
                f"lost {res.check.lost}, duplicated {res.check.duplicated}, unreadable {res.check.unreadable} "
                f"{res.check.detail[:200]}"
            )
        trials.append(
            {
                "trial": i,
                "writer": writer,
                "how": res.how,
                "landed": res.killed.killed,
                "killed_after_s": round(res.killed.seconds, 3),
                "rerun_rc": res.rerun_rc,
                "rows_expected": res.check.expected,
                "rows_found": res.check.found,
                "lost": res.check.lost,
                "duplicated": res.check.duplicated,
                "unreadable": res.check.unreadable,
                "leftover_temporaries": res.check.leftovers,
            }
        )
        print(
            f"[{i:3d}] {writer:12s} {res.how[:40]:40s} landed={res.killed.killed!s:5s} "
            f"after {res.killed.seconds:5.2f}s rerun rc={res.rerun_rc} lost={res.check.lost} "
            f"dup={res.check.duplicated} unreadable={res.check.unreadable}",
            flush=True,
        )
        shutil.rmtree(where, ignore_errors=True)

    totals = {
        k: sum(v[k] for v in per.values())
        for k in (
            "kills_tried",
            "kills_landed",
            "midwrite_kills",
            "reruns_finished",
            "rows_lost",
            "rows_duplicated",
            "unreadable",
            "leftover_temporaries",
        )
    }
    print(f"\n{'writer':13s} tried landed midwrite reruns_ok lost dup unreadable leftovers")
    for w, v in per.items():
        print(
            f"{w:13s} {v['kills_tried']:5d} {v['kills_landed']:6d} {v['midwrite_kills']:8d} "
            f"{v['reruns_finished']:9d} {v['rows_lost']:4d} {v['rows_duplicated']:3d} {v['unreadable']:10d} "
            f"{v['leftover_temporaries']:9d}"
        )
    print(f"{'total':13s} " + " ".join(str(totals[k]) for k in totals))
    for w, v in per.items():
        for f in v["failures"]:
            print(f"  {w}: {f}")
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%MZ"),
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
        "command": "python benchmarks/kill_storm.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "seed": args.seed,
        "rows": args.rows,
        "files": args.files,
        "uninterrupted_seconds": {w: round(s, 2) for w, s in durations.items()},
        "totals": totals,
        "per_writer": per,
        "trials": trials,
        "seconds": round(time.monotonic() - t_start, 1),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``healforge run PIPELINE.yaml``: a declarative pipeline from raw files to map products."""

from __future__ import annotations

import argparse
import sys

from healforge.commands import add_command, engine_kwargs, storage_kwargs
from healforge.errors import OptionError


def register(subparsers) -> None:
    p = add_command(subparsers, _run, "run")
    p.add_argument("pipeline", metavar="PIPELINE.yaml", help="pipeline configuration file")
    p.add_argument("--restart", action="store_true", help="discard saved progress and start again")
    p.add_argument("--batch-rows", type=int, default=1_000_000, help="rows per read batch")
    p.add_argument(
        "--max-files",
        type=int,
        default=None,
        help="stop after accumulating this many new input files (progress kept; rerun to continue)",
    )
    p.add_argument("--check", action="store_true", help="only validate the configuration")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print the cells, output size, peak memory and wall time of a healforge pipeline of "
        "points (one pass over the coordinates, nothing written) and stop",
    )
    zagg = p.add_argument_group("zagg pipeline files (data_source / aggregation / output)")
    zagg.add_argument(
        "--inputs", nargs="+", default=None, help="granule files, or a zagg granule catalog JSON"
    )
    zagg.add_argument("--store", default=None, help="output Zarr store (overrides output.store)")
    exact = p.add_argument_group("exact statistics at scale (rows shuffled by shard)")
    exact.add_argument(
        "--exact",
        action="store_true",
        default=None,
        help="exact per-cell statistics at every order, user functions included (overrides the exact key)",
    )
    exact.add_argument("--work-dir", help="scratch directory or URL of --exact (default: beside the output)")
    exact.add_argument("--shard-order", type=int, help="HEALPix order of the shards of --exact (default: 3)")


def _is_zagg(path: str) -> bool:
    import yaml

    from healforge.zagg.translate import is_zagg

    try:
        with open(path, encoding="utf-8") as f:
            return is_zagg(yaml.safe_load(f))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False  # load_pipeline reports it


def _run_zagg(args: argparse.Namespace) -> int:
    from healforge.zagg import load, run_zagg
    from healforge.zagg.run import runnable

    if args.storage_options:
        raise OptionError("--storage-options applies to healforge pipeline files; a zagg file sets its own")
    plan = load(args.pipeline, inputs=args.inputs, store=args.store, exact=args.exact)
    runnable(plan)
    if args.check:
        print(f"{args.pipeline}: zagg configuration is valid ({'exact' if plan.exact else 'streaming'})")
        return 0
    if args.shard_order is not None:
        raise OptionError(
            "--shard-order applies to healforge pipelines (a zagg file shards at its parent order)"
        )
    if args.work_dir is not None and not plan.exact:
        raise OptionError("--work-dir applies to exact runs (--exact or the exact key)")
    summary = run_zagg(plan, batch_rows=args.batch_rows, work_dir=args.work_dir, **engine_kwargs(args))
    head = f"zagg file, {summary['files']} granule(s)"
    return _report(args, summary, head, f"{summary['rows_filtered']} filtered out")


def _run(args: argparse.Namespace) -> int:
    """run a YAML pipeline: inputs -> filter -> statistics -> Zarr/Parquet/GeoParquet/plots

    Validate PIPELINE.yaml (every key, before any data is read), accumulate every input file
    into a streaming state, build the requested orders by merging states and write the outputs.
    With outputs.state, a rerun with the same configuration resumes: files already accumulated
    are skipped. Exit code 2 on a bad configuration or bad input.
    """
    from healforge.run import load_pipeline
    from healforge.run.exact import exact_options
    from healforge.run.runner import run_pipeline

    if _is_zagg(args.pipeline):
        return _run_zagg(args)
    for flag in ("inputs", "store"):
        if getattr(args, flag) is not None:
            raise OptionError(f"--{flag} applies to zagg pipeline files only")
    cfg = load_pipeline(args.pipeline, exact=True if args.exact else None)
    exact = exact_options(cfg, True if args.exact else None, args.work_dir, args.shard_order) is not None
    if args.check:
        print(f"{args.pipeline}: configuration is valid")
        return 0
    if args.plan:
        from healforge.run.estimate import run_plan

        print(
            "\n".join(
                run_plan(
                    cfg.with_storage_options(storage_kwargs(args).get("storage_options")), args.workers, exact
                ).lines()
            )
        )
        return 0
    summary = run_pipeline(
        cfg,
        restart=args.restart,
        batch_rows=args.batch_rows,
        max_files=args.max_files,
        exact=exact,
        work_dir=args.work_dir,
        shard_order=args.shard_order,
        **engine_kwargs(args),
        **storage_kwargs(args),
    )
    if not summary["complete"]:
        return 0
    head = f"{summary['files']} file(s) ({summary['files_skipped']} resumed)"
    return _report(
        args, summary, head, f"{summary['rows_filtered']} filtered out, {summary['rows_rejected']} rejected"
    )


def _report(args: argparse.Namespace, summary: dict, head: str, dropped: str) -> int:
    """The one-line summary of a run on stderr (unless quiet), then the outputs, one a line."""
    if not args.quiet:
        fills = summary.get("fills_skipped") or 0
        dropped += f", {fills} fill value(s) skipped" if fills else ""
        print(
            f"healforge run: {head}, {summary['rows_read']} rows read, {dropped}; orders {summary['orders']}",
            file=sys.stderr,
        )
    for path in summary["outputs"]:
        print(path)
    return 0

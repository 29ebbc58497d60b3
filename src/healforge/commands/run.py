"""``healforge run PIPELINE.yaml``: a declarative pipeline from raw files to map products."""

from __future__ import annotations

import argparse
import sys

from healforge.commands import add_engine_args, engine_kwargs


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="run a YAML pipeline: inputs -> filter -> statistics -> Zarr/Parquet/GeoParquet/plots",
        description=(
            "Validate PIPELINE.yaml (every key, before any data is read), accumulate every input "
            "file into a streaming state, build the requested orders by merging states and write "
            "the outputs. With outputs.state, a rerun with the same configuration resumes: files "
            "already accumulated are skipped. Exit code 2 on a bad configuration or bad input."
        ),
    )
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
    add_engine_args(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from healforge.config import load_pipeline
    from healforge.pipeline import check_runnable, run_pipeline

    cfg = load_pipeline(args.pipeline)
    check_runnable(cfg)
    if args.check:
        print(f"{args.pipeline}: configuration is valid")
        return 0
    summary = run_pipeline(
        cfg,
        restart=args.restart,
        batch_rows=args.batch_rows,
        max_files=args.max_files,
        **engine_kwargs(args),
    )
    if not summary["complete"]:
        return 0
    if not args.quiet:
        print(
            f"healforge run: {summary['files']} file(s) ({summary['files_skipped']} resumed), "
            f"{summary['rows_read']} rows read, {summary['rows_filtered']} filtered out, "
            f"{summary['rows_rejected']} rejected; orders {summary['orders']}",
            file=sys.stderr,
        )
    for path in summary["outputs"]:
        print(path)
    return 0

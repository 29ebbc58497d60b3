"""CLI subcommand groups; helpers shared by all of them."""

from __future__ import annotations

import argparse


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """``--workers N | --scheduler ADDR`` plus ``--quiet``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--workers", type=int, default=None, help="local Dask worker processes")
    group.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    group.add_argument(
        "--synchronous", action="store_true", help="run every task in this process (debugging)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")


def engine_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for :class:`healforge.engine.Engine` from parsed CLI options."""
    return {
        "workers": args.workers,
        "scheduler": args.scheduler,
        "synchronous": args.synchronous,
        "quiet": args.quiet,
    }

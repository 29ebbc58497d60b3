"""CLI subcommand groups; helpers shared by all of them."""

from __future__ import annotations

import argparse


def add_run_args(
    parser: argparse.ArgumentParser, *, engine: bool = True, storage: bool = True, tmp_dir: bool = False
) -> None:
    """The options every subcommand shares, where they apply: ``--quiet`` always; ``--workers |
    --scheduler | --synchronous`` for commands that run tasks; ``--storage-options`` for commands
    that read or write paths, with ``--tmp-dir`` for those with intermediate files."""
    if engine:
        add_engine_args(parser)
    else:
        parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summaries")
    if storage:
        add_storage_args(parser, tmp_dir=tmp_dir)


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """``--workers N | --scheduler ADDR`` plus ``--quiet``."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--workers", type=int, default=None, help="local Dask workers (threads; see --processes)"
    )
    group.add_argument("--scheduler", default=None, help="address of an existing Dask scheduler")
    group.add_argument(
        "--synchronous", action="store_true", help="run every task in this process (debugging)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    parser.add_argument(
        "--wait-workers",
        type=float,
        default=None,
        metavar="SECONDS",
        help="with --scheduler: how long to wait for a worker before stopping with an error (default 60)",
    )
    parser.add_argument(
        "--processes",
        action="store_true",
        help="local workers as separate processes (memory isolation, restarted when one dies) "
        "instead of threads of this process",
    )


def engine_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments for :class:`healforge.engine.Engine` from parsed CLI options."""
    return {
        "workers": args.workers,
        "scheduler": args.scheduler,
        "synchronous": args.synchronous,
        "quiet": args.quiet,
        "wait_workers": args.wait_workers,
        "processes": args.processes,
    }


def add_storage_args(parser: argparse.ArgumentParser, tmp_dir: bool = True) -> None:
    """``--storage-options JSON`` (fsspec options for URL paths) and, for commands with
    intermediate files, ``--tmp-dir DIR``."""
    parser.add_argument(
        "--storage-options",
        default=None,
        metavar="JSON",
        help="fsspec options for URL paths (s3://...), e.g. '{\"anon\": true}' or "
        '\'{"client_kwargs": {"endpoint_url": "http://host:9000"}}\'',
    )
    if tmp_dir:
        parser.add_argument(
            "--tmp-dir",
            default=None,
            metavar="DIR",
            help="directory or URL (s3://...) for intermediate files, reached by every worker "
            "(default: inside a local output; for a URL output, beside it with --scheduler, else "
            "the system temp dir)",
        )


def storage_kwargs(args: argparse.Namespace) -> dict:
    """``storage_options`` (parsed JSON) and ``tmp_dir`` keyword arguments from the CLI options."""
    import json

    from healforge.io.storage import StorageError

    out = {}
    text = getattr(args, "storage_options", None)
    if text:
        try:
            options = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StorageError(f"--storage-options is not valid JSON ({exc}): {text!r}") from None
        if not isinstance(options, dict):
            raise StorageError(f"--storage-options must be a JSON object, got {text!r}")
        out["storage_options"] = options
    if getattr(args, "tmp_dir", None):
        out["tmp_dir"] = args.tmp_dir
    return out


def call_api(args: argparse.Namespace, target: str, fields_from: str | None = None, **overrides):
    """Call healforge's API function ``target`` (``"module:function"``, imported now) with the
    parsed options whose names are its parameters (or the fields of the dataclass
    ``fields_from``, for a function taking them as ``**options``), the run options (engine and
    storage, where the subcommand has them) and ``overrides`` for options the CLI spells
    differently."""
    import dataclasses
    import importlib
    import inspect

    def load(path: str):
        module, _, name = path.partition(":")
        return getattr(importlib.import_module(module), name)

    function = load(target)
    params = inspect.signature(function).parameters
    names = list(params)
    if fields_from is not None:
        names += [f.name for f in dataclasses.fields(load(fields_from))]
    any_keyword = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {p: getattr(args, p) for p in names if hasattr(args, p)}
    run = {**(engine_kwargs(args) if hasattr(args, "workers") else {}), **storage_kwargs(args)}
    kwargs.pop("storage_options", None)
    kwargs.update({k: v for k, v in run.items() if any_keyword or k in names})
    kwargs.update(overrides)
    return function(**kwargs)


def add_command(
    sub: argparse._SubParsersAction, func, name: str, *, run: dict | None = None
) -> argparse.ArgumentParser:
    """A subcommand ``name`` handled by ``func(args) -> exit code``, with the shared options of
    :func:`add_run_args` (``run`` holds its keywords). The first line of ``func``'s docstring is
    the subcommand's help, the rest its description."""
    import inspect

    doc = inspect.cleandoc(func.__doc__ or "")
    summary, _, rest = doc.partition("\n\n")
    parser = sub.add_parser(name, help=summary, description=" ".join(rest.split()) or summary)
    add_run_args(parser, **(run or {}))
    parser.set_defaults(func=func)
    return parser

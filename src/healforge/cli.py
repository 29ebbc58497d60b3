"""The ``healforge`` command: thin subcommands over the public Python API."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import traceback

from healforge import __version__
from healforge.errors import HealforgeError

# Each module defines ``register(subparsers)`` adding its subcommands; a subcommand's handler is
# stored as ``func`` and returns the process exit code.
COMMAND_MODULES = (
    "healforge.commands.catalog",
    "healforge.commands.lifecycle",
    "healforge.commands.collect",
    "healforge.commands.nightly",
    "healforge.commands.aggregate",
    "healforge.commands.maps",
    "healforge.commands.run",
    "healforge.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healforge", description="HEALPix data products: HATS catalogs, margins, per-cell maps."
    )
    parser.add_argument("--version", action="version", version=f"healforge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    from healforge.commands.examples import attach

    attach(sub)
    return parser


# Errors of the operating system and of pyarrow that only a user's path or file causes; shown as
# one line like healforge's own errors. Anything else is a bug and keeps its traceback.
USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)


# botocore's (named, so that the CLI needs no botocore import)
CREDENTIAL_ERRORS = ("NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError")


def user_error_message(exc: BaseException) -> str | None:
    """The one-line message of an exception caused by user input, or ``None`` for a bug."""
    if isinstance(exc, HealforgeError):
        return str(exc)
    if isinstance(exc, USER_OS_ERRORS):
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}" if exc.filename else str(exc)
    import pyarrow as pa

    if isinstance(exc, pa.ArrowInvalid) and ("parquet" in str(exc).lower() or "file" in str(exc).lower()):
        return f"cannot read a file: {exc}"
    from healforge.engine import NoWorkersError, TaskError

    if isinstance(exc, NoWorkersError):
        return str(exc)

    if isinstance(exc, TaskError) and exc.__cause__ is not None:
        cause = exc.__cause__
        detail = user_error_message(cause)
        prefix = str(exc).rsplit(f": {type(cause).__name__}: ", 1)[0]
        return f"{prefix}: {detail}" if detail else None
    if type(exc).__name__ in CREDENTIAL_ERRORS:
        return (
            f"no credentials for remote storage ({type(exc).__name__}: {exc}); give them with "
            '--storage-options \'{"key": ..., "secret": ...}\' or the storage\'s environment'
        )
    if isinstance(exc, json.JSONDecodeError):
        return f"invalid JSON: {exc}"
    return None


def _options(parser: argparse.ArgumentParser) -> tuple[set[str], set[str]]:
    """Option strings of ``parser`` and its subcommands: all of them, and those taking one value."""
    every, single = set(), set()
    for action in parser._actions:
        every.update(action.option_strings)
        if action.option_strings and action.nargs is None and action.const is None:
            single.update(action.option_strings)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                e, s = _options(sub)
                every |= e
                single |= s
    return every, single


def glue_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--option -value`` as ``--option=-value`` for options taking one value, so that values
    starting with ``-`` (``--lon-convention -180_180``) are not taken for options."""
    every, single = _options(parser)
    out: list[str] = []
    i = 0
    while i < len(argv):
        tok = argv[i]
        nxt = argv[i + 1] if i + 1 < len(argv) else None
        dash_value = nxt is not None and nxt.startswith("-") and nxt != "-" and nxt.split("=")[0] not in every
        if tok in single and dash_value:
            out.append(f"{tok}={nxt}" if tok.startswith("--") else f"{tok}{nxt}")
            i += 2
            continue
        if tok == "--":
            out.extend(argv[i:])
            break
        out.append(tok)
        i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(glue_dash_values(parser, argv))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"healforge {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        message = user_error_message(exc)
        if message is None:
            traceback.print_exc()
            print(
                f"healforge {args.command}: internal error {type(exc).__name__} (a bug in healforge: "
                "please report it with the traceback above)",
                file=sys.stderr,
            )
            return 1
        print(f"healforge {args.command}: error: {' '.join(message.split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

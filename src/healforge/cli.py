"""The ``healforge`` command: thin subcommands over the public Python API."""

from __future__ import annotations

import argparse
import importlib
import sys

from healforge import __version__
from healforge.errors import HealforgeError

# Each module defines ``register(subparsers)`` adding its subcommands; a subcommand's handler is
# stored as ``func`` and returns the process exit code.
COMMAND_MODULES = (
    "healforge.commands.catalog",
    "healforge.commands.lifecycle",
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
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HealforgeError as exc:
        print(f"healforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"healforge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""The ``stacker`` command line.

Each sub-command lives in its own module of this package with a
``register(subparsers)`` function; :data:`COMMANDS` lists them in help order.
Modules are imported only when the command line is parsed, and heavy libraries
only inside the command that needs them, so ``stacker --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from stacker._version import __version__

__all__ = ["main", "build_parser", "COMMANDS"]

#: Sub-command modules (``stacker.apps.cli._<name>``), in the order ``--help`` lists them.
COMMANDS: list[str] = ["inspect", "merge", "aggregate", "fit", "predict", "equalize", "tune", "report", "demo"]


class _Parser(argparse.ArgumentParser):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="stacker",
        description="Level-2 stacking and post-processing of multi-class probability ensembles.",
    )
    parser.add_argument("--version", action="version", version=f"stacker {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"stacker.apps.cli._{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stacker`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from stacker.console import run_command

    return run_command("stacker", args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

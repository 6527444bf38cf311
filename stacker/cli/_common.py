"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse

from stacker.table import DEFAULT_ATOL


def add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--renormalize",
        action="store_true",
        help="rescale rows that do not sum to 1 instead of refusing them",
    )
    p.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"tolerance on |row sum - 1| per model (default {DEFAULT_ATOL:g})",
    )


def run_command(prog: str, args: argparse.Namespace, *, interrupt_hint: str = "") -> int:
    """Run a parsed sub-command; bad input becomes one ``error:`` line and exit status 2.

    Shared by the ``stacker``, ``level1`` and ``holdout`` console scripts, so every
    command reports errors the same way.  Tracebacks are kept for real bugs.
    """
    import sys

    from stacker.errors import StackerError

    try:
        return int(args.func(args) or 0)
    except (StackerError, FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as exc:
        print(f"{prog} {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted{interrupt_hint}", file=sys.stderr)
        return 130

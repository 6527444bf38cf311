"""Options shared by several sub-commands."""

from __future__ import annotations

import argparse
import math

from stacker.console import checked_type
from stacker.table import DEFAULT_ATOL

#: ``--atol``: a finite number >= 0 (the loader checks it again).
_tolerance = checked_type(float, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
#: A power-mean exponent (``-p``, ``--tta-power``): any finite number.
exponent = checked_type(float, math.isfinite, "a finite number (1 arithmetic, 0 geometric)")


def add_table_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--renormalize",
        action="store_true",
        help="rescale rows that do not sum to 1 instead of refusing them",
    )
    p.add_argument(
        "--atol",
        type=_tolerance,
        default=DEFAULT_ATOL,
        help=f"tolerance on |row sum - 1| per model (default {DEFAULT_ATOL:g})",
    )


def add_output_options(p: argparse.ArgumentParser, output_help: str, default_columns: str) -> None:
    """``-o/--output`` (a table) and ``--submission`` (the id,class CSV), at least one of them required."""
    p.add_argument("-o", "--output", help=output_help)
    p.add_argument("--submission", help="also write a submission CSV: one row per id with its class")
    p.add_argument(
        "--submission-columns",
        default=default_columns,
        metavar="ID,CLASS",
        help=f"header of the submission's two columns (default: {default_columns})",
    )


def submission_columns(args: argparse.Namespace) -> tuple[str, str]:
    """The submission header of :func:`add_output_options`, after checking that something is to be written."""
    from stacker.errors import ConfigError
    from stacker.files import check_output_file
    from stacker.submission import parse_columns

    check_output_file(args.output, "-o/--output")
    check_output_file(args.submission, "--submission")
    if not args.output and not args.submission:
        raise ConfigError("nothing to write: give -o/--output and/or --submission")
    return parse_columns(args.submission_columns)

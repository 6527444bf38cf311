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

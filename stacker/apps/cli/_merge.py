"""``stacker merge A B ... -o OUT``: join per-model tables into one wide table."""

from __future__ import annotations

import argparse

from stacker.apps.cli._common import add_table_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="join per-model tables on id and view",
        description="Join tables written by separate level-1 runs; refuses mismatched classes, "
        "duplicate models or rows missing from one table.",
    )
    p.add_argument("tables", nargs="+", help="prediction tables (parquet, CSV or .npz)")
    p.add_argument("-o", "--output", required=True, help="merged table (parquet, or CSV by its suffix)")
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.files import refuse_overwrite
    from stacker.merge import merge_tables
    from stacker.table import read_table, write_table

    refuse_overwrite([args.output], args.tables)
    tables = [read_table(t, renormalize=args.renormalize, atol=args.atol) for t in args.tables]
    merged = merge_tables(tables)
    write_table(merged, args.output)
    print(f"wrote {args.output}: {len(merged)} rows, models {list(merged.models)}")
    return 0

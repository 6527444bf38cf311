"""``stacker aggregate TABLE -p P -o OUT``: power mean of TTA views per sample."""

from __future__ import annotations

import argparse

from stacker.apps.cli._common import add_table_options, exponent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "aggregate",
        help="average TTA views per image by power mean",
        description="One row per sample out: the power mean (p=1 arithmetic, p=0 geometric, "
        "p=2 root mean square) of the views of each image, renormalised.",
    )
    p.add_argument("table", help="prediction table (parquet, CSV or .npz)")
    p.add_argument("-p", "--power", type=exponent, default=1.0, help="power-mean exponent (default 1)")
    p.add_argument("-o", "--output", required=True, help="aggregated table (parquet, or CSV by its suffix)")
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.aggregate import aggregate_views
    from stacker.files import refuse_overwrite
    from stacker.table import read_table, write_table

    refuse_overwrite([args.output], [args.table])
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    out = aggregate_views(table, args.power)
    write_table(out, args.output)
    print(f"wrote {args.output}: {len(table)} rows -> {len(out)} samples (p={args.power:g})")
    return 0

"""``stacker inspect TABLE``: counts, balance and per-model scores."""

from __future__ import annotations

import argparse
import json

from stacker.apps.cli._common import add_table_options, exponent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="summarise a prediction table and score its models",
        description="Rows, images, views, models, classes, label balance, and for each model and "
        "for the power-mean aggregate the accuracy and log loss (split by manipulation flag).",
    )
    p.add_argument("table", help="prediction table (parquet, CSV or .npz)")
    p.add_argument("-p", "--power", type=exponent, default=1.0, help="power-mean exponent for views (default 1)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.apps.summary import format_summary, summarize
    from stacker.files import jsonable
    from stacker.table import read_table

    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    s = summarize(table, p=args.power)
    print(json.dumps(jsonable(s), indent=2) if args.json else format_summary(s))
    return 0

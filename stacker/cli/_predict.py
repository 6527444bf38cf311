"""``stacker predict BUNDLE TABLE -o OUT``: apply a saved Blend to a prediction table."""

from __future__ import annotations

import argparse

from stacker.cli._common import add_table_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="apply a saved Blend bundle to a prediction table",
        description="Checks the table against the bundle's classes and models, and writes a prediction "
        "table with one model, 'blend', keeping the input's id/label/fold/manip/manip_kind/view columns.",
    )
    p.add_argument("bundle", help="bundle directory written by 'stacker fit'")
    p.add_argument("table", help="prediction table to predict (parquet)")
    p.add_argument("-o", "--output", required=True, help="output prediction table (parquet)")
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.blend import Blend
    from stacker.table import read_table, write_table

    blend = Blend.load(args.bundle)
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    out = blend.transform(table)
    write_table(out, args.output)
    msg = f"wrote {args.output}: {len(out)} rows"
    if out.has_labels:
        from stacker import metrics

        y = out.y
        known = y >= 0
        p = out.probs[known, 0]
        msg += (f" (accuracy {metrics.accuracy(y[known], p):.4f}, log loss {metrics.log_loss(y[known], p):.4f}"
                f" on {int(known.sum())} labelled rows)")
    print(msg)
    return 0

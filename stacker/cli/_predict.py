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
    p.add_argument("--post", choices=["recipe", "none", "hungarian", "greedy", "sinkhorn"], default="recipe",
                   help="post-processing of the blend's probabilities: exact (hungarian) or greedy equalization, "
                   "Sinkhorn scaling, or none; default: the recipe's postprocess setting (none if unset)")
    p.add_argument("--by", default="auto",
                   help="group column for the post-processing (default: manip when the table has it; 'none')")
    add_table_options(p)
    p.set_defaults(func=run)


def post_transform(name: str | None, by: str | None):
    """The post-processing transform named by ``stacker tune`` / ``--post`` (None for 'none')."""
    from stacker.equalize import GreedyEqualizer, HungarianEqualizer
    from stacker.transforms import SinkhornEqualizer

    if name in (None, "none"):
        return None
    cls = {"hungarian": HungarianEqualizer, "greedy": GreedyEqualizer, "sinkhorn": SinkhornEqualizer}[name]
    return cls(by=by) if by else cls()


def run(args: argparse.Namespace) -> int:
    from stacker.blend import Blend
    from stacker.table import read_table, write_table

    blend = Blend.load(args.bundle)
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    out = blend.transform(table)
    post = blend.recipe_.postprocess if args.post == "recipe" else args.post
    by = args.by
    if by == "auto":
        by = "manip" if "manip" in out.meta.columns else None
    elif by == "none":
        by = None
    step = post_transform(post, by)
    if step is not None:
        out = step.fit_transform(out)
    write_table(out, args.output)
    msg = f"wrote {args.output}: {len(out)} rows" + (f", {post} post-processing by {by or 'all rows'}" if step else "")
    if out.has_labels:
        from stacker import metrics

        y = out.y
        known = y >= 0
        p = out.probs[known, 0]
        msg += (f" (accuracy {metrics.accuracy(y[known], p):.4f}, log loss {metrics.log_loss(y[known], p):.4f}"
                f" on {int(known.sum())} labelled rows)")
    print(msg)
    return 0

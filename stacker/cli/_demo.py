"""``stacker demo``: run the whole pipeline on real data that ships with the dependencies."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline end to end on scikit-learn's real digits",
        description="Train level-1 models on a holdout split of scikit-learn's 1,797 real handwritten "
        "digits, predict a class-balanced test split, and summarise the prediction tables.",
    )
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default demo-output/)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.demo import run_demo

    run_demo(args.output, seed=args.seed)
    return 0

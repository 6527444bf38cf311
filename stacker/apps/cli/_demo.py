"""``stacker demo``: run the whole pipeline on real images that ship with scikit-learn."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the pipeline end to end on scikit-learn's real digits",
        description="Level-1 CNNs (level1) trained K-fold on a holdout of scikit-learn's 1,797 real "
        "handwritten digits, half manipulated (holdout.manipulate); a Blend fitted on their out-of-fold "
        "probabilities predicts a class-balanced test set, equalized per manipulation group; prints a "
        "summary table and writes an HTML report.",
    )
    p.add_argument("-o", "--output", default="demo-output", help="output folder (default demo-output/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images' split, the CNNs and the Blend (default 0)")
    p.add_argument("--folds", type=int, default=2, help="level-1 folds (default 2)")
    p.add_argument("--recipe", default="fast", help="Blend recipe name or file (default: fast)")
    p.add_argument("--steps", type=int, default=40, help="level-1 training steps per epoch (default 40)")
    p.add_argument("--epochs", type=int, default=None, help="level-1 epochs (default: each model's own)")
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for the CNNs (default 1: the fastest on 16-px digits, idle or shared cores)",
    )
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.apps.demo import run_demo

    run_demo(
        args.output,
        seed=args.seed,
        n_folds=args.folds,
        recipe=args.recipe,
        report=not args.no_report,
        steps_per_epoch=args.steps,
        epochs=args.epochs,
        threads=args.threads,
    )
    return 0

"""``stacker report BUNDLE [PREDICTIONS] -o report.html``: a self-contained HTML report."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write a self-contained HTML report of a bundle and its predictions",
        description="Scores of every level-1 model and of the blend (unaltered / manipulated), a reliability "
        "diagram before and after a chain's calibration steps, confusion matrix, per-class accuracy and class "
        "counts before and after exact equalization (with a note when the rows are not class-balanced), member "
        "scores and weights, level-1 correlation; matplotlib figures embedded, no network needed.",
    )
    p.add_argument("bundle", help="bundle directory from `stacker fit` (a Blend, or a chain with a Blend step)")
    p.add_argument("predictions", nargs="?", help="prediction table from `stacker predict` (optional)")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--by", default="auto", help="group column for the equalization (default: manip if present)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker.apps.report import write_report
    from stacker.files import refuse_overwrite

    refuse_overwrite([args.output], [args.predictions] if args.predictions else [], {args.bundle: "bundle"})
    by = None if args.by in ("", "none") else args.by
    data = write_report(args.bundle, args.output, args.predictions, by=by)
    print(f"wrote {args.output} ({len(data['member_weights'])} members, {len(data['models'])} level-1 models)")
    return 0

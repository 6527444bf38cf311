"""``stacker predict BUNDLE TABLE -o OUT [--submission CSV]``: apply a saved Blend to a prediction table."""

from __future__ import annotations

import argparse
from pathlib import Path

from stacker.apps.cli._common import add_output_options, add_table_options, submission_columns
from stacker.files import refuse_overwrite
from stacker.postprocess import POSTPROCESS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="apply a saved Blend bundle to a prediction table",
        description="Checks the table against the bundle's classes and models, and writes a prediction "
        "table with one model, 'blend', keeping the input's id/label/fold/manip/manip_kind/view columns, "
        "and/or a submission CSV with one class per id.",
    )
    p.add_argument("bundle", help="bundle directory written by 'stacker fit' (or a saved Chain)")
    p.add_argument("table", help="prediction table to predict (parquet, CSV or .npz)")
    add_output_options(p, "output prediction table (parquet, or CSV by its suffix)", "id,class")
    p.add_argument(
        "--post",
        choices=["recipe", *POSTPROCESS],
        default="recipe",
        help="post-processing of the blend's probabilities: exact (hungarian) or greedy equalization, "
        "Sinkhorn scaling, or none; default: the recipe's postprocess setting (none if unset)",
    )
    p.add_argument(
        "--by",
        default="auto",
        help="group column for the post-processing (default: manip when the table has it; 'none')",
    )
    add_table_options(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from stacker import bundle
    from stacker.blend import Blend
    from stacker.errors import ConfigError
    from stacker.postprocess import apply_postprocess, resolve_by
    from stacker.submission import submission_frame, write_frame
    from stacker.table import read_table, write_table

    columns = submission_columns(args)
    refuse_overwrite([args.output, args.submission], [args.table], {args.bundle: "bundle"})
    if not bundle.is_bundle(args.bundle) and bundle.is_bundle(args.table):
        raise ConfigError(
            f"{args.bundle!r} is not a bundle but {args.table!r} is: the bundle comes first "
            "(stacker predict BUNDLE TABLE)"
        )
    manifest = bundle.read_manifest(args.bundle)  # verified once: for the step and for the in-sample note
    step = bundle.from_manifest(Path(args.bundle), manifest)
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    out = step.transform(table)
    if out.n_models != 1:
        raise ConfigError(f"the saved {type(step).kind} gives {out.n_models} models per row; predict needs one")
    recipe_post = step.recipe_.postprocess if isinstance(step, Blend) else None
    post = recipe_post if args.post == "recipe" else args.post
    post = None if post == "none" else post
    by = resolve_by(args.by, out.meta.columns)
    if post is not None:
        out, assigned = apply_postprocess(post, out, by)
    else:
        if args.by not in ("auto", "none", ""):
            import sys

            why = "the bundle's recipe has no post-processing" if args.post == "recipe" else "--post none"
            print(
                f"stacker predict: note: --by {args.by} has no effect without post-processing ({why}); "
                "pass --post hungarian to equalize by it",
                file=sys.stderr,
            )
        assigned = out.probs[:, 0].argmax(axis=1)
    # The submission is checked before anything is written: a refused one leaves no output table behind.
    frame = submission_frame(out, assigned, columns=columns, source=args.table) if args.submission else None
    written = []
    if args.output:
        write_table(out, args.output)
        written.append(args.output)
    if frame is not None:
        write_frame(frame, args.submission)
        written.append(args.submission)
    msg = f"wrote {', '.join(written)}: {len(out)} rows" + (
        f", {post} post-processing by {by or 'all rows'}" if post else ""
    )
    if out.has_labels:
        import numpy as np

        from stacker import metrics

        _note_in_sample(Path(args.bundle), manifest, out)

        y = out.y
        known = y >= 0
        p = out.probs[known, 0]
        msg += (
            f" (accuracy {np.mean(assigned[known] == y[known]):.4f}, log loss "
            f"{metrics.log_loss(y[known], p):.4f} on {int(known.sum())} labelled rows)"
        )
    print(msg)
    return 0


def _note_in_sample(root: Path, manifest: dict, table) -> None:
    """Say so when the rows to predict are rows the Blend was fitted on: their accuracy is in-sample."""
    import sys

    from stacker import bundle
    from stacker.table import ID, read_table

    try:
        state, blend_dir, _, _ = bundle.find_blend(root, manifest)
        oof = bundle.oof_path(blend_dir, state)
    except bundle.BundleError:
        return
    if oof is None:
        return
    fitted = set(read_table(oof).meta[ID].astype(str))
    shared = int(table.meta[ID].astype(str).isin(fitted).sum())
    if shared:
        acc = state.get("scores", {}).get("blend", {}).get("all", {}).get("accuracy")
        print(
            f"stacker predict: note: {shared} of the {len(table)} rows have ids the Blend was fitted on; their "
            "scores below are in-sample"
            + (f" (the Blend's out-of-fold accuracy on its holdout: {acc:.4f})" if acc is not None else ""),
            file=sys.stderr,
        )

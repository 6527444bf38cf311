"""``stacker fit HOLDOUT -o BUNDLE``: fit a Blend out-of-fold and save it as a bundle."""

from __future__ import annotations

import argparse
import json
import os

from stacker.apps.cli._common import add_table_options, exponent


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit",
        help="fit a Blend of meta-models on a labelled holdout and save a bundle",
        description="Fits every member of the recipe on every fold of a grouped stratified K-fold "
        "split of the holdout, combines them, prints out-of-fold scores and writes a bundle directory "
        "(JSON manifest + native model files).",
    )
    p.add_argument("table", help="labelled holdout prediction table (parquet, CSV or .npz)")
    p.add_argument("-o", "--output", required=True, help="bundle directory to write")
    p.add_argument(
        "-r",
        "--recipe",
        default=None,
        help="shipped recipe name (default: default; also best, cmi-1st-place, fast) or a TOML/YAML file",
    )
    p.add_argument(
        "--class-weight",
        default=None,
        help="'balanced' or JSON mapping class name -> weight, e.g. '{\"LG-Nexus-5x\": 3}'",
    )
    p.add_argument("-k", "--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--combine",
        choices=["weights", "mean"],
        default="weights",
        help="learned member weights or equal averaging (default weights)",
    )
    p.add_argument(
        "--features",
        choices=["log", "proba"],
        default="log",
        help="feed members log-probabilities or probabilities (default log)",
    )
    p.add_argument("-j", "--jobs", type=int, default=-1, help="parallel fits (default -1: all cores)")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address tcp://HOST:PORT to run fits on")
    p.add_argument(
        "--tta-power",
        type=exponent,
        default=None,
        help="power mean of each image's TTA views before fitting (1 arithmetic, 0 geometric); "
        "default: the recipe's tta_power, else every view is a row",
    )
    p.add_argument(
        "--time-limit",
        default=None,
        metavar="SECONDS",
        help="time budget of the whole fit: members are fitted in the order of expected gain per "
        "second while they are expected to finish in time, the rest skipped (listed in the bundle); "
        "'none' for no budget; default: the recipe's (the default recipe has 90 s, 'best' none)",
    )
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="where XGBoost, LightGBM (where its GPU build exists) and the Keras MLP members train (default cpu)",
    )
    p.add_argument(
        "--oof", default=None, help="also write the out-of-fold blend predictions (parquet, or CSV by its suffix)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_table_options(p)
    p.set_defaults(func=run)


def parse_class_weight(text: str | None):
    from stacker.errors import ConfigError

    if text is None or text == "balanced":
        return text
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--class-weight must be 'balanced' or a JSON object ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"--class-weight must be 'balanced' or a JSON object, got {text!r}")
    return value


def parse_time_limit(text: str | None) -> float | None:
    """``--time-limit``: seconds, or 'none'/'inf' for no budget (checked again by the Blend)."""
    import math

    from stacker.errors import ConfigError

    if text is None:
        return None
    if text.strip().lower() in ("none", "inf", "infinity"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"--time-limit must be a number of seconds or 'none', got {text!r}") from None


def summary_line(blend, n_rows: int) -> str:
    """One line: members fitted and skipped, time, out-of-fold score."""
    plan = blend.plan_
    folds = int(blend.n_folds)
    limit = plan.get("time_limit")
    budget = f"budget {limit:g} s" if limit else "no budget"
    s = blend.scores_["blend"]["all"]
    line = (
        f"fitted {len(blend.members_)} members ({len(blend.members_) * folds} member-folds) on {n_rows} rows, "
        f"skipped {len(plan.get('skipped', []))}, {plan.get('seconds', 0):.1f} s ({budget}); "
        f"out-of-fold accuracy {s['accuracy']:.4f}, log loss {s['log_loss']:.4f}"
    )
    notes = []
    if plan.get("forced"):
        notes.append(f"the budget was too small for any member: fitted the cheapest anyway, {plan['forced']}")
    if plan.get("overruns"):
        worst = max(plan["overruns"], key=lambda o: o["past_budget"])
        notes.append(
            f"{len(plan['overruns'])} fit(s) ended past the budget (latest {worst['member']} "
            f"by {worst['past_budget']:.1f} s)"
        )
    return line + "".join(f"\n  note: {n}" for n in notes)


def run(args: argparse.Namespace) -> int:
    import sys

    from stacker.blend import Blend
    from stacker.bundle import check_target
    from stacker.errors import ConfigError
    from stacker.files import check_output_file, refuse_overwrite
    from stacker.parallel import check_scheduler
    from stacker.planner import check_time_limit
    from stacker.table import FOLD, read_table, write_table

    # The options and the output path are checked before the table is read and the fit starts.
    time_limit = parse_time_limit(args.time_limit)
    check_time_limit(time_limit, "--time-limit")
    if args.folds < 2:
        raise ConfigError(f"-k/--folds must be at least 2, got {args.folds}")
    if args.jobs == 0:
        raise ConfigError("-j/--jobs must be a non-zero integer (-1: every core)")
    if args.scheduler is not None:
        check_scheduler(args.scheduler, "--scheduler")
    recipe_file = [args.recipe] if args.recipe and os.path.exists(args.recipe) else []
    check_output_file(args.oof, "--oof")
    refuse_overwrite([args.output, args.oof], [args.table] + recipe_file)
    check_target(args.output)
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    if FOLD in table.meta.columns and table.meta[FOLD].notna().any():
        n = int(table.meta[FOLD].nunique())
        print(
            f"stacker fit: note: the table's {FOLD!r} column ({n} folds, from level 1) is not used; the Blend "
            f"makes its own {args.folds} folds grouped by image id (-k)",
            file=sys.stderr,
        )
    class_weight = parse_class_weight(args.class_weight)
    if isinstance(class_weight, dict):
        unknown = [c for c in class_weight if c not in table.classes]
        if unknown:
            raise ConfigError(f"--class-weight names unknown classes {unknown}; the table's: {list(table.classes)}")
    blend = Blend(
        recipe=args.recipe,
        class_weight=class_weight,
        n_folds=args.folds,
        seed=args.seed,
        combine=args.combine,
        features=args.features,
        n_jobs=args.jobs,
        scheduler=args.scheduler,
        progress=not args.no_progress,
        tta_power=args.tta_power,
        time_limit=time_limit,
        device=args.device,
    ).fit(table)
    blend.save(args.output)
    if args.oof:
        write_table(blend.oof_, args.oof)
    s = blend.scores_["blend"]
    print(summary_line(blend, len(table)))
    print(
        f"recipe {blend.recipe_.name!r}: {len(blend.members_)} of {blend.recipe_.n_members} members "
        f"x {args.folds} folds"
    )
    for part in ("all", "unaltered", "manipulated"):
        if s.get(part):
            print(
                f"  out-of-fold {part:<12} accuracy {s[part]['accuracy']:.4f}  log loss {s[part]['log_loss']:.4f}"
                f"  ({s[part]['n']} rows)"
            )
    used = [(m.name, w) for m, w in zip(blend.members_, blend.weights_) if w > 0]
    print(
        f"  {len(used)} members with weight: "
        + ", ".join(f"{n} {w:.2f}" for n, w in used[:10])
        + (" ..." if len(used) > 10 else "")
    )
    print(f"wrote bundle {args.output}")
    return 0

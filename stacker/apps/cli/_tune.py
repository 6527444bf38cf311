"""``stacker tune HOLDOUT --trials N [--storage URL] [--study NAME] -o best-recipe.toml``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from stacker.apps.cli._common import add_table_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="tune a Blend's recipe, class weights, TTA power and post-processing with Optuna",
        description="Run trials of an Optuna study on a labelled holdout; every trial fits a Blend with "
        "grouped cross-validation and is scored on its out-of-fold predictions (post-processing on "
        "class-balanced resamples of them). An existing study of the same name resumes; several "
        "processes may share one study through PostgreSQL or a journal file. The best trial is "
        "written as a recipe that `stacker fit --recipe` reads.",
    )
    p.add_argument("table", help="labelled holdout prediction table (parquet, CSV or .npz)")
    p.add_argument("--trials", type=int, default=20, help="trials this process runs (default 20)")
    p.add_argument("-o", "--output", required=True, help="best recipe (TOML), rewritten after each new best")
    p.add_argument(
        "--storage",
        help="study storage: a SQLite file (*.db) or sqlite:/// URL, postgresql://user:pass@host:port/db, "
        "or journal:PATH (default: the output's name with .db, beside it)",
    )
    p.add_argument("--journal", metavar="PATH", help="shorthand for --storage journal:PATH")
    p.add_argument("--study", default=None, help="study name (default 'stacker-tune')")
    p.add_argument(
        "--recipe",
        default=None,
        help="base recipe bounding the search: a shipped name or a file (default: the 'default' recipe's "
        "members and ranges; its time budget does not carry over: see --trial-time-limit)",
    )
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    p.add_argument("--seed", type=int, default=0, help="seed of folds, members and resamples (default 0)")
    p.add_argument(
        "--postprocess",
        default=None,
        help="comma-separated choices among none,hungarian,greedy,sinkhorn (default: all available)",
    )
    p.add_argument("--max-count", type=int, default=None, help="upper bound of every family's member count")
    p.add_argument("--no-class-weights", action="store_true", help="do not search per-class weights")
    p.add_argument("--resamples", type=int, default=10, help="balanced resamples of the OOF rows (default 10)")
    p.add_argument("--timeout", type=float, default=None, help="stop starting trials after this many seconds")
    p.add_argument(
        "--max-trials", type=int, default=None, help="stop once the study (all workers) has this many finished trials"
    )
    p.add_argument(
        "--trial-time-limit",
        type=float,
        default=None,
        metavar="SECONDS",
        help="time budget of each trial's Blend fit (default: none, whatever the base recipe's budget)",
    )
    p.add_argument("--n-jobs", type=int, default=-1, help="parallel member fits (default -1: all cores)")
    p.add_argument("--scheduler", default=None, help="tcp://HOST:PORT of a Dask scheduler to run the fits on")
    p.add_argument("--no-prune", action="store_true", help="do not prune trials behind the median")
    p.add_argument("--sampler-seed", type=int, default=None, help="seed of the TPE sampler (default unseeded)")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=20,
        metavar="SECONDS",
        help="heartbeat of running trials in SQLite/PostgreSQL: a trial whose process died is "
        "failed after two beats and retried once (default 20; 0: off)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no line per trial")
    add_table_options(p)
    p.set_defaults(func=run)


def default_storage(output: str) -> str:
    """The SQLite file beside the output: ``best-recipe.toml`` -> ``best-recipe.db``."""
    return str(Path(output).with_suffix(".db"))


def _check_options(args: argparse.Namespace) -> None:
    """The options, named as on the command line, before a study file is made or the table read."""
    import math

    from stacker.errors import ConfigError
    from stacker.planner import check_time_limit
    from stacker.recipe import Recipe
    from stacker.tune import POSTPROCESS, postprocess_choices

    least = {"--folds": (args.folds, 2), "--resamples": (args.resamples, 1), "--max-count": (args.max_count, 1)}
    least |= {"--max-trials": (args.max_trials, 1), "--seed": (args.seed, 0), "--sampler-seed": (args.sampler_seed, 0)}
    least |= {"--heartbeat": (args.heartbeat, 0)}
    for option, (value, low) in least.items():
        if value is not None and value < low:
            raise ConfigError(f"{option} must be at least {low}, got {value}")
    if args.n_jobs == 0:
        raise ConfigError("--n-jobs must be a non-zero integer (-1: every core)")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    check_time_limit(args.trial_time_limit, "--trial-time-limit")
    for name, value in (("--journal", args.journal), ("--study", args.study)):
        if value is not None and not value.strip():
            raise ConfigError(f"{name} is empty")
    Recipe.coerce(args.recipe)
    if args.postprocess is not None:
        post = [c.strip() for c in args.postprocess.split(",") if c.strip()]
        if not post:
            raise ConfigError(f"--postprocess: unknown {args.postprocess!r}; choose from {list(POSTPROCESS)}")
        postprocess_choices(post, "--postprocess")


def run(args: argparse.Namespace) -> int:
    from stacker.errors import ConfigError, LabelError
    from stacker.files import refuse_overwrite
    from stacker.parallel import check_scheduler
    from stacker.table import read_table
    from stacker.tune import DEFAULT_STUDY, describe_storage, export_best, open_storage, tune

    if args.trials < 1:  # before a storage file is made
        raise ConfigError(f"--trials must be at least 1, got {args.trials}")
    if args.journal and args.storage:
        raise ConfigError("give either --storage or --journal, not both")
    if args.scheduler is not None:
        check_scheduler(args.scheduler, "--scheduler")
    _check_options(args)
    refuse_overwrite(
        [args.output, args.journal], [args.table] + [args.recipe] * bool(args.recipe and os.path.exists(args.recipe))
    )
    if not args.output.lower().endswith(".toml"):
        raise ConfigError(f"the output {args.output!r} must be a .toml recipe file")
    # The table before the storage: a bad table must not leave a new study file behind.
    table = read_table(args.table, renormalize=args.renormalize, atol=args.atol)
    if not table.has_labels:
        raise LabelError("tuning needs a labelled holdout; the table has no labels", path=table.source, column="label")
    storage = f"journal:{args.journal}" if args.journal else args.storage
    if storage is None:
        storage = default_storage(args.output)
        Path(storage).parent.mkdir(parents=True, exist_ok=True)
    open_storage(storage, heartbeat_interval=None)
    post = None if args.postprocess is None else [s.strip() for s in args.postprocess.split(",") if s.strip()]
    study_name = args.study or DEFAULT_STUDY
    best_seen: list[float] = []

    def report(study, trial) -> None:
        state = trial.state.name.lower()
        complete = trial.state.name == "COMPLETE"
        value = f" score {trial.value:.5f}" if complete else ""
        secs = trial.user_attrs.get("seconds")
        took = f" in {secs:.1f}s" if secs is not None else ""
        if not args.quiet:
            print(f"trial {trial.number}: {state}{value}{took}", file=sys.stderr, flush=True)
        try:
            best = study.best_value
        except ValueError:
            return
        if not best_seen or best > best_seen[-1]:
            # Keep the exported recipe current, so an interrupted run still leaves the best so far.
            export_best(study, args.output)
            best_seen.append(best)

    study = tune(
        table,
        n_trials=args.trials,
        storage=storage,
        study_name=study_name,
        recipe=args.recipe,
        n_folds=args.folds,
        seed=args.seed,
        postprocess=post,
        max_count=args.max_count,
        class_weights=not args.no_class_weights,
        n_resamples=args.resamples,
        timeout=args.timeout,
        max_trials=args.max_trials,
        n_jobs=args.n_jobs,
        scheduler=args.scheduler,
        trial_time_limit=args.trial_time_limit,
        prune=not args.no_prune,
        sampler_seed=args.sampler_seed,
        heartbeat_interval=args.heartbeat or None,
        callbacks=[report],
    )
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    counts = ", ".join(f"{n} {s}" for s, n in sorted(states.items()))
    if not states.get("complete") and states.get("running"):
        # A worker of a shared study whose own trials were pruned: the others may still finish one, and
        # the first to do so writes the recipe (see report above). Not an error of this worker.
        print(
            f"no trial of study {study_name!r} has finished yet ({counts}); the worker that finishes the "
            f"first one writes {args.output}"
        )
        return 0
    path = export_best(study, args.output)
    print(
        f"wrote {path}: best trial {study.best_trial.number}, score {study.best_value:.5f} "
        f"(study {study_name!r} in {describe_storage(storage)}: {counts})"
    )
    return 0

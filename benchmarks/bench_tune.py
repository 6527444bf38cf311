"""Tuning bars on the real CIFAR-10 table (../shared/data/cifar10-5models/probs.parquet).

1. Trials per hour of one ``stacker tune`` process on 2 cores (``n_jobs=2``).
2. Speed-up of 2 worker processes against 1 on one study (SQLite), each worker
   with ``n_jobs=1``: trials per hour with 2 workers / with 1.  Both runs
   evaluate the same enqueued trials, so trial sizes do not differ between them.
3. The tuned recipe's out-of-fold score against the base recipe's, both with
   the tune objective (challenge score on balanced resamples of OOF rows).  The
   best trial's own score is a maximum over trials on the same folds, so both
   recipes are also re-scored with a fresh seed (other folds, other member draws).

The base recipe is the small ``fast`` one by default (6 members: 2 XGBoost,
2 LightGBM, a pool, a selection); ``--recipe default`` runs the 52-member
1st-place recipe, which takes hours on 2 cores.

    python benchmarks/bench_tune.py [--trials 6] [--rows 10000] [--recipe fast]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-5models" / "probs.parquet"


def _table(rows: int | None, seed: int):
    from stacker.table import read_table

    t = read_table(CIFAR)
    if rows and rows < len(t):
        t = t.take(np.sort(np.random.default_rng(seed).choice(len(t), rows, replace=False)))
    return t


def _count(study):
    import optuna

    s = optuna.trial.TrialState
    trials = study.get_trials(deepcopy=False)
    return (sum(t.state == s.COMPLETE for t in trials), sum(t.state == s.PRUNED for t in trials), len(trials))


def bench_single(table, args, work: Path) -> dict:
    from stacker.tune import tune

    t0 = time.perf_counter()
    study = tune(
        table,
        n_trials=args.trials,
        storage=str(work / "single.db"),
        study_name="single",
        recipe=args.recipe,
        n_folds=args.folds,
        seed=args.seed,
        n_jobs=2,
        sampler_seed=args.seed,
    )
    wall = time.perf_counter() - t0
    complete, pruned, n = _count(study)
    return {"study": study, "wall": wall, "n": n, "complete": complete, "pruned": pruned}


def _workers(holdout: Path, args, storage: str, study: str, n_workers: int, trials_each: int) -> float:
    cmd = [
        sys.executable,
        "-m",
        "stacker",
        "tune",
        str(holdout),
        "--trials",
        str(trials_each),
        "--storage",
        storage,
        "--study",
        study,
        "--recipe",
        args.recipe,
        "--folds",
        str(args.folds),
        "--seed",
        str(args.seed),
        "--n-jobs",
        "1",
        "--no-prune",
        "-q",
    ]
    t0 = time.perf_counter()
    procs = [
        subprocess.Popen(
            [*cmd, "-o", str(Path(storage).with_name(f"{study}-{i}.toml"))],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(n_workers)
    ]
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"worker failed: {err}")
    return time.perf_counter() - t0


def bench_workers(table, args, work: Path, study) -> list[tuple[int, int, float, float]]:
    """Both runs evaluate the same enqueued trials (the single run's first ones), so only the workers differ."""
    import optuna

    from stacker.table import write_table

    holdout = work / "holdout.parquet"
    write_table(table, holdout)
    params = [t.params for t in study.trials if t.params][: args.worker_trials]
    out = []
    for n_workers in (1, 2):
        storage = str(work / f"workers{n_workers}.db")
        shared = optuna.create_study(storage=f"sqlite:///{storage}", study_name=f"w{n_workers}", direction="maximize")
        for p in params:
            shared.enqueue_trial(p)
        per = max(1, len(params) // n_workers)
        wall = _workers(holdout, args, storage, f"w{n_workers}", n_workers, per)
        done = optuna.load_study(study_name=f"w{n_workers}", storage=f"sqlite:///{storage}").trials
        secs = [t.user_attrs["seconds"] for t in done if "seconds" in t.user_attrs]
        out.append((n_workers, per * n_workers, wall, float(np.mean(secs)) if secs else float("nan")))
    return out


def bench_quality(table, args, study) -> list[tuple[str, int, float]]:
    from stacker.blend import Blend
    from stacker.recipe import Recipe
    from stacker.tune import balanced_resamples, best_recipe_dict
    from stacker.tune._scoring import resample_strata, score_oof

    tuned = Recipe.from_dict(best_recipe_dict(study))
    base = Recipe.coerce(args.recipe)
    rows = []
    for seed in (args.seed, args.seed + 1):
        res = balanced_resamples(table.y, 10, seed, strata=resample_strata(table))
        for name, rec in (("base", base), ("tuned", tuned)):
            b = Blend(recipe=rec, n_folds=args.folds, seed=seed, n_jobs=2).fit(table)
            rows.append((name, seed, score_oof(b.oof_, rec.postprocess or "none", res)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6, help="trials of the single-process run (default 6)")
    ap.add_argument("--worker-trials", type=int, default=4, help="trials of each worker-count run (default 4)")
    ap.add_argument("--rows", type=int, default=None, help="random subset of the 10,000 rows")
    ap.add_argument("--recipe", default="fast", help="base recipe (default fast)")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip", default="", help="comma-separated sections to skip: workers,quality")
    args = ap.parse_args()
    if not CIFAR.exists():
        print(f"skipped: real data not found at {CIFAR} (expected ../shared/data beside the project root)")
        return
    skip = set(filter(None, args.skip.split(",")))
    table = _table(args.rows, args.seed)
    print(
        f"CIFAR-10: {len(table)} rows, {table.n_models} models, {table.n_classes} classes; recipe {args.recipe!r}, "
        f"{args.folds} folds; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        single = bench_single(table, args, work)
        per_hour = 3600 * single["n"] / single["wall"]
        print("\n1. one process, n_jobs=2")
        print(f"{'trials':>7} {'complete':>9} {'pruned':>7} {'wall s':>8} {'trials/h':>9}")
        print(f"{single['n']:>7} {single['complete']:>9} {single['pruned']:>7} {single['wall']:>8.1f} {per_hour:>9.0f}")
        if "workers" not in skip:
            rows = bench_workers(table, args, work, single["study"])
            print("\n2. workers on one SQLite study (n_jobs=1 each, no pruning, the same enqueued trials)")
            print(f"{'workers':>7} {'trials':>7} {'wall s':>8} {'s/trial':>8} {'trials/h':>9} {'speed-up':>9}")
            base_rate = None
            for n_workers, n, wall, per_trial in rows:
                rate = 3600 * n / wall
                base_rate = base_rate or rate
                print(f"{n_workers:>7} {n:>7} {wall:>8.1f} {per_trial:>8.1f} {rate:>9.0f} {rate / base_rate:>9.2f}")
            print("(wall s includes starting the worker processes; s/trial is each trial's own time)")
        if "quality" not in skip:
            print("\n3. out-of-fold score (challenge score on balanced resamples of OOF rows)")
            print(f"best trial in the study (seed {args.seed}): {single['study'].best_value:.5f}")
            print(f"{'recipe':>7} {'seed':>5} {'score':>8}")
            for name, seed, score in bench_quality(table, args, single["study"]):
                print(f"{name:>7} {seed:>5} {score:>8.5f}")


if __name__ == "__main__":
    main()

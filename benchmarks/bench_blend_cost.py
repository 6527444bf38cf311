"""Blend cost: wall time and peak memory of a K-fold Blend fit, against a plain sequential loop.

The holdout is synthetic but realistic: ``--rows`` rows (half unaltered, half
manipulated views of ``rows/2`` images) of 9 level-1 models x 10 classes plus
the manipulation flag (91 features).  The models share their errors (a per-image
difficulty and confuser class, more shared noise on manipulated views), so
level-1 accuracies are about 0.88-0.95 and the blend cannot reach 1.0.

For each (rows, members) setting it measures

* ``Blend.fit`` (``--jobs`` parallel fits, one thread each): wall time, rows/s,
  peak resident memory of the process tree (sampled every 0.2 s);
* the straightforward loop over the same members and folds in this process,
  each fit with the libraries' own threading (XGBoost/LightGBM/torch on all
  cores) and Keras members trained by ``model.fit`` (``trainer="keras"``), as a
  user would write it;
* the sum of the Blend's per-fit seconds: what the Blend's own fits (one
  thread each, the lean MLP loop) would take one after another.

``--members N`` scales the recipe's family counts to about N members;
``--rows`` and ``--members`` take several values to show how time grows.

Run:  python benchmarks/bench_blend_cost.py --rows 50000 --jobs 2
      python benchmarks/bench_blend_cost.py --rows 50000 --no-blend --loop-threads single
      python benchmarks/bench_blend_cost.py --rows 10000 25000 50000 --members 13 27 --no-loop
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np


def synthetic_holdout(n_rows: int, n_models: int = 9, n_classes: int = 10, seed: int = 0):
    """A seeded holdout whose level-1 models share their mistakes, as real CNNs do.

    Each image draws once a shared logit noise and a confuser class pulled by a
    per-image difficulty; each manipulated view adds more shared noise; every
    model sees those plus its own noise, at its own strength and temperature.
    Level-1 accuracies land near 0.88-0.95 (manipulated rows lower) and no
    blend can reach 1.0, because the shared part is the same for all models.
    """
    from stacker.table import PredictionTable

    rng = np.random.default_rng(seed)
    classes = [f"camera-{i}" for i in range(n_classes)]
    n_img = n_rows // 2
    y_img = rng.integers(0, n_classes, n_img)
    ids = np.repeat(np.arange(n_img), 2)
    manip = np.tile([0, 1], n_img)
    y = y_img[ids]
    n = len(ids)
    confuser = (y_img + rng.integers(1, n_classes, n_img)) % n_classes
    difficulty = rng.beta(1.0, 3.0, n_img)
    shared = rng.normal(0.0, 1.0, (n_img, n_classes))
    shared[np.arange(n_img), confuser] += 3.0 * difficulty
    shared = shared[ids] + manip[:, None] * rng.normal(0.0, 0.8, (n, n_classes))
    onehot = np.eye(n_classes)[y]
    probs = np.empty((n, n_models, n_classes))
    for m in range(n_models):
        strength, temperature = rng.uniform(4.0, 5.2), rng.uniform(0.7, 1.5)
        z = temperature * (strength * onehot + shared + rng.normal(0.0, 0.8, (n, n_classes)))
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probs[:, m] = e / e.sum(axis=1, keepdims=True)
    return PredictionTable.from_arrays(
        [f"img{i:06d}" for i in ids],
        probs,
        classes,
        models=[f"model-{m}" for m in range(n_models)],
        labels=[classes[k] for k in y],
        manip=manip,
    )


def scaled_recipe(name: str, n_members: int | None):
    from stacker.recipe import FamilySpec, Recipe

    r = Recipe.coerce(name)
    if not n_members or n_members >= r.n_members:
        return r
    f = n_members / r.n_members
    fams = [FamilySpec(x.family, max(1, round(x.count * f)), x.params) for x in r.families]
    return Recipe(f"{r.name}-x{n_members}", fams, r.description)


class PeakRSS:
    """Peak resident memory of this process plus its children, sampled in a thread."""

    def __init__(self, every: float = 0.2) -> None:
        import psutil

        self.proc = psutil.Process()
        self.every = every
        self.peak = 0
        self._stop = threading.Event()

    def _total(self) -> int:
        total = self.proc.memory_info().rss
        for c in self.proc.children(recursive=True):
            try:
                total += c.memory_info().rss
            except Exception:
                pass
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.every)

    def __enter__(self):
        self.peak = self._total()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def sequential_loop(table, recipe, n_folds: int, seed: int, threads: str) -> tuple[float, dict[str, float]]:
    """Fit the Blend's members on the Blend's folds one after another, as a user's loop would.

    ``threads="library"``: each library's own threading (XGBoost, LightGBM and
    torch on every core); ``"single"``: one thread per fit.  Keras members are
    trained by ``model.fit`` in both.
    """
    import contextlib

    import pandas as pd
    from threadpoolctl import threadpool_limits

    from stacker.blend import _grouped_folds
    from stacker.features import FeatureSpec
    from stacker.metamodels import BLOCK_FAMILIES, get_family
    from stacker.parallel import task_seed as _task_seed

    spec = FeatureSpec.from_table(table, "log")
    X, y = spec.transform(table), table.y
    groups = pd.factorize(pd.Series(table.ids, dtype=object))[0]
    folds = _grouped_folds(table, y, n_folds, seed)
    n_threads = (os.cpu_count() or 1) if threads == "library" else 1
    limit = threadpool_limits(1) if threads == "single" else contextlib.nullcontext()
    if threads == "single":
        import torch

        torch.set_num_threads(1)
    fam_s: dict[str, float] = {}
    t0 = time.perf_counter()
    with limit:
        for m in recipe.sample(seed):
            t_m = time.perf_counter()
            for f in range(n_folds):
                tr, te = folds != f, folds == f
                params = dict(m.params)
                if m.family in BLOCK_FAMILIES:
                    params.update(layout=spec.layout, input=spec.kind)
                if m.family in ("xgboost", "lightgbm"):
                    params["n_jobs"] = n_threads
                if m.family == "keras":
                    params["trainer"] = "keras"
                est = get_family(m.family)(**params, random_state=_task_seed(m.seed, f))
                est.fit(X[tr], y[tr], groups=groups[tr]).predict_proba(X[te])
            fam_s[m.family] = fam_s.get(m.family, 0.0) + time.perf_counter() - t_m
    return time.perf_counter() - t0, fam_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[50_000])
    ap.add_argument("--members", type=int, nargs="+", default=[0], help="about N members (0: the whole recipe)")
    ap.add_argument(
        "--recipe",
        default="best",
        help="recipe (default 'best': every member, no budget; 'default' fits within its time budget)",
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--no-loop", action="store_true", help="skip the sequential loop")
    ap.add_argument(
        "--loop-threads",
        choices=["library", "single"],
        default="library",
        help="the loop's threading: each library's default (all cores) or one thread per fit",
    )
    ap.add_argument("--no-blend", action="store_true", help="time only the loop")
    args = ap.parse_args()

    from stacker.blend import Blend

    results = []
    for rows in args.rows:
        table = synthetic_holdout(rows)
        for n_members in args.members:
            recipe = scaled_recipe(args.recipe, n_members)
            wall = peak = acc = None
            fitted = recipe.n_members
            fam_s: dict[str, float] = {}
            if not args.no_blend:
                with PeakRSS() as mem:
                    t0 = time.perf_counter()
                    b = Blend(recipe, n_folds=args.folds, seed=0, n_jobs=args.jobs).fit(table)
                    wall = time.perf_counter() - t0
                peak, acc = mem.peak / 2**30, b.scores_["blend"]["all"]["accuracy"]
                fitted = len(b.members_)  # fewer than sampled under a time budget
                for m, s in zip(b.members_, b.fit_seconds_.sum(axis=1)):
                    fam_s[m.family] = fam_s.get(m.family, 0.0) + s
                print(
                    f"rows {rows:>7}  members {fitted:>3}/{recipe.n_members}  blend {wall:8.1f}s  "
                    f"peak {peak:5.2f} GiB  "
                    f"oof acc {acc:.4f}  fit seconds by family: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in fam_s.items())
                    + f"; sum {sum(fam_s.values()):.0f}s (the Blend's own fits one after another)",
                    flush=True,
                )
            loop, loop_fam = (
                (None, {}) if args.no_loop else sequential_loop(table, recipe, args.folds, 0, args.loop_threads)
            )
            if loop is not None:
                print(
                    f"rows {rows:>7}  members {recipe.n_members:>3}  loop ({args.loop_threads} threads) {loop:8.1f}s  "
                    "seconds by family: " + ", ".join(f"{k} {v:.0f}" for k, v in loop_fam.items()),
                    flush=True,
                )
            results.append((rows, fitted, wall, peak, loop, fam_s))

    print(
        f"\n{args.folds}-fold Blend fit, {args.jobs} jobs, recipe {args.recipe!r}, 9 models x 10 classes + manip, "
        f"{os.cpu_count()} cores; loop: {args.loop_threads} threads"
    )
    print(
        f"{'rows':>8}{'members':>9}{'fits':>6}{'wall s':>9}{'rows/s':>9}{'peak GiB':>10}{'loop s':>9}"
        f"{'speed-up':>10}{'bound':>8}"
    )

    def fmt(v, width: int, prec: int, suffix: str = "") -> str:
        return ("-" if v is None else f"{v:.{prec}f}{suffix}").rjust(width)

    for rows, nm, wall, peak, loop, fam_s in results:
        speed = None if loop is None or wall is None else loop / wall
        # No schedule of the Blend's own fits on `jobs` cores beats sum(fit seconds) / jobs.
        bound = None if loop is None or not fam_s else loop / (sum(fam_s.values()) / args.jobs)
        rate = None if wall is None else rows * nm * args.folds / wall
        print(
            f"{rows:>8}{nm:>9}{nm * args.folds:>6}{fmt(wall, 9, 1)}{fmt(rate, 9, 0)}{fmt(peak, 10, 2)}"
            f"{fmt(loop, 9, 1)}{fmt(speed, 10, 2, 'x')}{fmt(bound, 8, 2, 'x')}"
        )
    print(
        "rows/s = rows x members x folds fitted per second of wall time; bound = loop / (sum of the Blend's fit "
        "seconds / jobs), the most any schedule of the Blend's fits could reach"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

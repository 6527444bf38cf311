"""Blend quality on the real CIFAR-10 table: one table of out-of-fold accuracy and log loss.

Every row is scored on the same 5 folds (stratified, grouped by id) of the
10,000 rows of ``../shared/data/cifar10-5models/probs.parquet``:

* each level-1 model alone, their arithmetic and geometric mean (no fitting);
* scikit-learn's ``StackingClassifier`` with logistic regression over the
  frozen level-1 probabilities;
* each meta-model family alone (one member, default parameters);
* the Blend with each requested recipe.

Run:  python benchmarks/bench_blend_quality.py [--recipes default cmi-1st-place] [--jobs 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "cifar10-5models" / "probs.parquet"


class FrozenModel(ClassifierMixin, BaseEstimator):
    """A level-1 model whose probabilities are already columns of X (for StackingClassifier)."""

    def __init__(self, start: int = 0, n_classes: int = 10) -> None:
        self.start = start
        self.n_classes = n_classes

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        return self

    def predict_proba(self, X):
        return np.asarray(X)[:, self.start : self.start + self.n_classes]

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(1)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["default"], help="Blend recipes to score")
    ap.add_argument("--families", nargs="*", default=["logistic", "pool", "selection", "xgboost", "lightgbm", "keras"])
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--features", default="log")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: real data not found at {DATA}")
        return 0

    from stacker import metrics
    from stacker.aggregate import power_mean
    from stacker.blend import Blend
    from stacker.cv import grouped_folds
    from stacker.recipe import Recipe
    from stacker.table import read_table

    table = read_table(DATA)
    y = table.y
    folds = grouped_folds(y, table.ids, args.folds, args.seed, classes=table.classes)
    rows: list[tuple[str, float, float, float]] = []

    def add(name: str, p: np.ndarray, seconds: float = 0.0) -> None:
        rows.append((name, metrics.accuracy(y, p), metrics.log_loss(y, p), seconds))
        print(f"  {name:<40} acc {rows[-1][1]:.4f}  ll {rows[-1][2]:.4f}  {seconds:7.1f}s", flush=True)

    for m in table.models:
        add(f"level-1 {m}", table.proba(m))
    add("arithmetic mean", power_mean(table.probs, 1.0, axis=1))
    add("geometric mean", power_mean(table.probs, 0.0, axis=1))

    from sklearn.ensemble import StackingClassifier
    from sklearn.linear_model import LogisticRegression

    X = table.probs.reshape(len(table), -1)
    k = table.n_classes
    t0 = time.perf_counter()
    oof = np.zeros((len(y), k))
    for f in range(args.folds):
        tr, te = folds != f, folds == f
        st = StackingClassifier(
            [(m, FrozenModel(i * k, k)) for i, m in enumerate(table.models)],
            final_estimator=LogisticRegression(max_iter=1000),
            cv=3,
            stack_method="predict_proba",
        ).fit(X[tr], y[tr])
        oof[te] = st.predict_proba(X[te])
    add("StackingClassifier + LogisticRegression", oof, time.perf_counter() - t0)

    for fam in args.families:
        recipe = Recipe.from_dict({"name": f"{fam}-alone", "families": {fam: {"count": 1}}})
        t0 = time.perf_counter()
        b = Blend(recipe, n_folds=args.folds, seed=args.seed, combine="mean", features=args.features, n_jobs=1).fit(
            table
        )
        assert np.array_equal(b.folds_, folds)
        add(f"{fam} alone", b.oof_.probs[:, 0], time.perf_counter() - t0)

    from stacker.blend import combine_members

    for name in args.recipes:
        t0 = time.perf_counter()
        b = Blend(
            name, n_folds=args.folds, seed=args.seed, combine="weights", features=args.features, n_jobs=args.jobs
        ).fit(table)
        seconds = time.perf_counter() - t0
        assert np.array_equal(b.folds_, folds)
        add(f"Blend {name} ({b.recipe_.n_members} members, weights)", b.oof_.probs[:, 0], seconds)
        top = sorted(zip(b.weights_, (m.name for m in b.members_)), reverse=True)[:8]
        print("    weights:", ", ".join(f"{n} {w:.2f}" for w, n in top if w > 0))
        # The same fitted members, combined by equal averaging, and (for recipes that extend the
        # 1st-place one) its 52 XGBoost/LightGBM/Keras members alone: members are seeded by
        # family position, so these are exactly the members a fit of that recipe would train.
        _, p = combine_members(b.member_oof_, y, folds, None, "mean")
        add(f"Blend {name} ({b.recipe_.n_members} members, mean)", p)
        core = [i for i, m in enumerate(b.members_) if m.family in ("xgboost", "lightgbm", "keras")]
        if 0 < len(core) < len(b.members_):
            for rule in ("mean", "weights"):
                _, p = combine_members(b.member_oof_[core], y, folds, None, rule)
                add(f"  its {len(core)} xgboost/lightgbm/keras members, {rule}", p)
        for fam in ("xgboost", "lightgbm", "keras"):
            idx = [i for i, m in enumerate(b.members_) if m.family == fam]
            if idx:
                _, p = combine_members(b.member_oof_[idx], y, folds, None, "mean")
                add(f"  its {len(idx)} {fam} members, mean", p)

    print(f"\nCIFAR-10, {len(y)} rows, {args.folds}-fold out-of-fold, seed {args.seed}, features={args.features}")
    print(f"{'predictor':<48}{'accuracy':>9}{'log loss':>10}{'seconds':>9}")
    for name, acc, ll, s in rows:
        print(f"{name:<48}{acc:>9.4f}{ll:>10.4f}{s:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

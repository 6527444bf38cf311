"""``stacker demo``: the main job end to end on data that ships with the dependencies.

Uses scikit-learn's 1,797 real 8x8 handwritten digits: three level-1 models are
cross-validated on a holdout split and predict a class-balanced test split; the
level-1 out-of-fold and test probabilities are written as prediction tables in
``OUTPUT`` and summarised as ``stacker inspect`` does.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from stacker.summary import format_summary, summarize
from stacker.table import PredictionTable, write_table

__all__ = ["run_demo"]


def _level1_tables(seed: int) -> tuple[PredictionTable, PredictionTable]:
    from sklearn.datasets import load_digits
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    digits = load_digits()
    x, y = digits.data, digits.target
    classes = [str(c) for c in digits.target_names]
    rng = np.random.default_rng(seed)
    # A class-balanced test split: 50 images per class, like the challenge's 264 per class.
    test = np.concatenate([rng.choice(np.flatnonzero(y == k), 50, replace=False) for k in range(10)])
    hold = np.setdiff1d(np.arange(len(y)), test)
    folds = np.empty(len(hold), dtype=int)
    for f, (_, idx) in enumerate(StratifiedKFold(5, shuffle=True, random_state=seed).split(x[hold], y[hold])):
        folds[idx] = f
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000)),
        "knn": KNeighborsClassifier(n_neighbors=10),
        "forest": RandomForestClassifier(n_estimators=200, random_state=seed, n_jobs=2),
    }
    oof, tst = {}, {}
    cv = [(np.flatnonzero(folds != f), np.flatnonzero(folds == f)) for f in range(5)]
    for name, est in models.items():
        oof[name] = cross_val_predict(est, x[hold], y[hold], cv=cv, method="predict_proba")
        tst[name] = est.fit(x[hold], y[hold]).predict_proba(x[test])
    holdout = PredictionTable.from_arrays(
        [f"digit{i:04d}" for i in hold], oof, classes, labels=[classes[k] for k in y[hold]], folds=folds,
        renormalize=True,
    )
    test_t = PredictionTable.from_arrays(
        [f"digit{i:04d}" for i in test], tst, classes, labels=[classes[k] for k in y[test]], renormalize=True
    )
    return holdout, test_t


def run_demo(output: str | Path = "demo-output", seed: int = 0) -> dict:
    """Run the demo, write its tables under ``output`` and return the summaries."""
    out = Path(output)
    start = time.perf_counter()
    holdout, test = _level1_tables(seed)
    write_table(holdout, out / "holdout.parquet")
    write_table(test, out / "test.parquet")
    summaries = {"holdout": summarize(holdout), "test": summarize(test)}
    print(f"level-1 out-of-fold probabilities on the holdout ({out / 'holdout.parquet'})")
    print(format_summary(summaries["holdout"]))
    print(f"\nlevel-1 probabilities on the balanced test set ({out / 'test.parquet'})")
    print(format_summary(summaries["test"]))
    print(f"\ndemo finished in {time.perf_counter() - start:.1f} s")
    return summaries

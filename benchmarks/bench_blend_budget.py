"""Blend under a time budget: fit time, members fitted, peak memory and out-of-fold quality per budget.

One table in one run.  For each data set and budget (``--budgets``, seconds or
``none``) it fits ``Blend(recipe, time_limit=budget)`` (``none`` fits the
unbudgeted ``best`` recipe: the same members, all of them) and reports the fit's
wall time, the members fitted of those sampled, the peak resident memory of the
process tree, and the blend's out-of-fold accuracy and log loss.  Beside them,
on the same stored level-1 out-of-fold probabilities and the same folds:
logistic-regression stacking (log-probabilities in, cross-fitted) and Caruana
ensemble selection of the level-1 models (cross-fitted), plus the best level-1
model.

Data sets (``--datasets``):

* ``cifar``: the real CIFAR-10 table, 10,000 rows x 5 CNNs x 10 classes;
* ``letter`` (20,000 rows, 26 classes), ``pendigits`` (10,992, 10), ``satimage``
  (6,435, 6): PMLB tables from ``../shared/data/tabular``; level 1 = logistic
  regression, Gaussian naive Bayes, 15-nearest neighbours and a random forest,
  each with 5-fold ``cross_val_predict``, built by this script (and cached in
  ``--cache``).

Run:  python benchmarks/bench_blend_budget.py [--datasets cifar letter pendigits satimage]
          [--budgets 30 60 120 300 none] [--jobs 2]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pmlb_table(name: str, cache: Path, seed: int = 0):
    """Level-1 out-of-fold probabilities of four scikit-learn models on a PMLB table, as a prediction table."""
    import pandas as pd
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from stacker.table import PredictionTable, read_table, write_table

    out = cache / f"{name}-level1.parquet"
    if out.exists():
        return read_table(out)
    df = pd.read_csv(DATA / "tabular" / f"{name}.csv.gz", sep="\t")
    y = df.pop("class").astype(str).to_numpy()
    X = df.to_numpy(dtype=np.float64)
    classes = sorted(set(y), key=lambda c: (len(c), c))
    cv = StratifiedKFold(5, shuffle=True, random_state=seed)
    models = {
        "logreg": make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)),
        "naive-bayes": GaussianNB(),
        "knn15": make_pipeline(StandardScaler(), KNeighborsClassifier(15)),
        "forest": RandomForestClassifier(300, min_samples_leaf=2, n_jobs=-1, random_state=seed),
    }
    probs = {}
    for m, est in models.items():
        t0 = time.perf_counter()
        p = cross_val_predict(est, X, y, cv=cv, method="predict_proba", n_jobs=1 if m == "forest" else -1)
        sorted_labels = sorted(set(y))  # cross_val_predict's column order
        p = p[:, [sorted_labels.index(c) for c in classes]]
        p = np.clip(p, 1e-6, None)
        probs[m] = p / p.sum(axis=1, keepdims=True)
        print(f"  level 1 {name}/{m}: {time.perf_counter() - t0:.1f} s", flush=True)
    table = PredictionTable.from_arrays([f"{name}-{i}" for i in range(len(y))], probs, classes, labels=list(y))
    cache.mkdir(parents=True, exist_ok=True)
    write_table(table, out)
    return table


def load(name: str, cache: Path):
    if name == "cifar":
        from stacker.table import read_table

        return read_table(DATA / "cifar10-5models" / "probs.parquet")
    return pmlb_table(name, cache)


def anchors(table, folds: np.ndarray) -> dict[str, tuple[float, float]]:
    """Best level-1 model, LR stacking and Caruana selection on the same folds (cross-fitted)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from stacker import metrics
    from stacker.metamodels.selection import ensemble_selection

    y = table.y
    out = {}
    best = max(range(len(table.models)), key=lambda i: metrics.accuracy(y, table.probs[:, i]))
    p = table.probs[:, best]
    out[f"best level-1 ({table.models[best]})"] = (metrics.accuracy(y, p), metrics.log_loss(y, p))
    X = np.log(np.clip(table.probs, 1e-15, 1)).reshape(len(y), -1)
    lr = np.zeros((len(y), table.n_classes))
    sel = np.zeros_like(lr)
    for f in np.unique(folds):
        tr, te = folds != f, folds == f
        est = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000)).fit(X[tr], y[tr])
        lr[np.ix_(te, est[-1].classes_)] = est.predict_proba(X[te])
        w = ensemble_selection(table.probs[tr].transpose(1, 0, 2), y[tr], 50)
        sel[te] = np.einsum("nmk,m->nk", table.probs[te], w)
    out["LR stacking (scaled log-probs)"] = (metrics.accuracy(y, lr), metrics.log_loss(y, lr))
    out["Caruana selection"] = (metrics.accuracy(y, sel), metrics.log_loss(y, sel))
    return out


def forecast_seconds(table, recipe: str, jobs: int, n_folds: int = 5) -> float:
    """The cost model's uncalibrated forecast of an unbudgeted fit of ``recipe`` on ``table``."""
    from stacker.planner import CostModel, Planner, Work
    from stacker.recipe import get_recipe

    work = Work(
        int(len(table) * (n_folds - 1) / n_folds),
        len(table.models) * table.n_classes + int("manip" in table.meta.columns),
        table.n_classes,
        len(table.models),
    )
    members = [
        (m.name, m.family, m.params, [list(range(n_folds))] if m.family == "keras" else [[f] for f in range(n_folds)])
        for m in get_recipe(recipe).sample(0)
    ]
    return Planner(members, CostModel(work), jobs, None, n_folds=n_folds).forecast()[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["cifar", "satimage", "pendigits", "letter"])
    ap.add_argument(
        "--budgets",
        nargs="*",
        default=["30", "60", "120", "300", "none"],
        help="seconds, 'default' (the recipe's own time_limit) or 'none' (the 'best' recipe); "
        "none given: the anchors only",
    )
    ap.add_argument(
        "--max-none-seconds",
        type=float,
        default=1800,
        help="skip a 'none' fit the cost model expects to take longer (printing the forecast)",
    )
    ap.add_argument("--recipe", default="default", help="recipe fitted under each budget (default: default)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "stacker-bench-cache")
    args = ap.parse_args()
    if not DATA.exists():
        print(f"skipped: real data not found at {DATA}")
        return 0
    from bench_blend_cost import PeakRSS

    from stacker import Blend

    rows = []
    for name in args.datasets:
        table = load(name, args.cache)
        print(f"{name}: {len(table)} rows, {len(table.models)} models x {table.n_classes} classes", flush=True)
        from stacker.cv import grouped_folds

        folds = grouped_folds(table.y, table.ids, 5, args.seed, classes=table.classes)  # the Blend's folds
        for b in args.budgets:
            limit = {"none": math.inf, "default": None}[b] if b in ("none", "default") else float(b)
            recipe = "best" if b == "none" else args.recipe
            if b == "none" and (eta := forecast_seconds(table, "best", args.jobs)) > args.max_none_seconds:
                rows.append(
                    (
                        name,
                        f"best none (not run: forecast {eta / 60:.0f} min)",
                        float("nan"),
                        "",
                        float("nan"),
                        float("nan"),
                        float("nan"),
                        "",
                    )
                )
                print(f"  {rows[-1][1]}", flush=True)
                continue
            with PeakRSS() as peak:
                t0 = time.perf_counter()
                blend = Blend(recipe, n_jobs=args.jobs, seed=args.seed, time_limit=limit).fit(table)
                seconds = time.perf_counter() - t0
            assert np.array_equal(folds, blend.folds_)
            s = blend.scores_["blend"]["all"]
            sampled = blend.recipe_.n_members
            over = blend.plan_.get("overruns") or []
            label = f"{recipe} {b}" if b in ("none", "default") else f"{recipe} {b} s"
            if b == "default":
                label += f" ({blend.time_limit_:g} s)"
            rows.append(
                (
                    name,
                    label,
                    seconds,
                    f"{len(blend.members_)}/{sampled}",
                    peak.peak / 2**30,
                    s["accuracy"],
                    s["log_loss"],
                    f"{len(over)} overrun(s)" if over else "",
                )
            )
            print(
                f"  {rows[-1][1]:<16} {seconds:7.1f} s  members {rows[-1][3]:>6}  peak {rows[-1][4]:.2f} GiB  "
                f"acc {s['accuracy']:.4f}  ll {s['log_loss']:.4f}  {rows[-1][7]}  "
                f"(observed / estimated seconds: {blend.plan_.get('cost_factors')})",
                flush=True,
            )
        for what, (acc, ll) in anchors(table, folds).items():
            rows.append((name, what, float("nan"), "", float("nan"), acc, ll, ""))
    print(f"\n{'data':<10}{'fit':<34}{'seconds':>8}{'members':>9}{'peak GiB':>9}{'accuracy':>9}{'log loss':>9}")
    for name, what, sec, mem, peak, acc, ll, note in rows:
        sec_s = "" if math.isnan(sec) else f"{sec:.1f}"
        peak_s = "" if math.isnan(peak) else f"{peak:.2f}"
        acc_s = "" if math.isnan(acc) else f"{acc:.4f}"
        ll_s = "" if math.isnan(ll) else f"{ll:.4f}"
        print(f"{name:<10}{what:<34}{sec_s:>8}{mem:>9}{peak_s:>9}{acc_s:>9}{ll_s:>9}  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Per-fit costs behind the default recipe's cost choices, on one thread.

On 40,000 training rows of the cost benchmark's synthetic holdout (91 features,
early stopping on the members' inner split) it times

* one LightGBM fit (47 leaves, learning rate 0.03) with 255 and with 63
  histogram bins: seconds, rounds, ms per round, validation log loss;
* one XGBoost fit (depth 1 and 2, eta 0.2) with 256 and with 64 bins;
* one Keras MLP member (91-128-10, Adam, batch 256) trained by the lean torch
  loop and by ``model.fit``: ms per epoch and test log loss;
* torch's CPU ``elu`` against the loop's exp-based ELU (forward + backward).

Run:  python benchmarks/bench_fit_parts.py [--rows 50000]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()

    import torch
    from threadpoolctl import threadpool_limits

    from bench_blend_cost import synthetic_holdout
    from stacker import metrics
    from stacker.features import FeatureSpec
    from stacker.metamodels import get_family

    torch.set_num_threads(1)
    threadpool_limits(1)
    table = synthetic_holdout(args.rows)
    X, y = FeatureSpec.from_table(table, "log").transform(table), table.y
    tr = np.arange(len(y)) < int(0.8 * len(y))
    groups = table.ids

    def fit(family: str, **params):
        t0 = time.perf_counter()
        est = get_family(family)(**params).fit(X[tr], y[tr], groups=groups[tr])
        seconds = time.perf_counter() - t0
        p = est.predict_proba(X[~tr])
        return est, seconds, metrics.log_loss(y[~tr], p)

    print(f"{int(tr.sum())} training rows, {X.shape[1]} features, one thread")
    for bins in (255, 63):
        est, s, ll = fit("lightgbm", num_leaves=47, learning_rate=0.03, min_data_in_leaf=192, max_bin=bins,
                         feature_fraction=0.75, bagging_fraction=0.85)
        rounds = est.n_iter_ + 25
        print(f"lightgbm max_bin {bins:>3}: {s:6.1f} s, {rounds} rounds, {1000 * s / rounds:5.1f} ms/round, "
              f"test log loss {ll:.4f}", flush=True)
    for depth in (1, 2):
        for bins in (256, 64):
            est, s, ll = fit("xgboost", max_depth=depth, learning_rate=0.2, max_bin=bins, subsample=0.85,
                             colsample_bytree=0.75)
            rounds = est.n_iter_ + 25
            print(f"xgboost depth {depth} max_bin {bins:>3}: {s:5.1f} s, {rounds} rounds, "
                  f"{1000 * s / rounds:5.1f} ms/round, test log loss {ll:.4f}", flush=True)
    for trainer in ("torch", "keras"):
        est, s, ll = fit("keras", hidden_layer_sizes=(128,), learning_rate=1e-3, batch_size=256, trainer=trainer)
        print(f"keras 91-128-10 trainer={trainer:<5}: {s:5.1f} s, {est.n_iter_} epochs, "
              f"{1000 * s / est.n_iter_:5.0f} ms/epoch, test log loss {ll:.4f}", flush=True)

    import torch.nn.functional as F

    from stacker.metamodels._mlp_loop import _activation

    h = torch.randn(512, 60, requires_grad=True)
    for name, fn in (("torch F.elu", F.elu), ("loop elu", _activation("elu"))):
        for _ in range(50):
            fn(h).sum().backward()
        t0 = time.perf_counter()
        for _ in range(500):
            fn(h).sum().backward()
        print(f"{name:<12} forward + backward on 512 x 60: {(time.perf_counter() - t0) / 500 * 1e6:6.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

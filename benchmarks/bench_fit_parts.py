"""Per-fit costs behind the default recipe's cost choices, on one thread.

On 40,000 training rows of the cost benchmark's synthetic holdout (91 features,
early stopping on the members' inner split) it times

* one LightGBM fit (47 leaves, learning rate 0.03) with 255 and with 63
  histogram bins: seconds, rounds, ms per round, validation log loss;
* one XGBoost fit (depth 1 and 2, eta 0.2) with 256 and with 64 bins;
* one Keras MLP member (91-128-10, Adam, batch 256) trained by the lean torch
  loop and by ``model.fit``: ms per epoch and test log loss;
* torch's CPU ``elu`` against the loop's exp-based ELU (forward + backward);
* the per-step pieces of the batched loop: softmax over the short class axis
  against the transposed layout, dropout multipliers from torch's ``rand``
  against the loop's 16-bit slices of PCG64 output;
* the ``default`` recipe's 12 Keras members on 5 folds of the cost benchmark's
  holdout: each member's 5 fold networks one by one and as one batched stack
  (``KerasMLPClassifier.fit_many``), with their epochs and fold log losses;
* the Blend's weight search (54 members, ``--rows`` rows, 5 folds) on 1 and 2 threads.

Run:  python benchmarks/bench_fit_parts.py [--rows 50000] [--skip trees keras-members]
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
    ap.add_argument("--skip", nargs="*", default=[], choices=["trees", "keras", "steps", "keras-members", "search"])
    args = ap.parse_args()

    import torch
    from bench_blend_cost import synthetic_holdout
    from threadpoolctl import threadpool_limits

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
    if "trees" not in args.skip:
        trees(fit)
    if "keras" not in args.skip:
        for trainer in ("torch", "keras"):
            est, s, ll = fit("keras", hidden_layer_sizes=(128,), learning_rate=1e-3, batch_size=256, trainer=trainer)
            print(
                f"keras 91-128-10 trainer={trainer:<5}: {s:5.1f} s, {est.n_iter_} epochs, "
                f"{1000 * s / est.n_iter_:5.0f} ms/epoch, test log loss {ll:.4f}",
                flush=True,
            )
    if "steps" not in args.skip:
        steps()
    if "keras-members" not in args.skip:
        keras_members(table, X, y)
    if "search" not in args.skip:
        weight_search(table, X, y)
    return 0


def trees(fit) -> None:
    for bins in (255, 63):
        est, s, ll = fit(
            "lightgbm",
            num_leaves=47,
            learning_rate=0.03,
            min_data_in_leaf=192,
            max_bin=bins,
            feature_fraction=0.75,
            bagging_fraction=0.85,
        )
        rounds = est.n_iter_ + 25
        print(
            f"lightgbm max_bin {bins:>3}: {s:6.1f} s, {rounds} rounds, {1000 * s / rounds:5.1f} ms/round, "
            f"test log loss {ll:.4f}",
            flush=True,
        )
    for depth in (1, 2):
        for bins in (256, 64):
            est, s, ll = fit(
                "xgboost", max_depth=depth, learning_rate=0.2, max_bin=bins, subsample=0.85, colsample_bytree=0.75
            )
            rounds = est.n_iter_ + 25
            print(
                f"xgboost depth {depth} max_bin {bins:>3}: {s:5.1f} s, {rounds} rounds, "
                f"{1000 * s / rounds:5.1f} ms/round, test log loss {ll:.4f}",
                flush=True,
            )


def _per_call_us(fn, n: int = 500) -> float:
    for _ in range(max(5, n // 10)):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e6


def steps() -> None:
    import torch
    import torch.nn.functional as F

    from stacker.metamodels._mlp_loop import _activation

    h = torch.randn(512, 60, requires_grad=True)
    for name, fn in (("torch F.elu", F.elu), ("loop elu", _activation("elu"))):
        us = _per_call_us(lambda: fn(h).sum().backward())
        print(f"{name:<12} forward + backward on 512 x 60: {us:6.0f} us")
    z0, t = torch.randn(5, 512, 10), torch.randint(0, 10, (5, 512))

    def softmax_last():
        z = z0.clone().requires_grad_()
        torch.log(torch.softmax(z, -1).gather(-1, t[..., None])).sum().backward()

    def softmax_transposed():
        z = z0.clone().requires_grad_()
        torch.log(torch.softmax(z.mT.contiguous(), 1).gather(1, t[:, None, :])).sum().backward()

    print(
        f"softmax + log-likelihood, forward + backward, 5 x 512 x 10: over the class axis "
        f"{_per_call_us(softmax_last):5.0f} us, transposed {_per_call_us(softmax_transposed):5.0f} us"
    )
    from stacker.metamodels._mlp_loop import _dropout_keep

    gen, rngs = torch.Generator().manual_seed(0), [np.random.default_rng(i) for i in range(5)]
    shape = (5, 512, 94)
    t_torch = _per_call_us(lambda: (torch.rand(shape, generator=gen) >= 0.2).to(torch.float32).mul_(1.25), 200)
    t_loop = _per_call_us(lambda: _dropout_keep(rngs, [512] * 5, 94, 0.2), 200)
    print(
        f"dropout multipliers 5 x 512 x 94: from torch rand {t_torch:5.0f} us, "
        f"the loop's (16 bits of PCG64 raw output each) {t_loop:5.0f} us",
        flush=True,
    )


def keras_members(table, X, y) -> None:
    """The default recipe's Keras members on the Blend's 5 folds: one by one against batched."""
    import pandas as pd

    from stacker import metrics
    from stacker.blend import Blend, _grouped_folds
    from stacker.features import FeatureSpec
    from stacker.metamodels import get_family
    from stacker.parallel import task_seed as _task_seed
    from stacker.recipe import Recipe

    spec = FeatureSpec.from_table(table, "log")
    groups = pd.factorize(pd.Series(table.ids, dtype=object))[0]
    folds = _grouped_folds(table, y, 5, 0)
    cls = get_family("keras")
    totals = {"one by one": 0.0, "batched": 0.0}
    print("default recipe's Keras members, 5 folds, one thread: seconds one by one / batched (epochs per fold)")
    for m in (m for m in Recipe.coerce("default").sample(0) if m.family == "keras"):
        params = Blend()._member_kwargs(m, spec)
        data = [(X[folds != f], y[folds != f], None, groups[folds != f]) for f in range(5)]
        res = {}
        for mode in totals:
            ests = [cls(**params, random_state=_task_seed(m.seed, f)) for f in range(5)]
            t0 = time.perf_counter()
            if mode == "batched":
                cls.fit_many(ests, data)
            else:
                for est, (Xf, yf, _, gf) in zip(ests, data):
                    est.fit(Xf, yf, groups=gf)
            res[mode] = (
                time.perf_counter() - t0,
                [e.n_iter_ for e in ests],
                [metrics.log_loss(y[folds == f], e.predict_proba(X[folds == f])) for f, e in enumerate(ests)],
            )
            totals[mode] += res[mode][0]
        (s1, e1, l1), (s2, e2, l2) = res["one by one"], res["batched"]
        print(
            f"  {m.name} {str(m.params['hidden_layer_sizes']):<10} {m.params['optimizer']:<4} "
            f"{m.params['activation']:<4}: {s1:5.1f} / {s2:5.1f} s  epochs {e1} / {e2}  "
            f"max |log loss difference| {np.max(np.abs(np.subtract(l1, l2))):.1e}",
            flush=True,
        )
    print(
        f"  all 12: {totals['one by one']:.1f} s one by one, {totals['batched']:.1f} s batched "
        f"({totals['one by one'] / totals['batched']:.2f}x)"
    )


def weight_search(table, X, y) -> None:
    from stacker.blend import _grouped_folds, combine_members

    folds = _grouped_folds(table, y, 5, 0)
    rng = np.random.default_rng(0)
    oof = rng.dirichlet(np.ones(10), size=(54, len(y)))
    for jobs in (1, 2):
        t0 = time.perf_counter()
        combine_members(oof, y, folds, None, "weights", n_jobs=jobs)
        print(
            f"weight search, 54 members x {len(y)} rows, 5 folds + all, {jobs} thread(s): "
            f"{time.perf_counter() - t0:.1f} s"
        )


if __name__ == "__main__":
    sys.exit(main())

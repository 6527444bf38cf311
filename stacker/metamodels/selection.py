"""Caruana-style greedy ensemble selection with replacement.

:func:`ensemble_selection` is the algorithm on stored probability arrays (as in
Caruana et al. 2004 and AutoGluon's ``EnsembleSelection``): start from nothing,
and at each step add, with replacement, the model whose inclusion in the running
arithmetic mean lowers the log loss most.  The weights are the selection counts
over the number of steps.  The Blend uses it directly on its members'
out-of-fold predictions; :class:`GreedyEnsembleSelection` wraps it as a
meta-model over the level-1 blocks of the feature matrix.
"""

from __future__ import annotations

import json

import numpy as np

from stacker.metamodels._base import MetaModel
from stacker.metamodels._blocks import prob_blocks, resolve_layout

__all__ = ["ensemble_selection", "GreedyEnsembleSelection"]

_EPS = 1e-15


#: Elements per row block of the search (models x rows), 1 MB of float64.
_BLOCK = 131072


def ensemble_selection(
    probs: np.ndarray,
    y: np.ndarray,
    n_iter: int = 50,
    sample_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Weights of greedy ensemble selection with replacement, minimising log loss.

    Parameters
    ----------
    probs : ndarray of shape (n_models, n_rows, n_classes)
        Each model's (out-of-fold) probabilities; rows sum to 1.
    y : ndarray of shape (n_rows,)
        Integer class codes.
    n_iter : int, default 50
        Selection steps; the weights are multiples of ``1 / n_iter``.
    sample_weight : ndarray, optional

    Returns
    -------
    ndarray of shape (n_models,)
        Non-negative weights summing to 1.  Ties go to the lower model index, so
        the result is deterministic.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 3:
        raise ValueError(f"probs must be (n_models, n_rows, n_classes), got shape {probs.shape}")
    n = probs.shape[1]
    # The mean of normalised rows is normalised, so only the true-class column matters.
    return selection_on_true_class(probs[:, np.arange(n), np.asarray(y, dtype=np.int64)], n_iter, sample_weight)


def selection_on_true_class(true: np.ndarray, n_iter: int = 50, sample_weight: np.ndarray | None = None) -> np.ndarray:
    """:func:`ensemble_selection` given only each model's probability of the true class, ``(n_models, n_rows)``."""
    true = np.asarray(true, dtype=np.float64)
    n_models, n = true.shape
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.sum()
    running = np.zeros(n)
    counts = np.zeros(n_models, dtype=np.int64)
    # Row blocks small enough to stay in cache: over all rows at once the passes were memory-bound.
    step = max(1, _BLOCK // max(n_models, 1))
    blocks = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    buf = np.empty((n_models, step))
    gains = np.empty(n_models)
    for t in range(1, int(n_iter) + 1):
        # log(max(s / t, eps)) = log(max(s, eps * t)) - log(t); the constant drops out of the argmax.
        gains[:] = 0.0
        for b in blocks:
            part = buf[:, : b.stop - b.start]
            np.add(true[:, b], running[b], out=part)
            np.maximum(part, _EPS * t, out=part)
            np.log(part, out=part)
            gains += part @ w[b]
        best = int(np.argmax(gains))
        counts[best] += 1
        running += true[best]
    return counts / counts.sum()


class GreedyEnsembleSelection(MetaModel):
    """Ensemble selection over the level-1 models' probability blocks.

    Parameters
    ----------
    layout : (n_models, n_classes) or None
        Block structure of the first ``n_models * n_classes`` features; column
        ``k`` of each block is the probability of ``classes_[k]`` (the sorted
        labels). None infers ``n_features // n_classes`` blocks.
    input : {"proba", "log"}, default "proba"
    n_iter : int, default 50
        Greedy steps.
    random_state : int, default 0
        Unused (the algorithm is deterministic); kept for a uniform interface.
    """

    family = "selection"
    suffix = ".json"

    def __init__(
        self, layout: tuple[int, int] | None = None, input: str = "proba", n_iter: int = 50, random_state: int = 0
    ) -> None:
        self.layout = layout
        self.input = input
        self.n_iter = n_iter
        self.random_state = random_state

    def _fit(self, X, y, w, groups) -> None:
        self.layout_ = resolve_layout(self.layout, X.shape[1], len(self.classes_))
        P = prob_blocks(X, self.layout_, self.input)
        self.weights_ = ensemble_selection(P.transpose(1, 0, 2), y, self.n_iter, w)

    def _predict_proba(self, X):
        return np.einsum("nmk,m->nk", prob_blocks(X, self.layout_, self.input), self.weights_)

    def _to_bytes(self) -> bytes:
        return json.dumps({"weights": self.weights_.tolist(), "layout": list(self.layout_)}).encode()

    def _from_bytes(self, data: bytes) -> None:
        d = json.loads(data)
        self.weights_ = np.asarray(d["weights"], dtype=np.float64)
        self.layout_ = tuple(int(v) for v in d["layout"])  # type: ignore[assignment]  # (models, classes)

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
    n_models, n = probs.shape[:2]
    y = np.asarray(y, dtype=np.int64)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    w = w / w.sum()
    # The mean of normalised rows is normalised, so only the true-class column matters.
    true = probs[:, np.arange(n), y]  # (M, n)
    running = np.zeros(n)
    counts = np.zeros(n_models, dtype=np.int64)
    for t in range(1, int(n_iter) + 1):
        cand = (running[None, :] + true) / t
        losses = -(np.log(np.clip(cand, _EPS, None)) * w[None, :]).sum(axis=1)
        best = int(np.argmin(losses))
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
        self.layout_ = tuple(int(v) for v in d["layout"])

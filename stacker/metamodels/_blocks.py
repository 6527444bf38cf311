"""Reading the ``(n_models, n_classes)`` probability blocks out of a feature matrix."""

from __future__ import annotations

import numpy as np

from stacker.features import LOG_FLOOR

__all__ = ["resolve_layout", "log_blocks", "prob_blocks"]


def resolve_layout(layout, n_features: int, n_classes: int) -> tuple[int, int]:
    """``(n_models, n_classes)``; inferred as ``n_features // n_classes`` blocks when None."""
    if layout is None:
        m = n_features // n_classes
        if m < 1:
            raise ValueError(f"X has {n_features} feature(s), too few for one block of {n_classes} class probabilities")
        layout = (m, n_classes)
    m, k = int(layout[0]), int(layout[1])
    if k != n_classes:
        raise ValueError(f"layout has {k} classes per block but the labels have {n_classes} classes")
    if m * k > n_features:
        raise ValueError(f"layout {m}x{k} needs {m * k} features, X has {n_features}")
    return m, k


def log_blocks(X: np.ndarray, layout: tuple[int, int], input: str) -> np.ndarray:
    """``(n, M, K)`` normalised log-probabilities (log-softmax of each block for log/logit input)."""
    m, k = layout
    B = X[:, : m * k].reshape(len(X), m, k)
    if input == "proba":
        B = np.log(np.clip(B, LOG_FLOOR, None))
    elif input != "log":
        raise ValueError(f"input must be 'proba' or 'log', got {input!r}")
    mx = B.max(axis=2, keepdims=True)
    return B - (mx + np.log(np.exp(B - mx).sum(axis=2, keepdims=True)))


def prob_blocks(X: np.ndarray, layout: tuple[int, int], input: str) -> np.ndarray:
    """``(n, M, K)`` probabilities, each block renormalised."""
    if input == "log":
        return np.exp(log_blocks(X, layout, input))
    m, k = layout
    B = np.clip(X[:, : m * k].reshape(len(X), m, k), 0.0, None)
    s = B.sum(axis=2, keepdims=True)
    return B / np.where(s > 0, s, 1.0)

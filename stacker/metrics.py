"""Scores of probability predictions: accuracy, log loss, per-class accuracy, by manipulation."""

from __future__ import annotations

from typing import Any

import numpy as np

from stacker.table import PROB_FLOOR

__all__ = ["accuracy", "log_loss", "per_class_accuracy", "score", "score_split", "LOG_EPS"]

#: Probabilities are clipped to ``[LOG_EPS, 1]`` inside the log loss: the table's one floor.
LOG_EPS = PROB_FLOOR


def _weights(w: np.ndarray | None, n: int) -> np.ndarray:
    return np.ones(n) if w is None else np.asarray(w, dtype=np.float64)


def accuracy(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Share of rows whose argmax is the label (ties go to the first class)."""
    y = np.asarray(y)
    w = _weights(sample_weight, len(y))
    return float(np.sum(w * (np.argmax(proba, axis=1) == y)) / np.sum(w))


def log_loss(y: np.ndarray, proba: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Mean negative log-probability of the true class (rows renormalised first)."""
    y = np.asarray(y)
    p = np.asarray(proba, dtype=np.float64)
    p = p / p.sum(axis=1, keepdims=True)
    w = _weights(sample_weight, len(y))
    true = np.clip(p[np.arange(len(y)), y], LOG_EPS, 1.0)
    return float(-np.sum(w * np.log(true)) / np.sum(w))


def per_class_accuracy(y: np.ndarray, proba: np.ndarray, n_classes: int) -> np.ndarray:
    """Recall of each class (NaN for a class with no rows)."""
    y = np.asarray(y)
    hit = np.argmax(proba, axis=1) == y
    count = np.bincount(y, minlength=n_classes).astype(np.float64)
    good = np.bincount(y, weights=hit.astype(np.float64), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, good / np.where(count > 0, count, 1), np.nan)


def score(y: np.ndarray, proba: np.ndarray, classes: list[str] | tuple[str, ...] | None = None) -> dict[str, Any]:
    """Accuracy, log loss, row count and (with ``classes``) per-class accuracy."""
    out: dict[str, Any] = {"n": int(len(y)), "accuracy": accuracy(y, proba), "log_loss": log_loss(y, proba)}
    if classes is not None:
        pca = per_class_accuracy(y, proba, len(classes))
        out["per_class_accuracy"] = {c: (None if np.isnan(v) else float(v)) for c, v in zip(classes, pca)}
    return out


def score_split(
    y: np.ndarray,
    proba: np.ndarray,
    manip: np.ndarray | None = None,
    classes: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """:func:`score` on all rows, and on unaltered / manipulated rows when ``manip`` is given.

    Rows with an unknown label (``y < 0``) are left out.
    """
    y = np.asarray(y)
    known = y >= 0
    out = {"all": score(y[known], proba[known], classes) if known.any() else None}
    if manip is not None:
        manip = np.asarray(manip)
        for name, flag in (("unaltered", 0), ("manipulated", 1)):
            sel = known & (manip == flag)
            out[name] = score(y[sel], proba[sel], classes) if sel.any() else None
    return out

"""Scores of out-of-fold predictions, with the post-processing applied the way the test set sees it.

The equalizers (and Sinkhorn balancing) assume a batch with the same number of
images of every class, as the challenge's test set had (264 per class).  The
out-of-fold rows of a holdout rarely are balanced, so each post-processing
choice is scored on ``n_resamples`` balanced resamples of the out-of-fold rows:
per class, the same number of rows (default: half the smallest class) drawn
without replacement.  The resamples
depend only on the labels and the seed, so every trial of a study is scored on
the same ones (common random numbers: differences between trials are not
resampling noise).

The score is the challenge's: accuracy, or, when the table flags manipulated
rows, ``0.7 * accuracy(unaltered) + 0.3 * accuracy(manipulated)``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from stacker.errors import ConfigError

__all__ = [
    "POSTPROCESS",
    "available_postprocess",
    "postprocess_labels",
    "balanced_resamples",
    "challenge_score",
    "score_oof",
]

#: Post-processing choices the study searches over, in order.
POSTPROCESS = ("none", "hungarian", "greedy", "sinkhorn")
#: Weights of unaltered and manipulated rows in the challenge's score.
UNALTERED_WEIGHT, MANIPULATED_WEIGHT = 0.7, 0.3


Labeller = Callable[[np.ndarray, np.ndarray], np.ndarray]


def _equalizer(name: str) -> Labeller | None:
    """``(proba, counts) -> labels`` for an equalizer of :mod:`stacker.equalize`, if it is installed."""
    try:
        from stacker import equalize
    except ImportError:
        return None
    if name == "hungarian" and hasattr(equalize, "solve_assignment"):
        return lambda p, counts: equalize.solve_assignment(p, counts)[0]
    if name == "greedy" and hasattr(equalize, "greedy_assignment"):
        return lambda p, counts: equalize.greedy_assignment(p, counts, method="iterative")
    return None


def _sinkhorn() -> Labeller | None:
    try:
        from stacker import transforms
    except ImportError:
        return None
    fn = getattr(transforms, "sinkhorn", None)
    if fn is None:
        return None

    def run(p: np.ndarray, counts: np.ndarray) -> np.ndarray:
        scaled, _ = fn(p, counts.astype(np.float64))  # column totals = the batch's class counts
        return np.argmax(scaled, axis=1)

    return run


def _resolve(name: str) -> Labeller | None:
    if name == "none":
        return lambda p, counts: np.argmax(p, axis=1)
    if name in ("hungarian", "greedy"):
        return _equalizer(name)
    if name == "sinkhorn":
        return _sinkhorn()
    raise ConfigError(f"unknown post-processing {name!r}; choose from {list(POSTPROCESS)}")


def available_postprocess() -> tuple[str, ...]:
    """The post-processing choices whose implementation is importable here."""
    return tuple(name for name in POSTPROCESS if _resolve(name) is not None)


def postprocess_labels(name: str, proba: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Class index per row after post-processing ``name`` of one batch whose class counts are ``counts``."""
    fn = _resolve(name)
    if fn is None:
        raise ConfigError(f"post-processing {name!r} is not available in this installation")
    return np.asarray(fn(proba, np.asarray(counts, dtype=np.int64)), dtype=np.int64)


def balanced_resamples(
    y: np.ndarray, n_resamples: int, seed: int, *, per_class: int | None = None
) -> list[np.ndarray]:
    """``n_resamples`` arrays of row positions, each with ``per_class`` rows of every class.

    ``per_class`` defaults to half the size of the smallest class, so that
    resamples differ even when the rows are balanced already; classes absent
    from ``y`` are ignored.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 0:
        return []
    m = max(1, int(counts.min()) // 2) if per_class is None else min(int(per_class), int(counts.min()))
    if m < 1:
        raise ConfigError("balanced resamples need at least one row of every class")
    members = [np.flatnonzero(y == k) for k in classes]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(int(n_resamples)):
        out.append(np.sort(np.concatenate([rng.choice(rows, size=m, replace=False) for rows in members])))
    return out


def challenge_score(y: np.ndarray, labels: np.ndarray, manip: np.ndarray | None = None) -> float:
    """Accuracy of ``labels``, or the challenge's 0.7/0.3 weighting of unaltered and manipulated accuracy."""
    hit = np.asarray(labels) == np.asarray(y)
    if manip is None:
        return float(hit.mean())
    manip = np.asarray(manip).astype(bool)
    if manip.all() or not manip.any():
        return float(hit.mean())
    return float(UNALTERED_WEIGHT * hit[~manip].mean() + MANIPULATED_WEIGHT * hit[manip].mean())


def score_oof(
    y: np.ndarray,
    proba: np.ndarray,
    choice: str,
    resamples: list[np.ndarray],
    manip: np.ndarray | None = None,
) -> float:
    """Mean :func:`challenge_score` of ``choice`` over the balanced ``resamples`` of OOF rows."""
    if not resamples:
        raise ConfigError("no rows to score")
    k = proba.shape[1]
    scores = []
    for rows in resamples:
        # The batch's true class counts are the quotas, as the test set's 264 per class were known.
        labels = postprocess_labels(choice, proba[rows], np.bincount(y[rows], minlength=k))
        scores.append(challenge_score(y[rows], labels, None if manip is None else manip[rows]))
    return float(np.mean(scores))

"""Scores of out-of-fold predictions, with the post-processing applied as ``stacker predict`` applies it.

The equalizers (and Sinkhorn balancing) assume a batch with the same number of
images of every class, as the challenge's test set had (264 per class, 132 of
them unaltered and 132 manipulated).  The out-of-fold rows of a holdout rarely
are balanced, so each post-processing choice is scored on ``n_resamples``
balanced resamples of the out-of-fold rows: per class (and, when the
post-processing groups by the manipulation flag, per class and flag), the same
number of rows (default: half the smallest cell) drawn without replacement.  The
resamples depend only on the labels and the seed, so every trial of a study is
scored on the same ones (common random numbers: differences between trials are
not resampling noise).

Each resample is post-processed by the step ``stacker predict`` deploys
(:func:`stacker.postprocess.deployed_step`: equal shares within each ``manip``
group when the table has that column), so the study optimises what is deployed.

The score is the challenge's: accuracy, or, when the table flags manipulated
rows, ``0.7 * accuracy(unaltered) + 0.3 * accuracy(manipulated)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from stacker.errors import ConfigError
from stacker.postprocess import POSTPROCESS, apply_postprocess, check_postprocess, resolve_by
from stacker.table import PredictionTable

__all__ = [
    "POSTPROCESS",
    "available_postprocess",
    "balanced_resamples",
    "challenge_score",
    "postprocess_choices",
    "score_oof",
]

#: Weights of unaltered and manipulated rows in the challenge's score.
UNALTERED_WEIGHT, MANIPULATED_WEIGHT = 0.7, 0.3


def available_postprocess() -> tuple[str, ...]:
    """The post-processing choices (all are in the core)."""
    return POSTPROCESS


def postprocess_choices(postprocess: Sequence[str] | None, where: str | None = None) -> tuple[str, ...]:
    """The post-processing choices of a study (None: every one available here), checked; ``where`` (an
    option name) prefixes the errors."""
    choices = tuple(postprocess) if postprocess is not None else available_postprocess()
    prefix = f"{where}: " if where else ""
    unknown = [c for c in choices if c not in POSTPROCESS]
    if unknown:
        raise ConfigError(f"{prefix}unknown post-processing {unknown}; choose from {list(POSTPROCESS)}")
    missing = [c for c in choices if c not in available_postprocess()]
    if missing:
        raise ConfigError(f"{prefix}post-processing {missing} is not available in this installation")
    return choices


def balanced_resamples(
    y: np.ndarray, n_resamples: int, seed: int, *, per_class: int | None = None, strata: np.ndarray | None = None
) -> list[np.ndarray]:
    """``n_resamples`` arrays of row positions, each with ``per_class`` rows of every class.

    ``per_class`` defaults to half the size of the smallest class, so that
    resamples differ even when the rows are balanced already; classes absent
    from ``y`` are ignored.  With ``strata`` (e.g. the manipulation flag) every
    (class, stratum) cell gets the same number of rows, so each stratum is
    balanced too; if a class lacks a stratum, the classes alone are balanced.
    """
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) == 0:
        return []
    cells = [y == k for k in classes]
    if strata is not None:
        strata = np.asarray(strata)
        by_cell = [c & (strata == s) for c in cells for s in np.unique(strata)]
        if all(m.any() for m in by_cell):
            cells = by_cell
    sizes = np.array([int(m.sum()) for m in cells])
    per_cell = None if per_class is None else int(per_class) // (len(cells) // len(classes))
    m = max(1, int(sizes.min()) // 2) if per_cell is None else min(per_cell, int(sizes.min()))
    if m < 1:
        raise ConfigError("balanced resamples need at least one row of every class")
    members = [np.flatnonzero(c) for c in cells]
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
    table: PredictionTable,
    choice: str,
    resamples: list[np.ndarray],
    by: str | None = "auto",
) -> float:
    """Mean :func:`challenge_score` over the balanced ``resamples`` of a labelled out-of-fold table,
    each post-processed by the deployed step (:func:`stacker.postprocess.apply_postprocess`)."""
    check_postprocess(choice, "post-processing")
    if not resamples:
        raise ConfigError("no rows to score")
    y = table.y
    manip = table.manip
    scores = []
    for rows in resamples:
        _, labels = apply_postprocess(choice, table.take(rows), by)
        scores.append(challenge_score(y[rows], labels, None if manip is None else manip[rows]))
    return float(np.mean(scores))


def resample_strata(table: PredictionTable, by: str | None = "auto") -> np.ndarray | None:
    """The column the deployed post-processing groups by, for :func:`balanced_resamples`."""
    group = resolve_by(by, table.meta.columns)
    return None if group is None else table.meta[group].to_numpy()

"""Statistics of a prediction table, for people to read: ``stacker inspect`` and the Blend's report.

:func:`summarize` gives counts, label balance and per-model scores (``stacker inspect``);
:func:`model_scores` and :func:`model_correlation` are what a Blend records about its input
table at fit time, so that ``stacker report`` can show them from the bundle alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from stacker.aggregate import aggregate_views, power_mean
from stacker.metrics import score_split
from stacker.table import LABEL, MANIP, PROB_FLOOR, VIEW, PredictionTable

__all__ = ["summarize", "model_scores", "model_correlation"]


def summarize(table: PredictionTable, p: float = 1.0) -> dict[str, Any]:
    """Counts, label balance and per-model scores of a table.

    Scores are computed per sample after aggregating TTA views with the power
    mean of exponent ``p`` (a table with one view per sample is unchanged), for
    every model and for the power means of all models with exponents ``p=1``
    (arithmetic), ``p=0`` (geometric) and ``p`` if different.
    """
    meta = table.meta
    out: dict[str, Any] = {
        "source": table.source,
        "rows": len(table),
        "images": int(meta["id"].nunique()),
        "samples": int(meta[table.sample_columns].drop_duplicates().shape[0]),
        "views": sorted(map(str, meta[VIEW].unique())) if VIEW in meta.columns else [],
        "models": list(table.models),
        "classes": list(table.classes),
        "columns": list(meta.columns),
    }
    if MANIP in meta.columns:
        out["manipulated_rows"] = int((meta[MANIP] == 1).sum())
    if LABEL in meta.columns:
        counts = meta[LABEL].value_counts()
        out["label_counts"] = {c: int(counts.get(c, 0)) for c in table.classes}
        out["unlabelled_rows"] = int(meta[LABEL].isna().sum())
    if not table.has_labels:
        out["scores"] = None
        return out
    agg = aggregate_views(table, p) if VIEW in meta.columns else table
    y = agg.y
    manip = agg.manip
    scores: dict[str, Any] = {}
    for i, model in enumerate(agg.models):
        scores[model] = score_split(y, agg.probs[:, i, :], manip)
    if agg.n_models > 1:
        exps = [1.0, 0.0] + ([p] if p not in (1.0, 0.0) else [])
        for e in exps:
            name = {1.0: "mean (p=1)", 0.0: "geometric mean (p=0)"}.get(e, f"power mean (p={e:g})")
            scores[name] = score_split(y, power_mean(agg.probs, e, axis=1), manip)
    out["scores"] = scores
    out["scored_on"] = "samples (views aggregated)" if VIEW in meta.columns else "rows"
    return out


def model_scores(table: PredictionTable, y: np.ndarray) -> dict[str, Any]:
    """Each model's accuracy, log loss and per-class accuracy on all, unaltered and manipulated rows."""
    return {m: score_split(y, table.probs[:, i, :], table.manip, table.classes) for i, m in enumerate(table.models)}


def model_correlation(probs: np.ndarray) -> np.ndarray:
    """Pearson correlation between models of their log-probabilities (all rows and classes)."""
    m = probs.shape[1]
    if m < 2:
        return np.ones((m, m))
    logp = np.log(np.clip(probs, PROB_FLOOR, 1.0)).transpose(1, 0, 2).reshape(m, -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.corrcoef(logp)
    return np.nan_to_num(corr, nan=0.0)

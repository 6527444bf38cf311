"""Power-mean aggregation: of TTA views per image, and of models per row.

The power mean of probabilities ``x_1..x_n`` with exponent ``p`` is
``(sum_i w_i x_i^p)^(1/p)`` with weights summing to 1: ``p=1`` the arithmetic
mean, ``p=2`` the root mean square, ``p -> 0`` the geometric mean
``exp(sum_i w_i log x_i)``, ``p=-1`` the harmonic mean.  Results are
renormalised so each row sums to 1.  For ``p <= 0`` probabilities are clipped
below at ``eps`` (default 1e-15) so that a zero in one view does not veto a
class outright.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import scipy.sparse as sp

from stacker.errors import ConfigError, SchemaError
from stacker.table import FOLD, LABEL, PROB_FLOOR, VIEW, PredictionTable

__all__ = ["power_mean", "aggregate_views", "aggregate_models", "GEOMETRIC_TOL"]

#: ``|p|`` below this is treated as the geometric mean (the p -> 0 limit).
GEOMETRIC_TOL = 1e-9
_EPS = PROB_FLOOR  # stacker.table's one floor
#: Above this exponent the power mean is taken in log space (eps ** 20 = 1e-300 is still a float64).
_LOG_DOMAIN_FROM = 20.0


def _check_p(p: float) -> float:
    p = float(p)
    if not np.isfinite(p):
        raise ConfigError(f"power-mean exponent p must be finite, got {p}")
    return p


def _normalise(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    # A row can only sum to 0 here if every input row was 0, which validation forbids.
    return x / np.where(s > 0, s, 1.0)


def _transform(x: np.ndarray, p: float, eps: float) -> np.ndarray:
    if abs(p) < GEOMETRIC_TOL:
        return np.log(np.clip(x, eps, None))
    if p < 0:
        # eps ** p overflows float64 once p < -20 (1e-15 ** -21 = 1e315): raise the floor so that no
        # power exceeds 1e300; the mean is then finite and its inverse power well defined.
        return np.clip(x, max(eps, 10.0 ** (300.0 / p)), None) ** p
    return x**p


def _inverse(m: np.ndarray, p: float, *, shift: bool = True) -> np.ndarray:
    if abs(p) < GEOMETRIC_TOL:
        # Subtracting the row max before exp is exact after normalisation and avoids underflow.
        return np.exp(m - m.max(axis=-1, keepdims=True)) if shift else np.exp(m)
    return m ** (1.0 / p)


def power_mean(
    probs: np.ndarray,
    p: float = 1.0,
    *,
    axis: int = 0,
    weights: np.ndarray | None = None,
    eps: float = _EPS,
    normalize: bool = True,
) -> np.ndarray:
    """Weighted power mean of probability arrays along ``axis``, renormalised on the last axis.

    Parameters
    ----------
    probs : ndarray
        Probabilities; the last axis is the class axis.
    p : float, default 1.0
        Exponent: 1 arithmetic, 0 geometric, 2 root mean square, any finite value.
    axis : int, default 0
        Axis to average over (must not be the class axis).
    weights : ndarray, optional
        Non-negative weights along ``axis``; normalised to sum to 1.
    eps : float
        Floor applied for ``p <= 0``.
    normalize : bool, default True
        Rescale the result so the class axis sums to 1.
    """
    p = _check_p(p)
    x = np.asarray(probs, dtype=np.float64)
    axis = axis % x.ndim
    if axis == x.ndim - 1:
        raise ConfigError("cannot average over the class axis")
    n = x.shape[axis]
    w = np.full(n, 1.0 / n) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n,) or (w < 0).any() or w.sum() <= 0:
        raise ConfigError(f"weights must be {n} non-negative numbers with a positive sum")
    w = w / w.sum()
    shape = [1] * x.ndim
    shape[axis] = n
    if p > _LOG_DOMAIN_FROM:
        # x ** p underflows to 0 for every row at large p (p = 1e9 gave NaN): the same mean, in logs.
        with np.errstate(divide="ignore"):
            a = p * np.log(np.clip(x, eps, None)) + np.log(w).reshape(shape)
        top = a.max(axis=axis, keepdims=True)
        lm = (np.squeeze(top, axis=axis) + np.log(np.exp(a - top).sum(axis=axis))) / p
        out = np.exp(lm - lm.max(axis=-1, keepdims=True)) if normalize else np.exp(lm)
        return _normalise(out) if normalize else out
    m = (_transform(x, p, eps) * w.reshape(shape)).sum(axis=axis)
    out = _inverse(m, p, shift=normalize)
    return _normalise(out) if normalize else out


def aggregate_models(table: PredictionTable, p: float = 1.0, *, weights: np.ndarray | None = None) -> np.ndarray:
    """Power mean over the table's models: an ``(n_rows, n_classes)`` array."""
    return power_mean(table.probs, p, axis=1, weights=weights)


def aggregate_views(
    table: PredictionTable,
    p: float = 1.0,
    *,
    view_weights: Mapping[str, float] | None = None,
    eps: float = _EPS,
) -> PredictionTable:
    """Aggregate the TTA views of each sample by power mean; one row per sample out.

    A sample is an image under one manipulation: rows sharing ``id`` (and
    ``manip``/``manip_kind`` where present) and differing only in ``view``.
    Manipulated variants of an image are different samples and never averaged
    together.  The output has no ``view`` column, keeps the samples in order of
    first appearance, and carries ``label`` and ``fold``, which must agree across
    the views of a sample.

    Parameters
    ----------
    table : PredictionTable
    p : float, default 1.0
        Power-mean exponent (see :func:`power_mean`).
    view_weights : mapping, optional
        Weight per view name (default 1 each); views not named get weight 1.
    """
    p = _check_p(p)
    if VIEW not in table.meta.columns:
        return table.replace(probs=table.probs.copy())
    keys = table.sample_columns
    meta = table.meta
    group = meta.groupby(keys, sort=False, dropna=False).ngroup().to_numpy()
    n_groups = int(group.max()) + 1
    first = pd.Series(np.arange(len(meta))).groupby(group).first().to_numpy()
    for col in (LABEL, FOLD):
        if col in meta.columns:
            codes = pd.factorize(meta[col].astype(object).where(meta[col].notna(), "\x00null"))[0]
            lo = pd.Series(codes).groupby(group).transform("min").to_numpy()
            hi = pd.Series(codes).groupby(group).transform("max").to_numpy()
            bad = lo != hi
            if bad.any():
                rows = np.flatnonzero(bad)[:5]
                raise SchemaError(
                    f"views of one sample disagree on {col!r}",
                    path=table.source,
                    column=col,
                    rows=rows,
                    ids=meta["id"].iloc[rows].tolist(),
                )
    if view_weights is None:
        w = np.ones(len(meta))
    else:
        w = meta[VIEW].map(lambda v: float(view_weights.get(v, 1.0))).to_numpy(dtype=np.float64)
        if (w < 0).any():
            raise ConfigError("view weights must be non-negative")
    wsum = np.bincount(group, weights=w, minlength=n_groups)
    if (wsum <= 0).any():
        raise ConfigError("every sample needs at least one view with a positive weight")
    # Weighted group sums as one sparse product: S (groups x rows) @ X (rows x M*K).
    s = sp.csr_matrix((w / wsum[group], (group, np.arange(len(meta)))), shape=(n_groups, len(meta)))
    n, m_, k = table.probs.shape
    if p > _LOG_DOMAIN_FROM:  # as in power_mean: in logs, shifted by each sample's largest term
        a = p * np.log(np.clip(table.probs, eps, None)).reshape(n, m_ * k)
        top = np.full((n_groups, m_ * k), -np.inf)
        np.maximum.at(top, group, a)
        lm = (top + np.log(np.asarray(s @ np.exp(a - top[group])))).reshape(n_groups, m_, k) / p
        out = _normalise(np.exp(lm - lm.max(axis=-1, keepdims=True)))
    else:
        x = _transform(table.probs, p, eps).reshape(n, m_ * k)
        mean = np.asarray(s @ x).reshape(n_groups, m_, k)
        out = _normalise(_inverse(mean, p))
    new_meta = meta.iloc[first].drop(columns=[VIEW]).reset_index(drop=True)
    return table.replace(meta=new_meta, probs=out)

"""Probability transforms for chains: power mean, prior shift, temperature scaling, Sinkhorn.

Each class is a :class:`~stacker.base.Transform` registered under a stable name,
so a fitted :class:`~stacker.chain.Chain` saves and loads it as JSON.

* :class:`PowerMean` (``"power_mean"``): the power mean of TTA views per sample
  and/or of models per row (:mod:`stacker.aggregate`).
* :class:`PriorShift` (``"prior_shift"``): re-weight posteriors from the training
  class prior to a target prior, ``p'_k ∝ p_k * target_k / source_k``; the target is
  given, or estimated on the table being transformed by the EM of Saerens, Latinne
  and Decaestecker (2002).
* :class:`TemperatureScaling` (``"temperature"``): ``softmax(log p / T)`` with one
  ``T`` per model fitted by log loss on labelled (out-of-fold) predictions.
* :class:`SinkhornEqualizer` (``"sinkhorn"``): the soft equalizer, alternately
  scaling class columns to their quotas and rows to 1 (Sinkhorn-Knopp), returning
  probabilities whose class totals are the quotas.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from stacker.aggregate import aggregate_views as _aggregate_views
from stacker.aggregate import power_mean
from stacker.base import Transform, register
from stacker.equalize import QuotaSpec, _Equalizer, _per_class
from stacker.errors import ConfigError, LabelError, ProbabilityError
from stacker.inputs import to_table
from stacker.table import FOLD, PROB_FLOOR, PredictionTable

__all__ = ["PowerMean", "PriorShift", "TemperatureScaling", "SinkhornEqualizer", "em_prior"]


def _renorm(x: np.ndarray) -> np.ndarray:
    s = x.sum(axis=-1, keepdims=True)
    return x / np.where(s > 0, s, 1.0)


@register("power_mean")
class PowerMean(Transform):
    """Power mean of views per sample and/or of models per row.

    Parameters
    ----------
    p : float, default 1.0
        Exponent (1 arithmetic, 0 geometric, 2 root mean square).
    over : {"views", "models", "both"}, default "views"
        ``"views"``: one row per sample (views averaged), models kept;
        ``"models"``: one model named ``name`` per row; ``"both"``: views, then models.
    name : str, default "mean"
        Model name of the output when models are averaged.
    view_weights : mapping, optional
        Weight per view name (default 1).
    """

    def __init__(
        self,
        p: float = 1.0,
        over: str = "views",
        name: str = "mean",
        view_weights: Mapping[str, float] | None = None,
    ) -> None:
        self.p = p
        self.over = over
        self.name = name
        self.view_weights = view_weights

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False  # stateless
        return tags

    def _check(self, form_kind: str) -> None:
        if self.over not in ("views", "models", "both"):
            raise ConfigError(f"PowerMean.over must be 'views', 'models' or 'both', got {self.over!r}")
        if form_kind == "array" and self.over != "models":
            raise ConfigError(
                f"PowerMean(over={self.over!r}) averages the TTA views of each image, which an array does not "
                "name; pass a table or DataFrame with id and view columns, or use over='models'"
            )

    def fit(self, X: Any, y: Any = None) -> PowerMean:
        """Check the input; the power mean learns nothing."""
        table, form = to_table(X)
        self._check(form.kind)
        return self

    def transform(self, X: Any) -> Any:
        table, form = to_table(X)
        self._check(form.kind)
        out = table
        if self.over in ("views", "both"):
            out = _aggregate_views(out, self.p, view_weights=self.view_weights)
        if self.over in ("models", "both"):
            mean = power_mean(out.probs, self.p, axis=1)
            out = out.replace(probs=mean[:, None, :], models=[self.name])
        return self._output(out, form, reduced=self.over != "views")


def em_prior(
    proba: np.ndarray, source_prior: np.ndarray, *, max_iter: int = 1000, tol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, int]:
    """EM estimate of the class prior of unlabelled data (Saerens et al., 2002).

    Alternates ``p_ik ∝ proba_ik * prior_k / source_k`` and ``prior = mean_i p_i``.

    Returns
    -------
    prior : ndarray of shape (K,)
    posteriors : ndarray of shape (n, K)
        The adjusted posteriors under that prior.
    n_iter : int
    """
    P = np.asarray(proba, dtype=np.float64)
    src = np.asarray(source_prior, dtype=np.float64)
    prior = src.copy()
    post = P
    for it in range(1, max_iter + 1):  # noqa: B007 - the count is returned
        post = _renorm(P * (prior / src))
        new = post.mean(axis=0)
        if np.abs(new - prior).max() < tol:
            prior = new
            break
        prior = new
    return prior, _renorm(P * (prior / src)), it


def _prior_vector(spec: Any, classes: Sequence[str], name: str) -> np.ndarray:
    values = _per_class(spec, classes, name)
    total = values.sum()
    if total <= 0:
        raise ConfigError(f"{name} must have a positive sum")
    if (values == 0).any():
        raise ConfigError(f"{name} has zero entries {values.tolist()}: a class with prior 0 cannot be re-weighted")
    return values / total


@register("prior_shift")
class PriorShift(Transform):
    """Re-weight posteriors to a new class prior (known, or estimated by EM).

    Parameters
    ----------
    prior : "em", number sequence or mapping, default "em"
        Target prior (counts or proportions; normalised), or ``"em"`` to estimate it
        on each table transformed (per model) by EM.
    source_prior : "labels", "uniform", "predicted", or values, default "labels"
        The prior the posteriors were trained under: the label frequencies of the
        fit table (``"labels"``, which needs labels), uniform, the mean predicted
        probability of the fit table, or given values.
    max_iter, tol : EM settings.

    Attributes
    ----------
    classes_ : ndarray
    source_prior_ : ndarray of shape (K,)

    With ``prior="em"`` the target is estimated on each batch given to
    :meth:`transform`; :meth:`estimate_prior` returns it.
    """

    def __init__(
        self,
        prior: Any = "em",
        source_prior: Any = "labels",
        max_iter: int = 1000,
        tol: float = 1e-10,
    ) -> None:
        self.prior = prior
        self.source_prior = source_prior
        self.max_iter = max_iter
        self.tol = tol

    def fit(self, X: Any, y: Any = None) -> PriorShift:
        """Learn the source prior (from ``y`` or the table's labels with ``source_prior="labels"``)."""
        table, form = self._fit_input(X, y)
        src = self.source_prior
        k = table.n_classes
        if isinstance(src, str):
            if src == "labels":
                if not table.has_labels:
                    raise LabelError(
                        "source_prior='labels' needs labels at fit (y, or a label column); "
                        "give source_prior='uniform' or values",
                        path=table.source,
                        column="label",
                    )
                y_codes = table.y
                counts = np.bincount(y_codes[y_codes >= 0], minlength=k).astype(np.float64)
                if (counts == 0).any():
                    missing = [self.classes_[i] for i in np.flatnonzero(counts == 0)]
                    raise LabelError(f"classes {missing} have no labelled rows", path=table.source, column="label")
                self.source_prior_ = counts / counts.sum()
            elif src == "uniform":
                self.source_prior_ = np.full(k, 1.0 / k)
            elif src == "predicted":
                self.source_prior_ = table.probs.mean(axis=(0, 1))
            else:
                raise ConfigError(f"source_prior must be 'labels', 'uniform', 'predicted' or values, got {src!r}")
        else:
            self.source_prior_ = _prior_vector(src, table.classes, "source_prior")
        if not (isinstance(self.prior, str) and self.prior == "em"):
            if isinstance(self.prior, str):
                raise ConfigError(f"prior must be 'em' or values, got {self.prior!r}")
            _prior_vector(self.prior, table.classes, "prior")
        return self

    def _shift(self, table: PredictionTable) -> tuple[np.ndarray, np.ndarray]:
        """``(shifted probabilities, target prior per model)``."""
        self._check_fitted("source_prior_")
        src = self.source_prior_
        if len(src) != table.n_classes:
            raise ValueError(f"PriorShift was fitted on {len(src)} classes; the input has {table.n_classes}")
        out = np.empty_like(table.probs)
        priors = np.empty((table.n_models, table.n_classes))
        for m in range(table.n_models):
            P = table.probs[:, m, :]
            if isinstance(self.prior, str):
                priors[m], out[:, m, :], _ = em_prior(P, src, max_iter=self.max_iter, tol=self.tol)
            else:
                priors[m] = _prior_vector(self.prior, table.classes, "prior")
                out[:, m, :] = _renorm(P * (priors[m] / src))
            zero = out[:, m, :].sum(axis=1) <= 0
            if zero.any():
                raise ProbabilityError(
                    "rows with no probability left after the prior shift",
                    path=table.source,
                    rows=np.flatnonzero(zero),
                )
        return out, priors

    def transform(self, X: Any) -> Any:
        """Posteriors re-weighted to the target prior (estimated on ``X`` by EM with ``prior="em"``)."""
        table, form = self._input(X)
        return self._output(table.replace(probs=self._shift(table)[0]), form)

    def estimate_prior(self, X: Any) -> np.ndarray:
        """The target prior used on ``X``: ``(K,)`` for one model, ``(M, K)`` for several."""
        table, _ = self._input(X)
        priors = self._shift(table)[1]
        return priors[0] if len(priors) == 1 else priors

    def _fitted_state(self) -> dict[str, Any]:
        state = super()._fitted_state()
        if hasattr(self, "source_prior_"):
            state["source_prior_"] = self.source_prior_.tolist()
        return state

    def _restore(self, fitted: dict[str, Any]) -> None:
        super()._restore(fitted)
        if "source_prior_" in fitted:
            self.source_prior_ = np.asarray(fitted["source_prior_"], dtype=np.float64)


def _fit_temperature(P: np.ndarray, y: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    logp = np.log(np.clip(P, PROB_FLOOR, 1.0))

    def nll(log_t: float) -> float:
        z = logp / np.exp(log_t)
        z = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(z).sum(axis=1))
        return float(np.mean(lse - z[np.arange(len(y)), y]))

    res = minimize_scalar(nll, bounds=(np.log(0.02), np.log(50.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def _apply_temperature(P: np.ndarray, t: float) -> np.ndarray:
    z = np.log(np.clip(P, PROB_FLOOR, 1.0)) / t
    z = z - z.max(axis=1, keepdims=True)
    return _renorm(np.exp(z))


@register("temperature")
class TemperatureScaling(Transform):
    """``softmax(log p / T)``, one temperature per model fitted by log loss.

    Fit it on out-of-fold predictions (e.g. what the Blend's ``fit_transform``
    returns).  ``fit_transform`` is itself out-of-fold when the table has folds:
    the rows of fold f are scaled with a temperature fitted on the other folds.

    Attributes
    ----------
    classes_ : ndarray
    temperature_ : dict
        Model -> fitted temperature (``T > 1`` softens, ``T < 1`` sharpens); the models
        of an array are ``"0"``, ``"1"``, ... (positions).
    """

    def __init__(self) -> None:
        pass

    @staticmethod
    def _labelled(table: PredictionTable) -> np.ndarray:
        if not table.has_labels:
            raise LabelError(
                "temperature scaling needs labels to fit (y, or a label column)", path=table.source, column="label"
            )
        return table.y

    def _fit_table(self, table: PredictionTable) -> None:
        y = self._labelled(table)
        known = y >= 0
        self.temperature_ = {
            m: _fit_temperature(table.probs[known, i, :], y[known]) for i, m in enumerate(table.models)
        }

    def fit(self, X: Any, y: Any = None) -> TemperatureScaling:
        table, _ = self._fit_input(X, y)
        self._fit_table(table)
        return self

    def _scaled(self, table: PredictionTable) -> PredictionTable:
        self._check_fitted("temperature_")
        temps = self.temperature_
        missing = [m for m in table.models if m not in temps]
        if missing:
            raise ValueError(f"no fitted temperature for models {missing}; fitted: {sorted(temps)}")
        out = np.stack([_apply_temperature(table.probs[:, i, :], temps[m]) for i, m in enumerate(table.models)], 1)
        return table.replace(probs=out)

    def transform(self, X: Any) -> Any:
        table, form = self._input(X)
        return self._output(self._scaled(table), form)

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit; the output is cross-fitted on the table's folds when it has a fold column, else in-sample."""
        table, form = self._fit_input(X, y)
        self._fit_table(table)
        full = self._scaled(table)
        folds = table.folds
        if folds is None or FOLD not in table.meta.columns:
            return self._output(full, form)
        y_codes = table.y
        f = np.asarray(table.meta[FOLD].fillna(-1).to_numpy(), dtype=np.int64)
        values = np.unique(f[f >= 0])
        if len(values) < 2:
            return self._output(full, form)
        out = full.probs.copy()  # rows outside every fold: the full fit
        for v in values:
            train = (f != v) & (f >= 0) & (y_codes >= 0)
            test = f == v
            for i in range(table.n_models):
                t = _fit_temperature(table.probs[train, i, :], y_codes[train])
                out[test, i, :] = _apply_temperature(table.probs[test, i, :], t)
        return self._output(table.replace(probs=out), form)

    def _fitted_state(self) -> dict[str, Any]:
        state = super()._fitted_state()
        if hasattr(self, "temperature_"):
            state["temperature_"] = dict(self.temperature_)
        return state

    def _restore(self, fitted: dict[str, Any]) -> None:
        super()._restore(fitted)
        if "temperature_" in fitted:
            self.temperature_ = {str(k): float(v) for k, v in fitted["temperature_"].items()}


def sinkhorn(
    proba: np.ndarray, targets: np.ndarray, *, max_iter: int = 10_000, tol: float = 1e-9
) -> tuple[np.ndarray, int]:
    """Scale ``proba`` so rows sum to 1 and column ``k`` sums to ``targets[k]``.

    Returns the scaled array and the number of iterations.  Stops when every
    column total is within ``tol * n`` of its target.
    """
    P = np.asarray(proba, dtype=np.float64)
    n = len(P)
    col = np.ones(P.shape[1])
    x = P
    for it in range(1, max_iter + 1):
        x = _renorm(P * col)
        tot = x.sum(axis=0)
        if np.abs(tot - targets).max() <= tol * n:
            return x, it
        col = col * (targets / np.where(tot > 0, tot, 1.0))
    return x, max_iter


@register("sinkhorn")
class SinkhornEqualizer(_Equalizer):
    """Soft equalizer: Sinkhorn scaling of probabilities to the class quotas, per group.

    Parameters
    ----------
    quota, by, model
        As for :class:`~stacker.equalize.HungarianEqualizer`; a quota of
        proportions (or None) targets ``n * proportion`` rows per class, not rounded.
    max_iter : int, default 10000
    tol : float, default 1e-9
        Stop when every class total is within ``tol * n`` of its quota.

    Attributes
    ----------
    classes_ : ndarray
    labels_ : ndarray
        Argmax class of every row of the batch given to ``fit``, after scaling.
    n_iter_ : dict
        Group name -> iterations used on that batch.
    """

    def __init__(
        self,
        quota: QuotaSpec = None,
        by: str | list[str] | None = None,
        model: str | None = None,
        max_iter: int = 10_000,
        tol: float = 1e-9,
    ) -> None:
        self.quota = quota
        self.by = by
        self.model = model
        self.max_iter = max_iter
        self.tol = tol

    def _targets(self, n: int, classes: Sequence[str], group: str) -> np.ndarray:
        k = len(classes)
        if self.quota is None:
            return np.full(k, n / k)
        values = _per_class(self.quota, classes, "quota")
        if np.all(values == np.round(values)) and abs(values.sum() - 1.0) > 1e-9:
            if values.sum() != n:
                raise ConfigError(f"quotas sum to {int(values.sum())} but the group ({group}) has {n} rows")
            return values
        if abs(values.sum() - 1.0) > 1e-6:
            raise ConfigError(f"quota proportions sum to {values.sum():g}, not 1")
        return values * n

    def _equalize(
        self, P: np.ndarray, classes: Sequence[str], group: str, output: bool
    ) -> tuple[np.ndarray, np.ndarray | None, Any]:
        targets = self._targets(len(P), classes, group)
        starved = (P.sum(axis=0) <= 0) & (targets > 0)
        if starved.any():
            bad = [classes[int(i)] for i in np.flatnonzero(starved)]
            raise ConfigError(f"classes {bad} have zero probability everywhere in {group} but a positive quota")
        scaled, n_iter = sinkhorn(P, targets, max_iter=self.max_iter, tol=self.tol)
        return np.argmax(scaled, axis=1), scaled, n_iter

    def _set_info(self, info: dict[str, Any]) -> None:
        self.n_iter_ = info

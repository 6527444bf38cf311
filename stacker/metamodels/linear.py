"""Multinomial logistic regression over standardised stacked features."""

from __future__ import annotations

import json

import numpy as np

from stacker.metamodels._base import MetaModel, softmax

__all__ = ["LogisticMetaClassifier"]


class LogisticMetaClassifier(MetaModel):
    """L2-regularised multinomial logistic regression (scikit-learn, lbfgs).

    Features are standardised first (statistics stored with the model).  Best
    fed log-probabilities (``Blend(features="log")``).  Native format: JSON of
    the coefficients.

    Parameters
    ----------
    C : float, default 1.0
        Inverse regularisation strength.
    max_iter : int, default 1000
    random_state : int, default 0
    """

    family = "logistic"
    suffix = ".json"

    def __init__(self, C: float = 1.0, max_iter: int = 1000, random_state: int = 0) -> None:
        self.C = C
        self.max_iter = max_iter
        self.random_state = random_state

    def _fit(self, X, y, w, groups) -> None:
        from sklearn.linear_model import LogisticRegression

        self.mean_ = np.average(X, axis=0, weights=w)
        scale = np.sqrt(np.average((X - self.mean_) ** 2, axis=0, weights=w))
        self.scale_ = np.where(scale > 1e-12, scale, 1.0)
        lr = LogisticRegression(C=float(self.C), max_iter=int(self.max_iter), random_state=self.random_state)
        lr.fit((X - self.mean_) / self.scale_, y, sample_weight=w)
        self.n_iter_ = int(np.max(lr.n_iter_))
        coef, icpt = lr.coef_, lr.intercept_
        if coef.shape[0] == 1:  # binary: sklearn stores one row; make it a two-class softmax
            coef = np.vstack([np.zeros_like(coef[0]), coef[0]])
            icpt = np.array([0.0, icpt[0]])
        self.coef_, self.intercept_ = coef, icpt

    def _predict_proba(self, X):
        return softmax(((X - self.mean_) / self.scale_) @ self.coef_.T + self.intercept_)

    def _to_bytes(self) -> bytes:
        state = {k: getattr(self, k).tolist() for k in ("mean_", "scale_", "coef_", "intercept_")}
        return json.dumps(state).encode()

    def _from_bytes(self, data: bytes) -> None:
        for k, v in json.loads(data).items():
            setattr(self, k, np.asarray(v, dtype=np.float64))

    def _extra_state(self):
        return {"n_iter": self.n_iter_}

    def _set_extra_state(self, state):
        self.n_iter_ = int(state.get("n_iter", 0))

"""Shared plumbing of the meta-models: scikit-learn conventions plus native, pickle-free persistence."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from stacker.errors import BundleError
from stacker.files import atomic_path, jsonable

__all__ = ["MetaModel", "softmax", "SIDECAR_SUFFIX"]

#: The JSON file beside each native model file: family, parameters, classes, fitted extras.
SIDECAR_SUFFIX = ".meta.json"


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class MetaModel(ClassifierMixin, BaseEstimator):
    """Base class: subclasses implement ``_fit``, ``_predict_proba`` and native (de)serialisation.

    ``fit(X, y, sample_weight=None, groups=None)`` encodes labels (``classes_``
    is sorted, as in scikit-learn) and hands integer codes ``0..K-1`` to
    ``_fit``.  ``groups`` (image ids) keep an inner early-stopping split grouped.
    """

    #: Registered family name, e.g. ``"xgboost"``.
    family: ClassVar[str] = ""
    #: Suffix of the native model file.
    suffix: ClassVar[str] = ".json"

    # ---------------------------------------------------------------- sklearn API
    def fit(self, X: Any, y: Any, sample_weight: Any = None, groups: Any = None) -> MetaModel:
        self._fit(*self._fit_input(X, y, sample_weight, groups))
        return self

    def _fit_input(
        self, X: Any, y: Any, sample_weight: Any, groups: Any
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """Validate ``fit``'s arguments, set ``classes_``; ``(X, codes, weights, groups)`` for ``_fit``."""
        X, y = validate_data(self, X, y, dtype=np.float64)
        from sklearn.utils.multiclass import check_classification_targets

        check_classification_targets(y)
        self.classes_, codes = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in the data, got 1 class: "
                f"{self.classes_[0]!r}"
            )
        w = _check_sample_weight(sample_weight, X, dtype=np.float64)
        return X, codes.astype(np.int64), w, None if groups is None else np.asarray(groups)

    @classmethod
    def fit_many(
        cls, estimators: Sequence[MetaModel], datasets: Sequence[tuple[Any, Any, Any, Any]]
    ) -> list[MetaModel]:
        """Fit ``estimators[j]`` on ``datasets[j] = (X, y, sample_weight, groups)``; returns the estimators.

        The Blend fits a member's fold models through this.  The default fits
        them one by one; a family that trains several models faster together
        overrides it (the Keras MLP trains them as one batched network), with
        each estimator ending up as its own ``fit`` would leave it.
        """
        if len(estimators) != len(datasets):
            raise ValueError(f"{len(estimators)} estimators for {len(datasets)} datasets")
        return [est.fit(X, y, sample_weight=sw, groups=g) for est, (X, y, sw, g) in zip(estimators, datasets)]

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "classes_")
        X = validate_data(self, X, dtype=np.float64, reset=False)
        p = np.asarray(self._predict_proba(X), dtype=np.float64).reshape(len(X), len(self.classes_))
        p = np.clip(p, 0.0, None)
        return p / p.sum(axis=1, keepdims=True)

    def predict(self, X: Any) -> np.ndarray:
        p = self.predict_proba(X)
        return self.classes_[np.argmax(p, axis=1)]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

    # ---------------------------------------------------------------- subclass hooks
    def _fit(self, X: np.ndarray, y: np.ndarray, w: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def _predict_proba(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _to_bytes(self) -> bytes:
        """The fitted model in its native format."""
        raise NotImplementedError

    def _from_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def _extra_state(self) -> dict[str, Any]:
        """JSON-able fitted attributes stored in the sidecar (beyond classes)."""
        return {}

    def _set_extra_state(self, state: dict[str, Any]) -> None:
        pass

    # ---------------------------------------------------------------- persistence
    def to_state(self) -> tuple[bytes, dict[str, Any]]:
        """``(native model bytes, JSON-able sidecar)`` of a fitted model."""
        check_is_fitted(self, "classes_")
        side = {
            "family": self.family,
            "params": jsonable(self.get_params()),
            "classes": jsonable(self.classes_),
            "n_features_in": int(self.n_features_in_),
            "extra": jsonable(self._extra_state()),
        }
        return self._to_bytes(), side

    @classmethod
    def from_state(cls, data: bytes, side: dict[str, Any]) -> MetaModel:
        """Rebuild a fitted model from :meth:`to_state`'s output."""
        if side.get("family") != cls.family:
            raise BundleError(f"model file is a {side.get('family')!r} model, not {cls.family!r}")
        params = dict(side.get("params", {}))
        for k, v in params.items():  # JSON turns tuples into lists
            if isinstance(v, list):
                params[k] = tuple(v)
        obj = cls(**params)
        obj.classes_ = np.asarray(side["classes"])
        obj.n_features_in_ = int(side["n_features_in"])
        obj._set_extra_state(side.get("extra", {}))
        obj._from_bytes(data)
        return obj

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the native model file at ``path`` and its JSON sidecar at ``path + '.meta.json'``."""
        data, side = self.to_state()
        path = Path(path)
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        with atomic_path(str(path) + SIDECAR_SUFFIX) as tmp:
            tmp.write_text(json.dumps(side, indent=1), encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MetaModel:
        path = Path(path)
        side_path = Path(str(path) + SIDECAR_SUFFIX)
        if not path.is_file() or not side_path.is_file():
            raise BundleError(f"model file {str(path)!r} or its sidecar {side_path.name!r} is missing")
        try:
            side = json.loads(side_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise BundleError(f"sidecar {str(side_path)!r} is not valid JSON ({exc})") from None
        return cls.from_state(path.read_bytes(), side)

"""The interface every step of a chain implements, and the registry used to load them.

A *transform* is a scikit-learn estimator over class probabilities: arrays,
DataFrames or :class:`~stacker.table.PredictionTable` in (:mod:`stacker.inputs`),
the same kind out.  ``__init__`` only stores parameters, ``fit`` learns
attributes ending in ``_`` and returns ``self``, ``transform`` and ``predict``
never change the fitted state, and a step used before ``fit`` raises
:class:`~stacker.errors.NotFittedError`.

``fit_transform(X, y)`` returns what the *next* step should be fitted on.  For
steps that learn from labels (the Blend, temperature scaling) that is an
out-of-fold prediction, never an in-sample one, so a chain (or a scikit-learn
``Pipeline``) fitted on a holdout never trains a later step on leaked predictions.

Persistence is JSON plus native files, never pickle: ``get_state(directory)``
returns a JSON-able dict (and may write native model files into ``directory``);
``from_state(state, directory)`` rebuilds the fitted object.  Classes register
under a stable name with :func:`register` so a saved chain can be loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from stacker.errors import BundleError, NotFittedError
from stacker.files import jsonable
from stacker.inputs import Form, encode_labels, from_table, labels_to_names, to_table, with_labels
from stacker.table import PredictionTable

__all__ = ["Transform", "register", "get_transform_class", "TRANSFORMS", "KIND_MODULES"]

T = TypeVar("T", bound="Transform")

#: name -> class of every registered transform.
TRANSFORMS: dict[str, type[Transform]] = {}


def register(name: str):
    """Class decorator: register a :class:`Transform` subclass under ``name``."""

    def deco(cls: type[T]) -> type[T]:
        if name in TRANSFORMS and TRANSFORMS[name] is not cls:
            raise ValueError(f"transform name {name!r} is already registered")
        cls.kind = name
        TRANSFORMS[name] = cls
        return cls

    return deco


#: Modules that register the built-in kinds; imported on demand, because some (the
#: Blend) are imported lazily by ``stacker`` and a loader may run before them.
KIND_MODULES = {
    "blend": "stacker.blend",
    "chain": "stacker.chain",
    "hungarian": "stacker.equalize",
    "greedy": "stacker.equalize",
    "power_mean": "stacker.transforms",
    "prior_shift": "stacker.transforms",
    "temperature": "stacker.transforms",
    "sinkhorn": "stacker.transforms",
}


def get_transform_class(name: str) -> type[Transform]:
    """The registered class of a kind, importing its built-in module if needed."""
    if name not in TRANSFORMS and name in KIND_MODULES:
        import importlib

        try:
            importlib.import_module(KIND_MODULES[name])
        except ImportError as exc:
            raise BundleError(
                f"transform kind {name!r} needs {KIND_MODULES[name]}, which cannot be imported: {exc}"
            ) from None
    if name not in TRANSFORMS:
        raise BundleError(f"unknown transform kind {name!r}; known: {sorted(set(TRANSFORMS) | set(KIND_MODULES))}")
    return TRANSFORMS[name]


class Transform(TransformerMixin, BaseEstimator):
    """Base class of chain steps (see the module docstring)."""

    kind: ClassVar[str] = ""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True  # class probabilities
        tags.target_tags.required = False
        return tags

    # --- inputs ------------------------------------------------------------------------
    def _check_fitted(self, attribute: str) -> None:
        if not hasattr(self, attribute):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit (or fit_transform) first")

    def _fit_input(self, X: Any, y: Any = None) -> tuple[PredictionTable, Form]:
        """The table of ``fit``'s input, labelled with ``y`` if given; sets ``classes_`` and ``n_features_in_``.

        Arrays: ``classes_`` are ``y``'s labels (:func:`~stacker.inputs.encode_labels`), or the
        column indices without ``y``.  Tables and DataFrames: their class names.
        """
        table, form = to_table(X)
        names = np.asarray(table.classes, dtype=object)
        if form.kind == "array":
            if y is not None:
                self.classes_, codes = encode_labels(y, table.n_classes, len(table))
                table = with_labels(table, names[codes])
            else:
                self.classes_ = np.arange(table.n_classes)
            self.n_features_in_ = int(np.prod(np.shape(X)[1:]))
        else:
            self.classes_ = names
            if y is not None:
                table = with_labels(table, labels_to_names(y, table, None))
        return table, form

    def _input(self, X: Any) -> tuple[PredictionTable, Form]:
        """The table of a fitted step's input, checked against the classes it was fitted on.

        A table or DataFrame whose classes are the fitted names in another order is reordered to
        the fitted order (per-class state such as a source prior stays with its class).
        """
        table, form = to_table(X)
        classes = getattr(self, "classes_", None)
        if classes is None:
            return table, form
        if table.n_classes != len(classes):
            raise ValueError(
                f"{type(self).__name__} was fitted on {len(classes)} classes; the input has {table.n_classes}"
            )
        names = [str(c) for c in classes]
        if form.kind != "array" and np.asarray(classes).dtype == object and list(table.classes) != names:
            if sorted(table.classes) != sorted(names):
                raise ValueError(
                    f"{type(self).__name__} was fitted on classes {names}; the input has {list(table.classes)}"
                )
            order = [table.classes.index(c) for c in names]
            table = table.replace(probs=table.probs[:, :, order], classes=names)
        return table, form

    def _labels(self, codes: np.ndarray, table: PredictionTable, form: Form) -> np.ndarray:
        """Class labels of class positions: the fitted ``classes_`` for arrays, the table's names otherwise."""
        classes = getattr(self, "classes_", None)
        if form.kind == "array" and classes is not None and len(classes) == table.n_classes:
            return np.asarray(classes)[codes]
        return np.asarray(table.classes, dtype=object)[codes]

    @staticmethod
    def _output(table: PredictionTable, form: Form, *, reduced: bool = False) -> Any:
        return from_table(table, form, reduced=reduced)

    # --- the transform protocol --------------------------------------------------------
    def fit(self: T, X: Any, y: Any = None) -> T:
        """Learn from (labelled) probabilities; stateless transforms only check the input."""
        self._fit_input(X, y)
        return self

    def transform(self, X: Any) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit, then return what the next step is fitted on (out-of-fold for learners)."""
        # Steps written for tables alone define fit(table): call them so when there is no y to pass.
        fitted = self.fit(X) if y is None else self.fit(X, y)
        return fitted.transform(X)

    # --- persistence -------------------------------------------------------------------
    def get_state(self, directory: Path) -> dict[str, Any]:
        """JSON-able parameters and fitted state; may write native files into ``directory``."""
        state: dict[str, Any] = {"params": jsonable(self.get_params(deep=False))}
        fitted = self._fitted_state()
        if fitted:
            state["fitted"] = fitted
        return state

    def _fitted_state(self) -> dict[str, Any]:
        """The fitted attributes :meth:`get_state` keeps (subclasses add theirs)."""
        return {"classes_": jsonable(np.asarray(self.classes_).tolist())} if hasattr(self, "classes_") else {}

    def _restore(self, fitted: dict[str, Any]) -> None:
        """Set the attributes of :meth:`_fitted_state` back."""
        if "classes_" in fitted:
            values = fitted["classes_"]
            self.classes_ = np.asarray(values, dtype=object if all(isinstance(v, str) for v in values) else None)

    @classmethod
    def from_state(cls: type[T], state: dict[str, Any], directory: Path) -> T:
        obj = cls(**state.get("params", {}))
        obj._restore(state.get("fitted") or {})
        return obj

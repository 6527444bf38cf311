"""Meta-models of the Blend: scikit-learn classifiers over the stacked level-1 probabilities.

Each is a :class:`~sklearn.base.ClassifierMixin` with ``fit(X, y,
sample_weight=None, groups=None)``, ``predict_proba``, ``classes_`` and native,
pickle-free ``save(path)`` / ``load(path)``:

============= ================================ ====================================
family        class                            native file
============= ================================ ====================================
``xgboost``   :class:`XGBMetaClassifier`       XGBoost UBJSON (``.ubj``)
``lightgbm``  :class:`LGBMMetaClassifier`      LightGBM model text (``.txt``)
``keras``     :class:`KerasMLPClassifier`      Keras 3 (``.keras``; ``nn`` extra)
``logistic``  :class:`LogisticMetaClassifier`  JSON coefficients
``pool``      :class:`LogLinearPool`           JSON weights
``selection`` :class:`GreedyEnsembleSelection` JSON weights
============= ================================ ====================================

Families are imported on first use (:func:`get_family`), so the Keras/torch
stack is only loaded when a Keras member is fitted or loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from stacker.errors import ConfigError

if TYPE_CHECKING:
    from stacker.metamodels._base import MetaModel

__all__ = [
    "FAMILIES",
    "get_family",
    "XGBMetaClassifier",
    "LGBMMetaClassifier",
    "KerasMLPClassifier",
    "LogisticMetaClassifier",
    "LogLinearPool",
    "GreedyEnsembleSelection",
    "ensemble_selection",
]

#: family name -> (module, class name)
FAMILIES: dict[str, tuple[str, str]] = {
    "xgboost": ("stacker.metamodels.xgboost", "XGBMetaClassifier"),
    "lightgbm": ("stacker.metamodels.lightgbm", "LGBMMetaClassifier"),
    "keras": ("stacker.metamodels.keras", "KerasMLPClassifier"),
    "logistic": ("stacker.metamodels.linear", "LogisticMetaClassifier"),
    "pool": ("stacker.metamodels.pool", "LogLinearPool"),
    "selection": ("stacker.metamodels.selection", "GreedyEnsembleSelection"),
}
#: Families whose estimator takes the feature ``layout`` (probability blocks) and ``input`` kind.
BLOCK_FAMILIES = frozenset({"pool", "selection"})


def get_family(name: str) -> type[MetaModel]:
    """The meta-model class of a family; Keras is checked for at this point."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown meta-model family {name!r}; known: {sorted(FAMILIES)}")
    module, cls = FAMILIES[name]
    if name == "keras":
        from stacker.metamodels.keras import import_keras

        import_keras()
    return getattr(importlib.import_module(module), cls)


_LAZY = {cls: module for module, cls in FAMILIES.values()}
_LAZY["ensemble_selection"] = "stacker.metamodels.selection"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stacker.metamodels' has no attribute {name!r}")

"""The interface every step of a chain implements, and the registry used to load them.

A *transform* maps a :class:`~stacker.table.PredictionTable` to another one.
It follows scikit-learn's conventions: ``__init__`` only stores parameters,
``fit`` learns attributes ending in ``_`` and returns ``self``.

``fit_transform(table)`` returns what the *next* step should be fitted on.  For
steps that learn from labels (the Blend, temperature scaling) that is an
out-of-fold prediction, never an in-sample one, so a chain fitted on a holdout
never trains a later step on leaked predictions.

Persistence is JSON plus native files, never pickle: ``get_state(directory)``
returns a JSON-able dict (and may write native model files into ``directory``);
``from_state(state, directory)`` rebuilds the fitted object.  Classes register
under a stable name with :func:`register` so a saved chain can be loaded.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from stacker.errors import BundleError
from stacker.table import PredictionTable

__all__ = ["Transform", "register", "get_transform_class", "TRANSFORMS"]

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


class Transform:
    """Base class of chain steps (see the module docstring)."""

    kind: ClassVar[str] = ""

    # --- scikit-learn style parameters -------------------------------------------------
    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values() if p.name != "self" and p.kind != p.VAR_KEYWORD]

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self: T, **params: Any) -> T:
        for k, v in params.items():
            if k not in self._param_names():
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # --- the transform protocol --------------------------------------------------------
    def fit(self: T, table: PredictionTable) -> T:
        """Learn from a (labelled) table; stateless transforms just return ``self``."""
        return self

    def transform(self, table: PredictionTable) -> PredictionTable:  # pragma: no cover - abstract
        raise NotImplementedError

    def fit_transform(self, table: PredictionTable) -> PredictionTable:
        """Fit, then return what the next step is fitted on (out-of-fold for learners)."""
        return self.fit(table).transform(table)

    # --- persistence -------------------------------------------------------------------
    def get_state(self, directory: Path) -> dict[str, Any]:
        """JSON-able parameters and fitted state; may write native files into ``directory``."""
        return {"params": self.get_params()}

    @classmethod
    def from_state(cls: type[T], state: dict[str, Any], directory: Path) -> T:
        return cls(**state.get("params", {}))

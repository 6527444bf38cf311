"""A chain of transforms fitted on a holdout table and applied to a test table.

``Chain([PowerMean(p=0), blend, HungarianEqualizer(by="manip")])`` fits each
step on what the previous one returns from ``fit_transform`` (out-of-fold for
learners, see :mod:`stacker.base`), and ``transform`` runs the fitted steps in
order.  Any registered :class:`~stacker.base.Transform` can be a step, a Chain
included.

Saved form: the bundle directory of :mod:`stacker.bundle` (one checksummed manifest, kind
``"chain"``, whose state lists the steps) with one sub-directory per step::

    manifest.json     {..., "kind": "chain", "state": {"steps": [{"kind", "dir", "state"}, ...]}, "files": ...}
    00-power_mean/    native files the step wrote in get_state (may be empty)
    01-blend/
    ...

Loading verifies the manifest and every file's checksum, refuses unknown kinds and step
directories outside the bundle (:class:`~stacker.errors.BundleError`).  The directory is
written atomically (temporary directory, then rename).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils import get_tags
from sklearn.utils.metaestimators import available_if

from stacker.base import Transform, get_transform_class, register
from stacker.errors import BundleError, ConfigError, NotFittedError

__all__ = ["Chain", "load_chain"]


@register("chain")
class Chain(Transform):
    """Transforms applied in order.

    Each step is fitted on what the previous step's ``fit_transform`` returns, and
    ``y`` (for arrays) is passed to every step.  Like a scikit-learn ``Pipeline``,
    the nested parameters are ``steps__<i>__<name>`` (``steps__0__p``).

    Parameters
    ----------
    steps : sequence of Transform
        The steps; each must be a registered :class:`~stacker.base.Transform`.
        Kept as given (``clone`` relies on it); read as a list at ``fit``.
    """

    def __init__(self, steps: Sequence[Transform] = ()) -> None:
        self.steps = steps

    def _check_steps(self) -> list[Transform]:
        steps = list(self.steps)
        if not steps:
            raise ConfigError("a chain needs at least one step")
        for i, step in enumerate(steps):
            if not isinstance(step, Transform) or not type(step).kind:
                raise ConfigError(f"chain step {i} ({step!r}) is not a registered stacker Transform")
        return steps

    # ------------------------------------------------------------ nested parameters
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"steps": self.steps}
        if deep:
            for i, step in enumerate(self.steps):
                out[f"steps__{i}"] = step
                if hasattr(step, "get_params"):
                    out.update({f"steps__{i}__{k}": v for k, v in step.get_params(deep=True).items()})
        return out

    def set_params(self, **params: Any) -> Chain:
        if "steps" in params:
            self.steps = params.pop("steps")
        if not params:
            return self
        steps = list(self.steps)
        nested: dict[int, dict[str, Any]] = {}
        for key, value in params.items():
            head, _, rest = key.partition("__")
            index, _, name = rest.partition("__")
            if head != "steps" or not index.isdigit() or int(index) >= len(steps):
                raise ValueError(
                    f"invalid parameter {key!r} for Chain: use steps or steps__<i>[__<name>] with i < {len(steps)}"
                )
            if name:
                nested.setdefault(int(index), {})[name] = value
            else:
                steps[int(index)] = value
        if any(a is not b for a, b in zip(steps, self.steps)):
            self.steps = steps
        for i, sub in nested.items():
            steps[i].set_params(**sub)
        return self

    # ------------------------------------------------------------ fitting and applying
    def fit(self, X: Any, y: Any = None) -> Chain:
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: Any, y: Any = None) -> Any:
        """Fit every step on the previous step's ``fit_transform`` output; return the last output."""
        for step in self._check_steps():
            X = step.fit_transform(X) if y is None else step.fit_transform(X, y)
        self.fitted_ = True
        return X

    def _check_chain_fitted(self) -> list[Transform]:
        steps = self._check_steps()
        # A chain of stateless steps (a power mean) needs no fit; any other has to be fitted first.
        if not hasattr(self, "fitted_") and any(get_tags(s).requires_fit for s in steps):
            raise NotFittedError("this Chain is not fitted yet; call fit (or fit_transform) first")
        return steps

    def transform(self, X: Any) -> Any:
        for step in self._check_chain_fitted():
            X = step.transform(X)
        return X

    def _last_predicts(self) -> bool:
        steps = list(self.steps)
        return bool(steps) and hasattr(steps[-1], "predict")

    @available_if(_last_predicts)
    def predict(self, X: Any) -> np.ndarray:
        """The last step's ``predict`` on what the steps before it return."""
        steps = self._check_chain_fitted()
        for step in steps[:-1]:
            X = step.transform(X)
        return steps[-1].predict(X)

    @property
    def classes_(self) -> np.ndarray:  # type: ignore[override]  # a chain's classes are its last step's
        """The last step's classes."""
        last = list(self.steps)[-1] if self.steps else None
        if last is None or not hasattr(last, "classes_"):
            raise AttributeError("classes_: the chain's last step has no classes (not fitted?)")
        return last.classes_

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "fitted_")

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> Transform:
        return list(self.steps)[i]

    # ---------------------------------------------------------------- persistence
    def get_state(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        steps = []
        for i, step in enumerate(self._check_steps()):
            sub = f"{i:02d}-{type(step).kind}"
            (directory / sub).mkdir(parents=True, exist_ok=True)
            state = step.get_state(directory / sub)
            try:
                json.dumps(state)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"state of step {i} ({type(step).kind}) is not JSON-able: {exc}") from None
            steps.append({"kind": type(step).kind, "dir": sub, "state": state})
        return {"steps": steps}

    @classmethod
    def from_state(cls, state: dict[str, Any], directory: Path) -> Chain:
        from stacker.bundle import safe_path

        directory = Path(directory)
        raw = state.get("steps") if isinstance(state, dict) else None
        if not isinstance(raw, list) or not raw:
            raise BundleError("field 'steps' is not a non-empty list of steps")
        steps = []
        for i, entry in enumerate(raw):
            if not isinstance(entry, dict) or not {"kind", "dir", "state"} <= set(entry):
                raise BundleError(f"field 'steps[{i}]' lacks kind/dir/state")
            kind, sub = entry["kind"], entry["dir"]
            if not isinstance(kind, str) or not isinstance(entry["state"], dict):
                raise BundleError(f"field 'steps[{i}]' is malformed")
            step_dir = safe_path(directory, sub, f"steps[{i}].dir")
            if not step_dir.is_dir():
                raise BundleError(f"field 'steps[{i}].dir': directory {sub!r} is missing")
            klass = get_transform_class(kind)
            try:
                steps.append(klass.from_state(entry["state"], step_dir))
            except BundleError as exc:
                raise BundleError(f"step {i} ({kind}): {exc}") from None
            except (TypeError, KeyError, ValueError, AttributeError) as exc:
                raise BundleError(f"step {i} ({kind}) cannot be rebuilt: {exc!r}") from None
        chain = cls(steps)
        chain.fitted_ = True
        return chain

    def manifest_summary(self, state: dict[str, Any]) -> dict[str, Any]:
        return {"steps": [step["kind"] for step in state["steps"]]}

    def save(self, directory: str | os.PathLike[str]) -> Path:
        """Write the chain to ``directory`` atomically (replacing an existing bundle)."""
        from stacker import bundle

        return bundle.save(self, directory)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> Chain:
        """Read a chain written by :meth:`save`; a bundle of one step (a Blend) comes back as a one-step chain."""
        from stacker import bundle

        obj = bundle.load(directory)
        if isinstance(obj, Chain):
            return obj
        chain = cls([obj])
        chain.fitted_ = True
        return chain


def load_chain(directory: str | os.PathLike[str]) -> Chain:
    """Shorthand for :meth:`Chain.load`."""
    return Chain.load(directory)

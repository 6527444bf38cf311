"""The post-processing steps by name: one registry for recipes, ``stacker predict``, ``stacker tune`` and chains.

A name is the step's registered kind (:mod:`stacker.base`), so a chain that holds
the step saves and loads it under the same name.  Where the post-processing runs,
it runs the same way: :func:`deployed_step` is the step ``stacker predict --post``
applies to a table and the step whose labels ``stacker tune`` scores, equalizing
within each manipulation group when the table has a ``manip`` column (the test set
was balanced within its unaltered and its manipulated half).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from stacker.errors import ConfigError
from stacker.table import MANIP, PredictionTable

__all__ = ["POSTPROCESS", "check_postprocess", "postprocess_step", "resolve_by", "deployed_step", "apply_postprocess"]

#: Post-processing names, in the order the tuner searches them; each but "none" is a registered kind.
POSTPROCESS = ("none", "hungarian", "greedy", "sinkhorn")


def check_postprocess(name: Any, where: str = "postprocess") -> str:
    """``name`` if it is a post-processing name, else a :class:`~stacker.errors.ConfigError`."""
    if not isinstance(name, str) or name not in POSTPROCESS:
        raise ConfigError(f"{where} must be one of {list(POSTPROCESS)}, got {name!r}")
    return name


def postprocess_step(name: str | None, **params: Any):
    """A new, unfitted step for a post-processing name (None for ``"none"``)."""
    from stacker.base import get_transform_class

    if name is None or check_postprocess(name) == "none":
        return None
    return get_transform_class(name)(**params)


def resolve_by(by: str | None, columns: Iterable[str]) -> str | None:
    """The group column: ``"auto"`` is ``manip`` when the table has one, ``"none"``/None is no grouping."""
    if by == "auto":
        return MANIP if MANIP in set(columns) else None
    return None if by in (None, "none") else by


def deployed_step(name: str | None, table: PredictionTable, by: str | None = "auto"):
    """``(step, by)``: the step applied to ``table`` by ``stacker predict --post name --by by``."""
    group = resolve_by(by, table.meta.columns)
    step = postprocess_step(name, **({"by": group} if group else {}))
    return step, group if step is not None else None


def apply_postprocess(
    name: str | None, table: PredictionTable, by: str | None = "auto"
) -> tuple[PredictionTable, np.ndarray]:
    """``(one-model output table, class index per row)`` of the deployed post-processing of ``table``.

    ``"none"`` keeps the probabilities (averaged over models) and their argmax.
    """
    step, _ = deployed_step(name, table, by)
    if step is None:
        probs = table.probs.mean(axis=1)
        out = table.replace(probs=probs[:, None, :], models=[table.models[0] if table.n_models == 1 else "mean"])
        return out, np.argmax(probs, axis=1)
    out = step.fit_transform(table)
    return out, step.assignment_

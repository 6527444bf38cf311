"""From a prediction table to the meta-models' feature matrix, and back-checks against a bundle.

The features of a row are every level-1 model's class probabilities, laid out
as ``n_models`` blocks of ``n_classes`` columns in the bundle's model and class
order (optionally as log-probabilities), followed by the manipulation flag when
the table has one.  :class:`FeatureSpec` records that layout; it is the single
place that checks a table against what a fitted Blend expects, so a table with
other classes or other models is refused with a message that names them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from stacker.errors import BundleError, ConfigError
from stacker.table import MANIP, PredictionTable

__all__ = ["FeatureSpec", "FEATURE_KINDS", "LOG_FLOOR", "to_log"]

#: ``"proba"``: raw probabilities; ``"log"`` (alias ``"logit"``): log-probabilities.
FEATURE_KINDS = ("proba", "log")
#: Probabilities are clipped below at this value before taking logs (log(1e-7) = -16.1): bounded
#: inputs for the MLP and logistic members (a documented exception to ``stacker.table.PROB_FLOOR``).
LOG_FLOOR = 1e-7


def to_log(p: np.ndarray) -> np.ndarray:
    """Log-probabilities, clipped below at ``log(LOG_FLOOR)`` so zeros stay finite."""
    return np.log(np.clip(p, LOG_FLOOR, None))


def _kind(features: str) -> str:
    kind = {"proba": "proba", "log": "log", "logit": "log", "logproba": "log"}.get(str(features))
    if kind is None:
        raise ConfigError(f"features must be one of 'proba', 'log' (or 'logit'), got {features!r}")
    return kind


@dataclass(frozen=True)
class FeatureSpec:
    """Layout of the feature matrix.

    Attributes
    ----------
    classes, models : tuple of str
        Class and model order of the probability blocks.
    kind : {"proba", "log"}
        Raw probabilities or log-probabilities.
    manip : bool
        Whether the manipulation flag is the last column.
    """

    classes: tuple[str, ...]
    models: tuple[str, ...]
    kind: str = "proba"
    manip: bool = False

    @classmethod
    def from_table(cls, table: PredictionTable, features: str = "proba") -> FeatureSpec:
        return cls(tuple(table.classes), tuple(table.models), _kind(features), table.manip is not None)

    # ------------------------------------------------------------------ layout
    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def layout(self) -> tuple[int, int]:
        """``(n_models, n_classes)``: the block structure the pool and selection members need."""
        return (self.n_models, self.n_classes)

    @property
    def names(self) -> list[str]:
        prefix = "log:" if self.kind == "log" else ""
        names = [f"{prefix}{m}/{c}" for m in self.models for c in self.classes]
        return names + ([MANIP] if self.manip else [])

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"], d["models"] = list(self.classes), list(self.models)
        d["names"] = self.names
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSpec:
        try:
            return cls(tuple(d["classes"]), tuple(d["models"]), _kind(d["kind"]), bool(d["manip"]))
        except (KeyError, TypeError) as exc:
            raise BundleError(f"the feature layout in the manifest is incomplete ({exc})") from None

    # ------------------------------------------------------------------ checking
    def align(self, table: PredictionTable, *, what: str = "the bundle") -> PredictionTable:
        """The table with its models and classes in this spec's order; refuses any mismatch."""
        src = f"file {table.source!r}: " if table.source else ""
        if set(table.classes) != set(self.classes):
            missing = [c for c in self.classes if c not in table.classes]
            extra = [c for c in table.classes if c not in self.classes]
            raise BundleError(
                f"{src}the table's classes differ from {what}'s: missing {missing}, unexpected {extra} "
                f"(expected {list(self.classes)})"
            )
        if set(table.models) != set(self.models):
            missing = [m for m in self.models if m not in table.models]
            extra = [m for m in table.models if m not in self.models]
            raise BundleError(
                f"{src}the table's models differ from {what}'s: missing {missing}, unexpected {extra} "
                f"(expected {list(self.models)})"
            )
        if self.manip and table.manip is None:
            raise BundleError(
                f"{src}{what} was fitted with the manipulation flag as a feature but the table has no {MANIP!r} column"
            )
        if tuple(table.models) != self.models:
            table = table.select_models(list(self.models))
        if tuple(table.classes) != self.classes:
            order = [table.classes.index(c) for c in self.classes]
            table = table.replace(probs=table.probs[:, :, order], classes=list(self.classes))
        return table

    def transform(self, table: PredictionTable) -> np.ndarray:
        """The ``(n_rows, n_features)`` float64 matrix of an (aligned) table."""
        table = self.align(table)
        p = table.probs.reshape(len(table), -1)
        X = to_log(p) if self.kind == "log" else p.copy()
        if self.manip:
            manip = table.manip
            assert manip is not None  # align() refuses a table without the flag
            X = np.hstack([X, manip.astype(np.float64)[:, None]])
        return np.ascontiguousarray(X)

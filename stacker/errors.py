"""Typed errors raised by stacker.

Every error that comes from bad input is a :class:`StackerError` (and a
:class:`ValueError`, so generic handlers keep working).  Table errors carry the
file, the column and the first offending rows so that the message alone is
enough to find the problem.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "StackerError",
    "TableError",
    "TableReadError",
    "SchemaError",
    "ProbabilityError",
    "DuplicateKeyError",
    "LabelError",
    "EmptyTableError",
    "MergeError",
    "BundleError",
    "ConfigError",
    "StudyError",
    "NotFittedError",  # noqa: F822 - built on first use by __getattr__
]

_MAX_ROWS_SHOWN = 5


class StackerError(ValueError):
    """Base class of every error stacker raises for bad input."""


class TableError(StackerError):
    """A prediction table is invalid.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str, optional
        The file the table came from.
    column : str, optional
        The offending column.
    rows : sequence of int, optional
        Positions (0-based) of the first offending rows.
    ids : sequence, optional
        Image ids of those rows, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        column: str | None = None,
        rows: Sequence[int] | np.ndarray | None = None,
        ids: Sequence[Any] | np.ndarray | None = None,
    ) -> None:
        self.path = path
        self.column = column
        self.rows = [int(r) for r in rows[:_MAX_ROWS_SHOWN]] if rows is not None else None
        self.ids = list(ids[:_MAX_ROWS_SHOWN]) if ids is not None else None
        self.reason = message
        super().__init__(self._format())

    def _format(self) -> str:
        where = []
        if self.path:
            # In-memory inputs are named "<array X>", "<DataFrame X>": no file to quote.
            in_memory = self.path.startswith("<") and self.path.endswith(">")
            where.append(self.path[1:-1] if in_memory else f"file {self.path!r}")
        if self.column:
            where.append(f"column {self.column!r}")
        text = (", ".join(where) + ": " if where else "") + self.reason
        if self.rows:
            text += f" (first rows: {self.rows}"
            if self.ids:
                text += f", ids: {self.ids}"
            text += ")"
        return text


class TableReadError(TableError):
    """The file is missing, is not parquet, or is truncated."""


class SchemaError(TableError):
    """Columns are missing, extra, mistyped, or a model lacks a class."""


class ProbabilityError(TableError):
    """Probabilities are NaN/inf, negative, or rows do not sum to 1."""


class DuplicateKeyError(TableError):
    """Two rows share the same key (id, manipulation, view)."""


class LabelError(TableError):
    """A label is outside the class set."""


class EmptyTableError(TableError):
    """The table has no rows."""


class MergeError(TableError):
    """Tables to merge disagree on classes, keys or rows."""


class BundleError(StackerError):
    """A saved bundle is missing, tampered with, or does not fit a table."""


class ConfigError(StackerError):
    """A recipe, quota, class weight or other option is invalid."""


class StudyError(StackerError):
    """A tuning study's storage is unreachable, or a study does not match this search space or table."""


def _not_fitted_error() -> type:
    from sklearn.exceptions import NotFittedError as SklearnNotFittedError

    class NotFittedError(StackerError, SklearnNotFittedError):
        """A step was used before ``fit``: scikit-learn's ``NotFittedError``, and a :class:`StackerError`."""

    NotFittedError.__module__ = __name__
    NotFittedError.__qualname__ = "NotFittedError"
    return NotFittedError


def __getattr__(name: str) -> type:
    # Built on first use: scikit-learn takes ~2 s to import, and the table commands never need it.
    if name == "NotFittedError":
        cls = _not_fitted_error()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

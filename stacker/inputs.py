"""What users hold, as the prediction table every step is implemented on, and back.

Every estimator of stacker takes three kinds of input and answers in the kind it
was given:

* a NumPy array (or nested lists): ``(N, K)`` probabilities of one model, ``(N, M, K)``
  of M models, or, for the Blend, ``(N, M*K)`` with each model's K columns
  together (model-major, as ``np.hstack([P1, P2, ...])`` builds it);
* a pandas DataFrame in the table schema (:mod:`stacker.table`): ``<model>/<class>``
  columns and the optional ``id``, ``label``, ``fold``, ``manip``, ``manip_kind`` and
  ``view`` columns (``id`` may be left out: rows are then their own images);
* a :class:`~stacker.table.PredictionTable`.

Arrays become a table with models ``"0".."M-1"`` and classes ``"0".."K-1"`` (column
positions); a validation error names the array and its columns (``X[:, 5]``).  Labels
``y`` of arrays are encoded like scikit-learn's: ``classes_`` is the sorted set of
labels when it has K values, else integer labels are taken as column indices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from stacker.errors import LabelError, SchemaError, TableError
from stacker.table import DEFAULT_ATOL, ID, LABEL, PredictionTable

__all__ = [
    "ACCEPTED",
    "Form",
    "to_table",
    "from_table",
    "encode_labels",
    "infer_n_classes",
    "labels_to_names",
    "with_labels",
    "group_codes",
]

#: The input types every step accepts, for TypeErrors.
ACCEPTED = "a NumPy array, a pandas DataFrame with '<model>/<class>' columns, or a PredictionTable"


@dataclass(frozen=True)
class Form:
    """How an input came, so the output can go back the same way."""

    kind: str  # "table", "frame" or "array"
    layout: str = ""  # arrays: "single" (N, K), "stacked" (N, M, K) or "flat" (N, M*K)
    index: pd.Index | None = None  # a DataFrame's index, given back to its output
    synthetic_id: bool = False  # a DataFrame without ``id``: ids were row positions


def _array(X: Any, what: str) -> np.ndarray:
    try:
        arr = np.asarray(X)
    except (ValueError, TypeError) as exc:  # ragged lists
        raise ValueError(f"{what} cannot be read as an array ({exc})") from None
    if arr.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {what} must hold real probabilities")
    if arr.ndim == 2 and arr.shape[1] < 2:
        raise ValueError(
            f"{what} has {arr.shape[1]} feature(s) (shape={arr.shape}) while a minimum of 2 is "
            "required: probabilities of at least 2 classes"
        )
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        try:
            arr = arr.astype(np.float64)
        except (ValueError, TypeError):
            raise ValueError(f"{what} must hold numbers (probabilities), got dtype {arr.dtype}") from None
    return arr.astype(np.float64, copy=False)


def _positional(arr: np.ndarray, layout: str, n_classes: int | None, what: str) -> tuple[np.ndarray, str]:
    """``(N, M, K)`` from an array in one of the layouts."""
    if arr.ndim == 3:
        return arr, "stacked"
    if arr.ndim != 2:
        raise ValueError(f"{what} must be a 2-d or 3-d array of probabilities, got shape {arr.shape}")
    if layout == "flat":
        d = arr.shape[1]
        if n_classes is None or n_classes < 2 or d % n_classes:
            raise ValueError(
                f"{what} has {d} columns, which are not M models x {n_classes} classes; pass a (N, M, K) array"
            )
        return arr.reshape(len(arr), d // n_classes, n_classes), "flat"
    return arr[:, None, :], "single"


def _column_text(column: str | None, layout: str, k: int, what: str) -> str | None:
    """``"1/2"`` (model 1, class 2) of the internal table as the user's array column."""
    m = re.fullmatch(r"(\d+)/(\d+|\*)", column or "")
    if m is None:
        return column
    model, cls = int(m.group(1)), m.group(2)
    if layout == "stacked":
        return f"{what}[:, {model}, {':' if cls == '*' else cls}]"
    if cls == "*":
        return f"{what}[:, {model * k}:{(model + 1) * k}]" if layout == "flat" else f"{what}[:, :]"
    return f"{what}[:, {model * k + int(cls) if layout == 'flat' else cls}]"


def to_table(
    X: Any,
    *,
    what: str = "X",
    layout: str = "single",
    n_classes: int | None = None,
    renormalize: bool = False,
) -> tuple[PredictionTable, Form]:
    """The validated table of an input, and its :class:`Form`.

    ``layout="flat"`` reads a 2-d array as ``(N, M*K)`` with ``n_classes`` = K
    (the Blend's input); otherwise a 2-d array is one model's ``(N, K)``.
    """
    if isinstance(X, PredictionTable):
        return X, Form("table")
    if isinstance(X, pd.DataFrame):
        frame, synthetic = X, ID not in X.columns
        if synthetic:
            frame = X.copy(deep=False)
            frame.insert(0, ID, np.arange(len(X)))
        table = PredictionTable.from_frame(frame, source=f"<DataFrame {what}>", renormalize=renormalize)
        return table, Form("frame", index=X.index, synthetic_id=synthetic)
    if hasattr(X, "tocsr") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{what}: sparse input is not supported (probabilities are dense); give {ACCEPTED}")
    if (
        isinstance(X, (str, bytes, dict, set))
        or X is None
        or not (isinstance(X, (np.ndarray, list, tuple)) or hasattr(X, "__array__"))
    ):
        raise TypeError(f"{what} must be {ACCEPTED}; got {type(X).__name__}")
    arr = _array(X, what)
    probs, kind = _positional(arr, layout, n_classes, what)
    n, m, k = probs.shape
    if n == 0:
        raise ValueError(f"{what} has no rows")
    # Row positions are the ids: unique by construction, so only the probabilities need checking.
    table = PredictionTable(
        pd.DataFrame({ID: np.arange(n)}),
        probs,
        [str(c) for c in range(k)],
        [str(i) for i in range(m)],
        source=f"<array {what}>",
        validate=False,
    )
    try:
        table._validate_probs(renormalize=renormalize, atol=DEFAULT_ATOL)
    except TableError as exc:
        raise type(exc)(
            exc.reason, path=exc.path, column=_column_text(exc.column, kind, k, what), rows=exc.rows
        ) from None
    return table, Form("array", layout=kind)


def from_table(table: PredictionTable, form: Form, *, reduced: bool = False) -> Any:
    """The output table in the input's kind: a table, a DataFrame, or an array of the input's layout.

    ``reduced``: the step reduced the models to one (a blend, a mean, an equalizer), so an
    array answer is ``(N, K)`` whatever the input's layout.
    """
    if form.kind == "table":
        return table
    if form.kind == "frame":
        frame = table.to_frame()
        if form.synthetic_id:
            frame = frame.drop(columns=[ID])
        if form.index is not None and len(form.index) == len(frame):
            frame.index = form.index
        return frame
    probs = table.probs  # a step's output table is new, so its array is handed out without a copy
    if reduced and probs.shape[1] == 1:
        return probs[:, 0, :]
    if form.layout == "stacked":
        return probs
    if probs.shape[1] == 1:
        return probs[:, 0, :]
    return probs.reshape(len(probs), -1)


def _check_y(y: Any, n: int, what: str = "y") -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise LabelError(f"{what} must be a 1-d array of class labels, got shape {y.shape}")
    if len(y) != n:
        raise LabelError(f"{what} has {len(y)} labels for {n} rows")
    if y.dtype.kind == "f":
        bad = ~np.isfinite(y)
        if bad.any():
            raise LabelError(f"{what} has NaN or infinite labels", rows=np.flatnonzero(bad))
    elif y.dtype == object:
        bad = pd.isna(y)
        if bad.any():
            raise LabelError(f"{what} has missing labels", rows=np.flatnonzero(bad))
    return y


def encode_labels(y: Any, n_classes: int, n: int, what: str = "y") -> tuple[np.ndarray, np.ndarray]:
    """``(classes_, codes)`` for labels of an array whose K columns are classes (see the module docstring)."""
    y = _check_y(y, n, what)
    classes, codes = _unique_labels(y, what)
    if len(classes) == n_classes:
        return classes, codes.astype(np.int64)
    integral = y.dtype.kind in "biu" or (y.dtype.kind == "f" and np.all(y == np.round(y)))
    if integral and y.min() >= 0 and y.max() < n_classes:
        return np.arange(n_classes), y.astype(np.int64)
    raise LabelError(
        f"{what} has {len(classes)} distinct labels {classes[:10].tolist()} but the probabilities have "
        f"{n_classes} classes: give labels of all {n_classes} classes, or class indices 0..{n_classes - 1}"
    )


def infer_n_classes(y: Any, n_columns: int, n: int, what: str = "y") -> int:
    """K of a ``(N, M*K)`` array from its labels: their number, else the largest class index + 1."""
    y = _check_y(y, n, what)
    u = len(_unique_labels(y, what)[0])
    if u >= 2 and n_columns % u == 0:
        return u
    if y.dtype.kind in "biu" and y.min() >= 0 and n_columns % (int(y.max()) + 1) == 0:
        return int(y.max()) + 1
    raise LabelError(
        f"{what} has {u} distinct labels, which do not divide the {n_columns} columns of X into M models x K "
        "classes; pass X as a (N, M, K) array"
    )


def _unique_labels(y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted labels, code per row)`` of class labels; a LabelError for continuous or unorderable ones."""
    from sklearn.utils.multiclass import type_of_target

    kind = type_of_target(y, input_name=what)
    if kind not in ("binary", "multiclass"):
        raise LabelError(f"Unknown label type: {kind}; {what} must hold class labels")
    try:
        return np.unique(y, return_inverse=True)
    except TypeError:
        raise LabelError(f"{what} mixes label types that cannot be ordered") from None


def labels_to_names(
    y: Any, table: PredictionTable, classes: Sequence[Any] | np.ndarray | None, what: str = "y"
) -> np.ndarray:
    """Class names of the table for labels ``y``: values of ``classes`` (arrays), or the names themselves."""
    y = _check_y(y, len(table), what)
    names = np.asarray(table.classes, dtype=object)
    if classes is not None:
        lookup = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
        codes = np.array([lookup.get(v, -1) for v in y.tolist()], dtype=np.int64)
    else:
        lookup = {c: i for i, c in enumerate(table.classes)}
        codes = np.array([lookup.get(str(v), -1) for v in y.tolist()], dtype=np.int64)
    bad = codes < 0
    if bad.any():
        rows = np.flatnonzero(bad)
        raise LabelError(
            f"{what} has labels outside the classes {list(classes if classes is not None else names)}: "
            f"{sorted({str(v) for v in y[rows[:5]]})}",
            rows=rows,
        )
    return names[codes]


def with_labels(table: PredictionTable, names: np.ndarray) -> PredictionTable:
    """The table with its label column replaced."""
    meta = table.meta.copy()
    meta[LABEL] = pd.Series(names, dtype=object)
    return table.replace(meta=meta)


def group_codes(groups: Any, n: int, what: str = "groups") -> tuple[np.ndarray, list[Any]]:
    """``(codes, values)`` of a per-row group array (sorted values)."""
    g = np.asarray(groups)
    if g.ndim != 1 or len(g) != n:
        raise SchemaError(f"{what} must be a 1-d array with one value per row ({n}), got shape {g.shape}")
    if pd.isna(g).any():
        raise SchemaError(f"{what} has missing values", rows=np.flatnonzero(pd.isna(g)))
    codes, values = pd.factorize(pd.Series(g), sort=True)
    return codes.astype(np.int64), list(values)

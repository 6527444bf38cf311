"""The prediction table: the one schema every stacker, level1 and holdout file uses.

Schema (version 1), one parquet file, one row per image and view:

=============== ============ ========================================================
column          type         meaning
=============== ============ ========================================================
``id``          str or int   image id (required); all views of an image share it
``label``       str          true class name (optional; null = unknown)
``fold``        int          cross-validation fold (optional; null = not in any fold)
``manip``       int 0/1      manipulation flag (optional)
``manip_kind``  str          manipulation name, e.g. ``jpg70`` (optional; "" = none)
``view``        str          TTA view name, e.g. ``identity``, ``rot90`` (optional)
``<m>/<c>``     float        probability of class ``c`` under level-1 model ``m``
=============== ============ ========================================================

A row is identified by its *key*: ``id`` plus whichever of ``manip``,
``manip_kind`` and ``view`` are present. Rows sharing a key are refused.

The parquet schema metadata under the key ``stacker`` holds JSON
``{"schema_version": 1, "classes": [...], "models": [...]}``: the class order
and the model names.  Files without it (e.g. written by other tools) are read by
inferring both from the ``<model>/<class>`` column names, in column order.
Class names must not contain ``/``; model names may (the last ``/`` splits).

In memory a :class:`PredictionTable` holds the non-probability columns as a
pandas DataFrame (:attr:`PredictionTable.meta`) and the probabilities as one
``(n_rows, n_models, n_classes)`` float64 array (:attr:`PredictionTable.probs`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stacker.errors import (
    ConfigError,
    DuplicateKeyError,
    EmptyTableError,
    LabelError,
    ProbabilityError,
    SchemaError,
    TableError,
    TableReadError,
)
from stacker.files import atomic_path

__all__ = [
    "SCHEMA_VERSION",
    "METADATA_KEY",
    "ID",
    "LABEL",
    "FOLD",
    "MANIP",
    "MANIP_KIND",
    "VIEW",
    "META_COLUMNS",
    "SEP",
    "PredictionTable",
    "read_table",
    "write_table",
    "read_metadata",
    "prob_column",
    "DEFAULT_ATOL",
    "PROB_FLOOR",
]

SCHEMA_VERSION = 1
METADATA_KEY = b"stacker"
ID, LABEL, FOLD, MANIP, MANIP_KIND, VIEW = "id", "label", "fold", "manip", "manip_kind", "view"
META_COLUMNS = (ID, LABEL, FOLD, MANIP, MANIP_KIND, VIEW)
SEP = "/"
#: Default tolerance on ``|row sum - 1|`` per model: loose enough for float16/32 softmax outputs.
DEFAULT_ATOL = 1e-3
#: The one probability floor: wherever stacker takes the log of a probability (log loss, temperature
#: scaling, power means, model correlations) a smaller value is read as this (log = -34.5), as
#: scikit-learn's log loss does.  Two documented exceptions have their own purpose: the meta-models'
#: log features clip at ``FeatureSpec``'s 1e-7 (bounded inputs for the MLP and logistic members), and
#: the exact equalizer reads a zero as 1e-300 (worse than any positive probability, taken only when
#: the quotas force it).
PROB_FLOOR = 1e-15


def prob_column(model: str, cls: str) -> str:
    """Name of the column holding ``P(cls)`` under ``model``."""
    return f"{model}{SEP}{cls}"


#: What pandas may infer for a valid id column.
_ID_KINDS = ("string", "unicode", "integer", "mixed-integer", "floating", "mixed-integer-float", "empty")


def _first_rows(mask: Any) -> np.ndarray:
    return np.flatnonzero(mask)[:5]


class PredictionTable:
    """Validated level-1 (or level-2) class probabilities, one row per image and view.

    Build one with :meth:`from_frame`, :func:`read_table` or :meth:`from_arrays`;
    the constructor validates unless ``validate=False``.

    Parameters
    ----------
    meta : DataFrame
        The non-probability columns (``id`` and optional ``label``, ``fold``,
        ``manip``, ``manip_kind``, ``view``), one row per table row.
    probs : ndarray of shape (n_rows, n_models, n_classes)
        Probabilities.
    classes : sequence of str
        Class names, in column order.
    models : sequence of str
        Level-1 model names.
    source : str, optional
        Where the table came from, used in error messages.
    renormalize : bool, default False
        Divide each row by its sum instead of refusing rows that do not sum to 1.
    atol : float, default 1e-3
        Tolerance on ``|row sum - 1|``.
    validate : bool, default True
        Run the checks; internal code that already holds valid arrays may skip them.
    """

    __slots__ = ("meta", "probs", "classes", "models", "source")

    def __init__(
        self,
        meta: pd.DataFrame,
        probs: np.ndarray,
        classes: Sequence[str],
        models: Sequence[str],
        *,
        source: str | None = None,
        renormalize: bool = False,
        atol: float = DEFAULT_ATOL,
        validate: bool = True,
    ) -> None:
        self.meta = meta.reset_index(drop=True)
        self.probs = np.ascontiguousarray(probs, dtype=np.float64)
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)
        self.models: tuple[str, ...] = tuple(str(m) for m in models)
        self.source = source
        if validate:
            self._validate(renormalize=renormalize, atol=atol)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_frame(
        cls,
        frame: pd.DataFrame,
        *,
        classes: Sequence[str] | None = None,
        models: Sequence[str] | None = None,
        source: str | None = None,
        renormalize: bool = False,
        atol: float = DEFAULT_ATOL,
    ) -> PredictionTable:
        """Parse and validate a wide DataFrame in the table schema.

        ``classes`` and ``models`` (e.g. from the parquet metadata) fix the class
        order and the model set; when omitted they are inferred from the
        ``<model>/<class>`` columns in column order.
        """
        if len(frame) == 0:
            raise EmptyTableError("the table has no rows", path=source)
        cols = [str(c) for c in frame.columns]
        if len(set(cols)) != len(cols):
            dup = sorted({c for c in cols if cols.count(c) > 1})
            raise SchemaError(f"duplicate column names {dup}", path=source, column=dup[0])
        if ID not in cols:
            raise SchemaError(f"required column {ID!r} is missing (columns: {cols[:8]}...)", path=source, column=ID)
        prob_cols: dict[str, dict[str, str]] = {}  # model -> class -> column
        class_order: list[str] = []
        for c in cols:
            if SEP not in c:
                if c not in META_COLUMNS:
                    raise SchemaError(
                        f"unknown column {c!r}; allowed: {list(META_COLUMNS)} and '<model>/<class>'",
                        path=source,
                        column=c,
                    )
                continue
            model, klass = c.rsplit(SEP, 1)
            if not model or not klass:
                raise SchemaError(f"column {c!r} is not '<model>/<class>'", path=source, column=c)
            prob_cols.setdefault(model, {})[klass] = c
            if klass not in class_order:
                class_order.append(klass)
        if not prob_cols:
            raise SchemaError("no '<model>/<class>' probability columns", path=source)

        if classes is None:
            classes = class_order
        classes = [str(k) for k in classes]
        if len(set(classes)) != len(classes):
            raise SchemaError(f"class list has duplicates: {classes}", path=source)
        if len(classes) < 2:
            raise SchemaError(f"need at least 2 classes, got {classes}", path=source)
        found_models = list(prob_cols)
        if models is None:
            models = found_models
        models = [str(m) for m in models]
        missing_models = [m for m in models if m not in prob_cols]
        if missing_models:
            raise SchemaError(
                f"models {missing_models} are recorded in the metadata but have no columns",
                path=source,
                column=prob_column(missing_models[0], classes[0]),
            )
        extra_models = [m for m in found_models if m not in models]
        if extra_models:
            raise SchemaError(
                f"columns of models {extra_models} that the metadata does not list",
                path=source,
                column=next(iter(prob_cols[extra_models[0]].values())),
            )
        class_set = set(classes)
        for m in models:
            have = prob_cols[m]
            extra = [k for k in have if k not in class_set]
            if extra:
                raise SchemaError(
                    f"extra class column: class {extra[0]!r} of model {m!r} is not in the class set {classes}",
                    path=source,
                    column=have[extra[0]],
                )
            lacking = [k for k in classes if k not in have]
            if lacking:
                raise SchemaError(
                    f"model {m!r} is missing classes {lacking}",
                    path=source,
                    column=prob_column(m, lacking[0]),
                )
        names = [prob_cols[m][k] for m in models for k in classes]
        for name in names:
            if not (pd.api.types.is_numeric_dtype(frame[name]) and not pd.api.types.is_bool_dtype(frame[name])):
                raise SchemaError(
                    f"probability column has non-numeric dtype {frame[name].dtype}", path=source, column=name
                )
        values = frame[names].to_numpy(dtype=np.float64, na_value=np.nan)
        probs = values.reshape(len(frame), len(models), len(classes))
        meta = frame[[c for c in META_COLUMNS if c in frame.columns]].copy()
        return cls(meta, probs, classes, models, source=source, renormalize=renormalize, atol=atol, validate=True)

    @classmethod
    def from_arrays(
        cls,
        ids: Iterable[Any],
        probs: np.ndarray | dict[str, np.ndarray],
        classes: Sequence[str],
        *,
        models: Sequence[str] | None = None,
        labels: Iterable[Any] | None = None,
        folds: Iterable[Any] | None = None,
        manip: Iterable[Any] | None = None,
        manip_kind: Iterable[Any] | None = None,
        views: Iterable[Any] | None = None,
        source: str | None = None,
        renormalize: bool = False,
        atol: float = DEFAULT_ATOL,
    ) -> PredictionTable:
        """Build a table from arrays.

        ``probs`` is either ``{model: (n, K) array}`` or an ``(n, M, K)`` array with
        ``models`` given (an ``(n, K)`` array is one model named ``models[0]``).
        """
        if isinstance(probs, dict):
            models = list(probs)
            arr = np.stack([np.asarray(probs[m], dtype=np.float64) for m in models], axis=1)
        else:
            arr = np.asarray(probs, dtype=np.float64)
            if models is None:
                raise SchemaError("`models` is required when `probs` is an array", path=source)
            if arr.ndim == 2:
                arr = arr[:, None, :]
        meta = pd.DataFrame({ID: list(ids)})
        for name, values in ((LABEL, labels), (FOLD, folds), (MANIP, manip), (MANIP_KIND, manip_kind), (VIEW, views)):
            if values is not None:
                meta[name] = list(values)
        if len(meta) == 0:
            raise EmptyTableError("the table has no rows", path=source)
        if arr.ndim != 3 or arr.shape[0] != len(meta) or arr.shape[2] != len(classes):
            raise SchemaError(
                f"probs has shape {arr.shape}, expected ({len(meta)}, n_models, {len(classes)})", path=source
            )
        if len(models) != arr.shape[1]:
            raise SchemaError(f"{len(models)} model names for {arr.shape[1]} models", path=source)
        return cls(meta, arr, classes, models, source=source, renormalize=renormalize, atol=atol)

    # ---------------------------------------------------------------- validation
    def _ids_at(self, rows: np.ndarray) -> list[Any]:
        return self.meta[ID].iloc[rows].tolist()

    def _validate(self, *, renormalize: bool, atol: float) -> None:
        src = self.source
        n = len(self.meta)
        if n == 0:
            raise EmptyTableError("the table has no rows", path=src)
        if self.probs.ndim != 3 or self.probs.shape != (n, len(self.models), len(self.classes)):
            raise SchemaError(
                f"probabilities have shape {self.probs.shape}, expected ({n}, {len(self.models)}, {len(self.classes)})",
                path=src,
            )
        if len(set(self.classes)) != len(self.classes):
            raise SchemaError(f"class list has duplicates: {list(self.classes)}", path=src)
        if len(set(self.models)) != len(self.models):
            raise SchemaError(f"model list has duplicates: {list(self.models)}", path=src)
        bad_cls = [c for c in self.classes if SEP in c or not c]
        if bad_cls:
            raise SchemaError(f"class names must be non-empty and contain no '/': {bad_cls}", path=src)
        unknown = [c for c in self.meta.columns if c not in META_COLUMNS]
        if unknown:
            raise SchemaError(f"unknown column {unknown[0]!r}", path=src, column=str(unknown[0]))
        if ID not in self.meta.columns:
            raise SchemaError(f"required column {ID!r} is missing", path=src, column=ID)
        null_id = self.meta[ID].isna().to_numpy()
        if null_id.any():
            raise SchemaError("null image ids", path=src, column=ID, rows=_first_rows(null_id))
        ids = self.meta[ID]
        kind = pd.api.types.infer_dtype(ids, skipna=False)
        if kind not in _ID_KINDS:  # lists, dicts, bytes, booleans: not hashable or not an image name
            ok = ids.map(lambda v: isinstance(v, (str, int, float, np.number)) and not isinstance(v, bool))
            rows = np.flatnonzero(~ok.to_numpy())
            found = type(ids.iloc[rows[0]]).__name__ if len(rows) else kind
            raise SchemaError(
                f"image ids must be strings or integers, found {found}",
                path=src,
                column=ID,
                rows=rows if len(rows) else None,
            )

        self._validate_probs(renormalize=renormalize, atol=atol)

        meta = self.meta
        if LABEL in meta.columns:
            lab = meta[LABEL]
            known = lab.notna().to_numpy()
            as_str = lab.astype(object).where(lab.notna(), None)
            strs = np.array([str(v) if v is not None else "" for v in as_str], dtype=object)
            outside = known & ~np.isin(strs, np.array(self.classes, dtype=object))
            if outside.any():
                rows = _first_rows(outside)
                raise LabelError(
                    f"labels outside the class set {list(self.classes)}: {sorted(set(strs[outside]))[:5]}",
                    path=src,
                    column=LABEL,
                    rows=rows,
                    ids=self._ids_at(rows),
                )
            meta[LABEL] = pd.Series([v if k else None for v, k in zip(strs, known)], dtype=object)
        if MANIP in meta.columns:
            m = pd.to_numeric(meta[MANIP], errors="coerce")
            bad = ~m.isin([0, 1]).to_numpy()
            if bad.any():
                rows = _first_rows(bad)
                raise SchemaError(
                    "manipulation flag must be 0 or 1", path=src, column=MANIP, rows=rows, ids=self._ids_at(rows)
                )
            meta[MANIP] = m.astype(np.int8)
        if MANIP_KIND in meta.columns:
            meta[MANIP_KIND] = meta[MANIP_KIND].fillna("").astype(str)
        if VIEW in meta.columns:
            if meta[VIEW].isna().any():
                rows = _first_rows(meta[VIEW].isna().to_numpy())
                raise SchemaError("null view names", path=src, column=VIEW, rows=rows, ids=self._ids_at(rows))
            meta[VIEW] = meta[VIEW].astype(str)
        if FOLD in meta.columns:
            f = pd.to_numeric(meta[FOLD], errors="coerce")
            out_of_range = ~np.isfinite(f.fillna(0).to_numpy(dtype=np.float64)) | (f.fillna(0) > 2**31 - 1).to_numpy()
            bad = (meta[FOLD].notna() & (f.isna() | (f != np.round(f)) | (f < 0))).to_numpy() | out_of_range
            if bad.any():
                rows = _first_rows(bad)
                raise SchemaError(
                    "fold must be a non-negative integer or null",
                    path=src,
                    column=FOLD,
                    rows=rows,
                    ids=self._ids_at(rows),
                )
            meta[FOLD] = f.astype("Int64")
        keys = self.key_columns
        dup = meta.duplicated(subset=keys, keep=False).to_numpy()
        if dup.any():
            rows = _first_rows(dup)
            raise DuplicateKeyError(
                f"duplicate keys on {keys}: {meta.loc[rows[:2], keys].to_dict('records')}",
                path=src,
                column=ID,
                rows=rows,
                ids=self._ids_at(rows),
            )

    def _validate_probs(self, *, renormalize: bool, atol: float) -> None:
        """Finite, non-negative, rows summing to 1 within ``atol`` (or renormalised), per model."""
        src = self.source
        if not isinstance(atol, (int, float)) or not np.isfinite(atol) or atol < 0:
            raise ConfigError(f"the row-sum tolerance atol must be a finite number >= 0, got {atol!r}")
        if renormalize:
            self.probs = self.probs.copy()
        p = self.probs
        for mi, model in enumerate(self.models):
            block = p[:, mi, :]
            sums = block.sum(axis=1)
            # One pass for the minimum and one for the sums decide the common case (NaN and inf make
            # the sum non-finite); the element-wise scans below run only to name the offenders.
            if (
                len(block)
                and block.min() >= 0
                and np.isfinite(sums).all()
                and (renormalize and (sums > 0).all() or not renormalize and (np.abs(sums - 1.0) <= atol).all())
            ):
                if renormalize:
                    p[:, mi, :] = block / sums[:, None]
                continue
            finite = np.isfinite(block)
            if not finite.all():
                r, k = np.argwhere(~finite)[0]
                rows = _first_rows(~finite.all(axis=1))
                raise ProbabilityError(
                    "NaN or infinite probabilities",
                    path=src,
                    column=prob_column(model, self.classes[k]),
                    rows=rows,
                    ids=self._ids_at(rows),
                )
            neg = block < 0
            if neg.any():
                r, k = np.argwhere(neg)[0]
                rows = _first_rows(neg.any(axis=1))
                raise ProbabilityError(
                    "negative probabilities",
                    path=src,
                    column=prob_column(model, self.classes[k]),
                    rows=rows,
                    ids=self._ids_at(rows),
                )
            if renormalize:
                zero = sums <= 0
                if zero.any():
                    rows = _first_rows(zero)
                    raise ProbabilityError(
                        "rows of all-zero probabilities cannot be renormalised",
                        path=src,
                        column=f"{model}{SEP}*",
                        rows=rows,
                        ids=self._ids_at(rows),
                    )
                huge = ~np.isfinite(sums)  # finite values whose sum overflows (1e308s): scale by the row max first
                if huge.any():
                    block[huge] = block[huge] / block[huge].max(axis=1, keepdims=True)
                    sums = block.sum(axis=1)
                p[:, mi, :] = block / sums[:, None]
            else:
                off = np.abs(sums - 1.0) > atol
                if off.any():
                    rows = _first_rows(off)
                    raise ProbabilityError(
                        f"rows do not sum to 1 within {atol:g} (sums {np.round(sums[rows], 6).tolist()}); "
                        "pass renormalize=True (CLI: --renormalize) to rescale them",
                        path=src,
                        column=f"{model}{SEP}*",
                        rows=rows,
                        ids=self._ids_at(rows),
                    )

    # ---------------------------------------------------------------- accessors
    def __len__(self) -> int:
        return len(self.meta)

    def __repr__(self) -> str:
        return (
            f"PredictionTable(rows={len(self)}, models={list(self.models)}, "
            f"classes={len(self.classes)}, columns={list(self.meta.columns)})"
        )

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def n_models(self) -> int:
        return len(self.models)

    @property
    def key_columns(self) -> list[str]:
        """Columns that identify a row: ``id`` plus any of ``manip``, ``manip_kind``, ``view``."""
        return [c for c in (ID, MANIP, MANIP_KIND, VIEW) if c in self.meta.columns]

    @property
    def sample_columns(self) -> list[str]:
        """Columns that identify a sample (an image under one manipulation): the key less ``view``."""
        return [c for c in self.key_columns if c != VIEW]

    @property
    def ids(self) -> np.ndarray:
        return self.meta[ID].to_numpy()

    @property
    def has_labels(self) -> bool:
        return LABEL in self.meta.columns and bool(self.meta[LABEL].notna().any())

    @property
    def labels(self) -> np.ndarray | None:
        """Class names per row (None where unknown), or None without a label column."""
        return self.meta[LABEL].to_numpy() if LABEL in self.meta.columns else None

    @property
    def y(self) -> np.ndarray:
        """Integer class codes per row (index into :attr:`classes`); -1 where unknown."""
        if LABEL not in self.meta.columns:
            raise LabelError("the table has no label column", path=self.source, column=LABEL)
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(v, -1) if v is not None else -1 for v in self.meta[LABEL]], dtype=np.int64)

    @property
    def manip(self) -> np.ndarray | None:
        return self.meta[MANIP].to_numpy() if MANIP in self.meta.columns else None

    @property
    def folds(self) -> np.ndarray | None:
        return self.meta[FOLD].to_numpy() if FOLD in self.meta.columns else None

    @property
    def views(self) -> np.ndarray | None:
        return self.meta[VIEW].to_numpy() if VIEW in self.meta.columns else None

    def proba(self, model: str | int) -> np.ndarray:
        """``(n_rows, n_classes)`` probabilities of one model (by name or position)."""
        if isinstance(model, str):
            if model not in self.models:
                raise SchemaError(f"no model {model!r}; models: {list(self.models)}", path=self.source)
            model = self.models.index(model)
        return self.probs[:, model, :]

    def columns(self) -> list[str]:
        """Probability column names in storage order."""
        return [prob_column(m, c) for m in self.models for c in self.classes]

    # ------------------------------------------------------------ derivations
    def replace(
        self,
        *,
        meta: pd.DataFrame | None = None,
        probs: np.ndarray | None = None,
        models: Sequence[str] | None = None,
        classes: Sequence[str] | None = None,
        source: str | None = None,
        validate: bool = False,
    ) -> PredictionTable:
        """A new table with some parts replaced (unvalidated unless asked)."""
        return PredictionTable(
            self.meta if meta is None else meta,
            self.probs if probs is None else probs,
            self.classes if classes is None else classes,
            self.models if models is None else models,
            source=self.source if source is None else source,
            validate=validate,
        )

    def take(self, rows: np.ndarray | Sequence[int]) -> PredictionTable:
        """Rows by position or boolean mask."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return self.replace(meta=self.meta.iloc[rows].reset_index(drop=True), probs=self.probs[rows])

    def select_models(self, models: Sequence[str]) -> PredictionTable:
        """Only the given models, in the given order."""
        idx = [self.models.index(m) if m in self.models else -1 for m in models]
        if -1 in idx:
            missing = [m for m, i in zip(models, idx) if i < 0]
            raise SchemaError(f"no models {missing}; models: {list(self.models)}", path=self.source)
        return self.replace(probs=self.probs[:, idx, :], models=list(models))

    def to_frame(self) -> pd.DataFrame:
        """The wide DataFrame in the schema: meta columns then ``<model>/<class>``."""
        wide = pd.DataFrame(self.probs.reshape(len(self), -1), columns=self.columns(), index=self.meta.index)
        return pd.concat([self.meta, wide], axis=1)

    def metadata(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "classes": list(self.classes), "models": list(self.models)}


# -------------------------------------------------------------------- parquet I/O
def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``stacker`` metadata of a parquet file, or None if it has none."""
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except FileNotFoundError:
        raise TableReadError("no such file", path=str(path)) from None
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for garbage
        raise TableReadError(f"not a readable parquet file ({exc})", path=str(path)) from None
    return _parse_metadata(schema.metadata, str(path))


def _parse_metadata(raw: dict[bytes, bytes] | None, source: str) -> dict[str, Any] | None:
    if not raw or METADATA_KEY not in raw:
        return None
    try:
        meta = json.loads(raw[METADATA_KEY])
    except (ValueError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise TableReadError(f"the 'stacker' metadata is not valid JSON ({reason})", path=source) from None
    if not isinstance(meta, dict):
        raise TableReadError(f"the 'stacker' metadata is not a JSON object (got {type(meta).__name__})", path=source)
    version = meta.get("schema_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION or version < 1:
        raise TableReadError(
            f"schema version {version!r} is not supported (this stacker reads versions 1..{SCHEMA_VERSION})",
            path=source,
        )
    for key in ("classes", "models"):
        if not isinstance(meta.get(key), list) or not all(isinstance(v, str) for v in meta[key]):
            raise TableReadError(f"the 'stacker' metadata lacks a {key!r} list of names", path=source)
    return meta


#: File kinds read_table knows, by their first bytes.
_MAGIC = {b"PAR1": "parquet", b"PK\x03\x04": "npz", b"\x93NUMPY": "npy"}
_CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.xz", ".csv.zst")
#: Arrays a .npz table may hold (``probs`` is required).
NPZ_KEYS = ("probs", "classes", "models", "ids", "labels", "folds", "manip", "manip_kind", "views")


def _file_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(_CSV_SUFFIXES):
        return "csv"
    with open(path, "rb") as f:
        head = f.read(6)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    return "parquet"  # and let pyarrow say what is wrong with it


def read_table(
    path: str | os.PathLike[str],
    *,
    renormalize: bool = False,
    atol: float = DEFAULT_ATOL,
    classes: Sequence[str] | None = None,
    models: Sequence[str] | None = None,
) -> PredictionTable:
    """Read and validate a prediction table from parquet, CSV, ``.npz`` or ``.npy``.

    * parquet (the native format, :func:`write_table`): class order and models from its metadata;
    * CSV (``*.csv``, compressed ``*.csv.gz`` ...): the same columns; classes and models in column order;
    * ``.npz``: arrays ``probs`` (``(N, K)`` or ``(N, M, K)``), ``classes`` and optionally ``models``,
      ``ids`` (default ``0..N-1``), ``labels`` (``""`` = unknown), ``folds`` (``-1`` = none), ``manip``,
      ``manip_kind``, ``views``; strings as fixed-width NumPy strings (pickled objects are never loaded);
    * ``.npy``: one ``probs`` array; ``classes`` (and for 3-d, ``models``) must be given here.

    Every kind is validated by the same rules, with the same errors.

    Parameters
    ----------
    path : path-like
        The file; its kind is recognised by its first bytes (CSV by its suffix).
    renormalize : bool, default False
        Rescale rows that do not sum to 1 instead of refusing them.
    atol : float, default 1e-3
        Tolerance on row sums.
    classes, models : sequence of str, optional
        Class and model names of a ``.npy`` file (or instead of a ``.npz`` file's).

    Raises
    ------
    TableReadError
        Missing, unreadable or truncated file.
    TableError
        Any schema or value problem; the message names the file, column and rows.
    """
    source = str(path)
    p = Path(path)
    if not p.is_file():
        raise TableReadError("no such file" if not p.exists() else "not a file", path=source)
    kind = _file_kind(p)
    if kind == "csv":
        return _read_csv(p, source, renormalize, atol)
    if kind in ("npz", "npy"):
        return _read_numpy(p, kind, source, renormalize, atol, classes, models)
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(path)
    except Exception as exc:
        raise TableReadError(f"not a readable parquet file, or truncated ({exc})", path=source) from None
    meta = _parse_metadata(arrow.schema.metadata, source)
    frame = _to_pandas(arrow, source)
    return PredictionTable.from_frame(
        frame,
        classes=meta["classes"] if meta else None,
        models=meta["models"] if meta else None,
        source=source,
        renormalize=renormalize,
        atol=atol,
    )


def _to_pandas(arrow: Any, source: str) -> pd.DataFrame:
    """The arrow table as a DataFrame; pandas' own metadata (index, dtypes) is only a hint, so a malformed
    one is dropped rather than trusted, and undecodable strings are a typed error."""
    import pyarrow as pa

    for field in arrow.schema:
        if pa.types.is_nested(field.type) or pa.types.is_dictionary(field.type) and field.name == ID:
            raise SchemaError(
                f"column of type {field.type}: values must be numbers or strings", path=source, column=field.name
            )
    try:
        return arrow.to_pandas()
    except (pa.ArrowException, ValueError, TypeError, KeyError, IndexError, RecursionError):
        pass
    try:
        return arrow.replace_schema_metadata(None).to_pandas()
    except (pa.ArrowException, ValueError, TypeError, UnicodeDecodeError) as exc:
        raise TableReadError(f"columns cannot be decoded ({exc})", path=source) from None


_INT_ID = r"-?(0|[1-9][0-9]{0,17})"


def _read_csv(path: Path, source: str, renormalize: bool, atol: float) -> PredictionTable:
    import lzma
    import re
    import zlib

    try:
        header = pd.read_csv(path, nrows=0)
        cols = [str(c) for c in header.columns]
        probs = [c for c in cols if SEP in c]
        na = {c: ([""] if c not in probs else ["", "nan", "NaN", "NA", "null"]) for c in cols}
        frame = pd.read_csv(path, dtype={c: str for c in cols if c not in probs}, keep_default_na=False, na_values=na)
    except ImportError as exc:  # a compression codec pandas needs (zstandard) is not installed
        raise TableReadError(f"cannot decompress this CSV: {exc}", path=source) from None
    except (
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        UnicodeDecodeError,
        ValueError,
        OSError,
        EOFError,
        lzma.LZMAError,
        zlib.error,
    ) as exc:
        raise TableReadError(
            f"not a readable CSV file ({str(exc).splitlines()[0] if str(exc) else exc!r})", path=source
        ) from None
    if ID in frame.columns:
        ids = frame[ID]
        # Integer ids stay integers (as parquet keeps them); "007" and names stay strings.
        if ids.notna().all() and len(ids) and ids.map(lambda v: re.fullmatch(_INT_ID, v) is not None).all():
            frame[ID] = ids.astype(np.int64)
    return PredictionTable.from_frame(frame, source=source, renormalize=renormalize, atol=atol)


def _read_numpy(
    path: Path,
    kind: str,
    source: str,
    renormalize: bool,
    atol: float,
    classes: Sequence[str] | None,
    models: Sequence[str] | None,
) -> PredictionTable:
    import zipfile

    try:
        loaded = np.load(path, allow_pickle=False)
        if kind == "npz":
            with loaded:
                arrays = {k: loaded[k] for k in loaded.files}
        else:
            arrays = {"probs": loaded}
    except ValueError as exc:
        reason = (
            (
                "it holds Python objects, which stacker never unpickles; save strings as NumPy strings "
                "(np.array(names, dtype=str))"
            )
            if "pickle" in str(exc)
            else str(exc)
        )
        raise TableReadError(f"not a readable {kind} file: {reason}", path=source) from None
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise TableReadError(f"not a readable {kind} file, or truncated ({exc})", path=source) from None
    except MemoryError:
        raise TableReadError(f"an array of this {kind} file claims a shape too large to load", path=source) from None
    odd = [k for k, v in arrays.items() if not isinstance(v, np.ndarray)]
    if odd:
        raise TableReadError(f"{odd[0]!r} in this {kind} file is not a NumPy array", path=source)
    unknown = sorted(set(arrays) - set(NPZ_KEYS))
    if unknown:
        raise SchemaError(
            f"unknown arrays {unknown}; a .npz table holds {list(NPZ_KEYS)}", path=source, column=unknown[0]
        )
    if "probs" not in arrays:
        raise SchemaError("no 'probs' array", path=source, column="probs")
    probs = arrays["probs"]
    if probs.dtype.kind not in "biuf" or probs.ndim not in (2, 3):
        raise SchemaError(
            f"'probs' must be a 2-d or 3-d numeric array, got {probs.dtype} {probs.shape}", path=source, column="probs"
        )

    def names(key: str, given: Sequence[str] | None, default: list[str] | None) -> list[str]:
        if given is not None:
            return [str(v) for v in given]
        if key in arrays:
            if arrays[key].ndim != 1:
                raise SchemaError(f"'{key}' must be a 1-d array of names", path=source, column=key)
            return [str(v) for v in arrays[key].tolist()]
        if default is None:
            raise SchemaError(
                f"no class names: a {kind} file needs {'a classes array' if kind == 'npz' else ''}"
                f"{' or ' if kind == 'npz' else ''}read_table(path, classes=[...])",
                path=source,
                column=key,
            )
        return default

    m = 1 if probs.ndim == 2 else probs.shape[1]
    class_names = names("classes", classes, None)
    model_names = names("models", models, [path.stem] if m == 1 else [str(i) for i in range(m)])
    n = len(probs)

    def column(key: str) -> np.ndarray | None:
        if key not in arrays:
            return None
        v = arrays[key]
        if v.ndim != 1 or len(v) != n:
            raise SchemaError(
                f"'{key}' must be a 1-d array of {n} values, got shape {v.shape}", path=source, column=key
            )
        return v

    ids = column("ids")
    raw_labels = column("labels")
    labels = None if raw_labels is None else [None if str(v) == "" else str(v) for v in raw_labels.tolist()]
    folds = column("folds")
    if folds is not None:
        folds = (
            pd.array([None if f < 0 else int(f) for f in folds.tolist()], dtype="Int64")
            if folds.dtype.kind in "iu"
            else folds
        )
    return PredictionTable.from_arrays(
        ids=np.arange(n) if ids is None else ids.tolist(),
        probs=probs,
        classes=class_names,
        models=model_names,
        labels=labels,
        folds=folds,
        manip=column("manip"),
        manip_kind=None if column("manip_kind") is None else [str(v) for v in arrays["manip_kind"].tolist()],
        views=None if column("views") is None else [str(v) for v in arrays["views"].tolist()],
        source=source,
        renormalize=renormalize,
        atol=atol,
    )


def write_table(
    table: PredictionTable,
    path: str | os.PathLike[str],
    *,
    dtype: str = "float64",
    extra_metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a table to parquet (CSV when the name ends in ``.csv``) atomically (temporary file, then rename).

    ``dtype="float32"`` halves the file; probabilities are then exact to ~1e-7.  A CSV
    keeps every float64 exactly (shortest round-trip text) but no metadata: the class
    and model order are its column order, which :func:`read_table` reads back.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    # One rule for reading and writing: what read_table would refuse is never written.
    try:
        PredictionTable(table.meta, table.probs, table.classes, table.models, source=str(path))
    except TableError as exc:
        raise type(exc)(
            f"not written, the reader would refuse it: {exc.reason}",
            path=str(path),
            column=exc.column,
            rows=exc.rows,
            ids=exc.ids,
        ) from None
    frame = table.to_frame()
    if dtype != "float64":
        cols = table.columns()
        frame[cols] = frame[cols].astype(dtype)
    target = Path(path)
    if target.name.lower().endswith(_CSV_SUFFIXES):
        with atomic_path(target) as tmp:
            codec = {".gz": "gzip", ".bz2": "bz2", ".xz": "xz", ".zst": "zstd"}.get(target.suffix.lower())
            frame.to_csv(tmp, index=False, compression=codec)
        return target
    arrow = pa.Table.from_pandas(frame, preserve_index=False)
    info = table.metadata()
    if extra_metadata:
        info["extra"] = extra_metadata
    merged = dict(arrow.schema.metadata or {})
    merged[METADATA_KEY] = json.dumps(info).encode()
    arrow = arrow.replace_schema_metadata(merged)
    target = Path(path)
    with atomic_path(target) as tmp:
        pq.write_table(arrow, tmp)
    return target

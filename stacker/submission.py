"""The submission file: one row per image id with its class, as Kaggle competitions take it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stacker.errors import ConfigError
from stacker.files import atomic_path
from stacker.table import ID, VIEW, PredictionTable

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["parse_columns", "submission_frame", "write_frame", "write_submission"]


def parse_columns(text: str) -> tuple[str, str]:
    """``"id,class"`` -> ``("id", "class")``: the header of the two columns."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise ConfigError(f"submission columns must be two different names 'ID,CLASS', got {text!r}")
    return parts[0], parts[1]


def submission_frame(
    table: PredictionTable,
    assigned: np.ndarray,
    *,
    columns: tuple[str, str] = ("id", "class"),
    source: str | None = None,
) -> pd.DataFrame:
    """The ``id,class`` (``columns``) frame with the class name of ``assigned[i]`` for row i, checked.

    Refused (:class:`~stacker.errors.ConfigError`) when an id has several rows (TTA views or
    manipulated variants): a submission has one answer per id.  Commands build it before they
    write anything, so a refused submission leaves no other output behind either.
    """
    import pandas as pd

    where = source or table.source or "the table"
    if VIEW in table.meta.columns and table.meta[VIEW].nunique() > 1:
        raise ConfigError(
            f"{where} has several views per image; aggregate them first (stacker aggregate TABLE -p 0 -o OUT, "
            "or fit with stacker fit --tta-power P)"
        )
    ids = table.meta[ID].astype(str)
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise ConfigError(
            f"{where}: ids {ids[dup].head(3).tolist()} appear on several rows (e.g. manipulated and "
            "unaltered variants); a submission needs one row per id"
        )
    names = np.asarray(table.classes, dtype=object)[np.asarray(assigned, dtype=np.int64)]
    return pd.DataFrame({columns[0]: ids.to_numpy(), columns[1]: names})


def write_frame(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a :func:`submission_frame` to ``path`` atomically."""
    target = Path(path)
    with atomic_path(target) as tmp:
        frame.to_csv(tmp, index=False)
    return target


def write_submission(
    table: PredictionTable,
    assigned: np.ndarray,
    path: str | os.PathLike[str],
    *,
    columns: tuple[str, str] = ("id", "class"),
    source: str | None = None,
) -> Path:
    """:func:`submission_frame`, written atomically to ``path``."""
    return write_frame(submission_frame(table, assigned, columns=columns, source=source), path)

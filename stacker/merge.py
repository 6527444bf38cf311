"""Merge per-model prediction tables written by separate level-1 runs into one wide table."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from stacker.errors import MergeError
from stacker.table import ID, PredictionTable, read_table

__all__ = ["merge_tables"]


def _describe(t: PredictionTable, i: int) -> str:
    return t.source or f"table #{i}"


def merge_tables(
    tables: Sequence[PredictionTable | str | os.PathLike[str]],
    *,
    renormalize: bool = False,
) -> PredictionTable:
    """Join tables that hold different models for the same rows.

    Rows are aligned on the key (``id`` plus ``manip``/``manip_kind``/``view``
    where present); the result keeps the first table's row and class order.

    Raises
    ------
    MergeError
        Different key columns or class sets, a model present in two tables, a
        row present in one table but not another, or meta columns (``label``,
        ``fold``, ...) that disagree; the message names the file and the rows.
    """
    loaded = [t if isinstance(t, PredictionTable) else read_table(t, renormalize=renormalize) for t in tables]
    if not loaded:
        raise MergeError("nothing to merge")
    base = loaded[0]
    keys = base.key_columns
    classes = list(base.classes)
    seen_models = {m: _describe(base, 0) for m in base.models}
    base_index = pd.MultiIndex.from_frame(base.meta[keys].astype(object))
    meta = base.meta.copy()
    blocks = [base.probs]
    models = list(base.models)
    for i, t in enumerate(loaded[1:], start=1):
        name = _describe(t, i)
        if set(t.classes) != set(classes):
            raise MergeError(
                f"class set differs from {_describe(base, 0)!r}: only here {sorted(set(t.classes) - set(classes))}, "
                f"missing here {sorted(set(classes) - set(t.classes))}",
                path=name,
            )
        if t.key_columns != keys:
            raise MergeError(f"key columns {t.key_columns} differ from {keys} of {_describe(base, 0)!r}", path=name)
        for m in t.models:
            if m in seen_models:
                raise MergeError(f"model {m!r} is also in {seen_models[m]!r}", path=name)
            seen_models[m] = name
        index = pd.MultiIndex.from_frame(t.meta[keys].astype(object))
        pos = index.get_indexer(base_index)
        if (pos < 0).any():
            rows = np.flatnonzero(pos < 0)
            raise MergeError(
                f"{int((pos < 0).sum())} rows of {_describe(base, 0)!r} are missing here, "
                f"e.g. {base.meta.loc[rows[:3], keys].to_dict('records')}",
                path=name,
                column=ID,
                rows=rows,
                ids=base.meta[ID].iloc[rows].tolist(),
            )
        if len(t) != len(base):
            extra = np.setdiff1d(np.arange(len(t)), pos)
            raise MergeError(
                f"{len(extra)} rows are not in {_describe(base, 0)!r}, "
                f"e.g. {t.meta.loc[extra[:3], keys].to_dict('records')}",
                path=name,
                column=ID,
                rows=extra,
                ids=t.meta[ID].iloc[extra].tolist(),
            )
        aligned = t.meta.iloc[pos].reset_index(drop=True)
        for col in aligned.columns:
            if col in keys:
                continue
            if col not in meta.columns:
                meta[col] = aligned[col]
                continue
            a, b = meta[col].astype(object), aligned[col].astype(object)
            differ = ~((a == b) | (a.isna() & b.isna())).to_numpy()
            if differ.any():
                rows = np.flatnonzero(differ)
                raise MergeError(
                    f"column {col!r} disagrees with {_describe(base, 0)!r}",
                    path=name,
                    column=col,
                    rows=rows,
                    ids=meta[ID].iloc[rows].tolist(),
                )
        order = [t.classes.index(c) for c in classes]
        blocks.append(t.probs[pos][:, :, order])
        models.extend(t.models)
    probs = np.concatenate(blocks, axis=1)
    return PredictionTable(meta, probs, classes, models, source=None, validate=True)

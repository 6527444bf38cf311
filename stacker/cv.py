"""Cross-validation folds for the Blend: stratified by class, grouped by image id.

All views and manipulations of one image share its id and land in the same
fold, so no out-of-fold prediction is made by a model that saw another version
of the same picture.  An image has one label, so stratifying the *images* and
mapping them back to rows gives a grouped stratified split exactly; this is
also much faster than :class:`sklearn.model_selection.StratifiedGroupKFold` on
tens of thousands of ids.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stacker.errors import ConfigError, LabelError

__all__ = ["grouped_folds", "inner_split"]


def _groups_codes(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    codes, uniques = pd.factorize(pd.Series(groups, dtype=object), sort=False)
    return codes.astype(np.int64), np.asarray(uniques, dtype=object)


def grouped_folds(
    y: np.ndarray,
    groups: np.ndarray,
    n_folds: int,
    seed: int = 0,
    *,
    classes: list[str] | tuple[str, ...] | None = None,
) -> np.ndarray:
    """Fold number (0..n_folds-1) of each row: stratified by ``y``, grouped by ``groups``.

    Raises
    ------
    ConfigError
        ``n_folds < 2``.
    LabelError
        An id carries two labels, only one class is present, or a class has
        fewer images than folds.
    """
    from sklearn.model_selection import StratifiedKFold

    n_folds = int(n_folds)
    if n_folds < 2:
        raise ConfigError(f"n_folds must be at least 2, got {n_folds}")
    y = np.asarray(y)
    codes, uniques = _groups_codes(np.asarray(groups))
    n_groups = len(uniques)
    group_y = np.full(n_groups, -1, dtype=np.int64)
    group_y[codes] = y
    if not np.array_equal(group_y[codes], y):
        bad = np.flatnonzero(group_y[codes] != y)
        raise LabelError(
            f"image id {uniques[codes[bad[0]]]!r} has rows with different labels; all views and "
            "manipulations of an image must share its label",
            column="label",
            rows=bad,
        )
    name = (lambda k: classes[k]) if classes is not None else (lambda k: k)
    present, counts = np.unique(group_y, return_counts=True)
    if len(present) < 2:
        raise LabelError(
            f"only one class ({name(present[0])!r}) has labels; a classifier needs two or more", column="label"
        )
    few = present[counts < n_folds]
    if len(few):
        detail = ", ".join(f"{name(k)!r}: {c}" for k, c in zip(present, counts) if c < n_folds)
        raise LabelError(
            f"classes with fewer images than folds ({n_folds}): {detail}; lower n_folds or add rows",
            column="label",
        )
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=int(seed) % (2**32))
    group_fold = np.empty(n_groups, dtype=np.int64)
    for k, (_, test) in enumerate(skf.split(np.zeros(n_groups), group_y)):
        group_fold[test] = k
    return group_fold[codes]


def inner_split(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions ``(train, valid)`` holding out about ``fraction`` of the groups, for early stopping.

    Groups are drawn per class (stratified) when every class has enough of them,
    so each class keeps rows on both sides; with ``groups=None`` each row is its
    own group.
    """
    y = np.asarray(y)
    n = len(y)
    codes = np.arange(n) if groups is None else _groups_codes(np.asarray(groups))[0]
    rng = np.random.default_rng(seed)
    n_groups = int(codes.max()) + 1 if n else 0
    group_y = np.zeros(n_groups, dtype=np.int64)
    group_y[codes] = np.unique(y, return_inverse=True)[1]
    valid_group = np.zeros(n_groups, dtype=bool)
    for k in np.unique(group_y):
        members = np.flatnonzero(group_y == k)
        take = int(round(fraction * len(members)))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
            valid_group[rng.choice(members, size=take, replace=False)] = True
    valid = valid_group[codes]
    if not valid.any() or valid.all():
        # Too few groups to stratify: hold out a plain random share of the groups.
        perm = rng.permutation(n_groups)
        valid_group[:] = False
        valid_group[perm[: max(1, int(round(fraction * n_groups)))]] = True
        valid = valid_group[codes]
    return np.flatnonzero(~valid), np.flatnonzero(valid)

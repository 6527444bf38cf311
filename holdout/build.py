"""Build a balanced holdout list with folds from the filtered photos (and optionally training images).

The list is a manifest for ``level1 predict``, not a prediction table: one row
per image with

============== ====== ============================================================
``path``       str    the image file
``label``      str    its class
``fold``       int    0..n_folds-1, balanced within each class
``source``     str    ``external`` (from the filter) or ``train`` (mixed in)
``manip``      int    1 when the image is to be manipulated (only with a manipulation fraction)
``manip_kind`` str    the manipulation name, ``""`` for none (same condition)
============== ====== ============================================================
"""

from __future__ import annotations

import numpy as np

from holdout.errors import ManifestError
from holdout.manipulate import random_manipulation

__all__ = ["build_holdout", "HOLDOUT_COLUMNS"]

HOLDOUT_COLUMNS: tuple[str, ...] = ("path", "label", "fold", "source")


def _pool(df, name: str):
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise ManifestError(f"{name} lacks column(s) {missing}")
    if "kept" in df.columns:
        df = df[df["kept"].astype(bool)]
    df = df[df["label"].notna()]
    return df[["path", "label"]].astype(str).drop_duplicates("path").sort_values("path", kind="stable")


def _take(pool, n: int, rng: np.random.Generator, classes, name: str, allow_short: bool):
    picked, short = {}, {}
    for c in classes:
        paths = pool.loc[pool["label"] == c, "path"].to_numpy()
        order = rng.permutation(len(paths))
        if len(paths) < n:
            short[c] = len(paths)
        picked[c] = list(paths[order[:n]])
    if short and not allow_short:
        detail = ", ".join(f"{c}: {k}" for c, k in short.items())
        raise ManifestError(
            f"{name}: fewer than {n} images for {len(short)} class(es) ({detail}); "
            "lower the count (--per-class, --train-per-class) or accept a short holdout (--allow-short)"
        )
    return picked


def build_holdout(
    kept,
    per_class: int,
    *,
    seed: int = 0,
    n_folds: int = 5,
    classes: list[str] | None = None,
    train=None,
    train_per_class: int = 0,
    manip_fraction: float = 0.0,
    allow_short: bool = False,
):
    """Sample ``per_class`` external photos per class, optionally mix in training images, assign folds.

    Parameters
    ----------
    kept : pandas.DataFrame
        Output of :func:`holdout.filter.filter_manifest` (rows with ``kept`` are used), or any
        frame with ``path`` and ``label``.
    per_class : int
        External images per class.
    seed : int, default 0
        Seeds the sampling, the folds and the manipulations: the same inputs and seed give
        the same list.
    n_folds : int, default 5
        Folds, balanced within each class.
    classes : list of str, optional
        Classes to include (default: every class in ``kept``, sorted).
    train : pandas.DataFrame, optional
        Training images (``path``, ``label``) to mix in, ``train_per_class`` per class.
    manip_fraction : float, default 0
        Fraction of rows (drawn independently) to mark with a random challenge manipulation.
    allow_short : bool, default False
        Take what there is when a class has too few images instead of raising.
    """
    import pandas as pd

    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) or per_class < 0:
        raise ManifestError(f"per_class must be a non-negative integer, got {per_class!r}")
    if not isinstance(n_folds, (int, np.integer)) or n_folds < 1:
        raise ManifestError(f"n_folds must be a positive integer, got {n_folds!r}")
    if not 0.0 <= float(manip_fraction) <= 1.0:
        raise ManifestError(f"manip_fraction must be in [0, 1], got {manip_fraction!r}")
    rng = np.random.default_rng(seed)
    ext = _pool(kept, "kept list")
    classes = sorted(ext["label"].unique()) if classes is None else list(classes)
    if not classes:
        raise ManifestError("kept list: no kept images")
    picked = _take(ext, int(per_class), rng, classes, "kept list", allow_short)
    from_train: dict[str, list[str]] = {c: [] for c in classes}
    if train is not None and train_per_class > 0:
        pool = _pool(train, "training list")
        pool = pool[~pool["path"].isin(ext["path"])]
        from_train = _take(pool, int(train_per_class), rng, classes, "training list", allow_short)
    rows: list[tuple[str, str, int, str]] = []
    for c in classes:
        items = [(p, "external") for p in picked[c]] + [(p, "train") for p in from_train[c]]
        folds = rng.permutation(len(items)) % n_folds
        rows.extend((p, c, int(f), s) for (p, s), f in zip(items, folds))
    out = pd.DataFrame(rows, columns=list(HOLDOUT_COLUMNS))
    out["fold"] = out["fold"].astype("int64")
    if manip_fraction > 0:
        kinds = [random_manipulation(rng) if rng.random() < manip_fraction else "" for _ in range(len(out))]
        out["manip_kind"] = kinds
        out["manip"] = (out["manip_kind"] != "").astype("int64")
    return out

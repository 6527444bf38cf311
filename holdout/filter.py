"""Apply camera rules to a scan manifest and remove exact and near duplicates.

The output has every manifest row plus three columns: ``kept`` (bool),
``label`` (the class, null when rejected) and ``reason`` (why a row was
rejected, ``""`` when kept).  Duplicates are resolved among the rows the rules
keep, in path order: the first of a group stays and the others get
``exact duplicate of <path>`` (same MD5) or ``near duplicate of <path> (pHash
distance d)`` (Hamming distance of the 64-bit pHash at most ``threshold``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from holdout.errors import ManifestError
from holdout.rules import Rules
from holdout.scan import _POPCOUNT8

__all__ = ["filter_manifest", "near_duplicate_pairs", "summarize_filter", "DEFAULT_PHASH_THRESHOLD"]

#: Default pHash Hamming distance at or below which two photos count as the same picture.
DEFAULT_PHASH_THRESHOLD = 6

_NEEDED = ("path", "ok", "error", "make", "model", "software", "width", "height", "quality", "md5", "phash")


def _hashes_u64(values) -> np.ndarray:
    return np.array([int(v, 16) if v else 0 for v in values], dtype=np.uint64)


def near_duplicate_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs ``(i, j)`` with ``i < j`` whose 64-bit hashes differ in at most ``threshold`` bits.

    Uses the pigeonhole principle: split the 64 bits into ``threshold + 1``
    segments; two hashes within ``threshold`` bits agree exactly on at least one
    segment, so only rows sharing a segment value are compared.

    Returns
    -------
    i, j, distance : ndarray of int64
    """
    h = np.asarray(hashes, dtype=np.uint64)
    n = len(h)
    if n < 2:
        e = np.empty(0, np.int64)
        return e, e, e
    if not 0 <= threshold < 64:
        raise ValueError(f"threshold must be in [0, 63], got {threshold}")
    m = threshold + 1
    bounds = np.linspace(0, 64, m + 1).astype(int)
    found: set[tuple[int, int]] = set()
    out_i, out_j, out_d = [], [], []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        key = (h >> np.uint64(lo)) & np.uint64((1 << int(hi - lo)) - 1)
        order = np.argsort(key, kind="stable")
        k = key[order]
        d = 1
        while d < n:
            same = k[:-d] == k[d:]
            if not same.any():
                break  # sorted keys: no equal pair further apart either
            a, b = order[:-d][same], order[d:][same]
            x = h[a] ^ h[b]
            dist = _POPCOUNT8[x[:, None].view(np.uint8)].sum(axis=1, dtype=np.int64)
            close = dist <= threshold
            for i, j, dd in zip(a[close], b[close], dist[close]):
                pair = (int(min(i, j)), int(max(i, j)))
                if pair not in found:
                    found.add(pair)
                    out_i.append(pair[0])
                    out_j.append(pair[1])
                    out_d.append(int(dd))
            d += 1
    return np.array(out_i, np.int64), np.array(out_j, np.int64), np.array(out_d, np.int64)


def filter_manifest(manifest, rules: Rules, *, phash_threshold: int | None = DEFAULT_PHASH_THRESHOLD):
    """Classify every manifest row with ``rules`` and drop duplicates among the kept ones.

    Parameters
    ----------
    manifest : pandas.DataFrame
        A scan manifest (:data:`holdout.scan.MANIFEST_COLUMNS`).
    rules : Rules
        The class rules.
    phash_threshold : int or None, default 6
        Maximum pHash Hamming distance of near duplicates; ``None`` keeps near
        duplicates (exact MD5 duplicates are always removed).

    Returns
    -------
    pandas.DataFrame
        The manifest rows in path order with ``kept``, ``label`` and ``reason``.
    """
    import pandas as pd

    missing = [c for c in _NEEDED if c not in manifest.columns]
    if missing:
        raise ManifestError(f"manifest lacks column(s) {missing}; expected the columns of `holdout scan`")
    if phash_threshold is not None and not (isinstance(phash_threshold, int) and 0 <= phash_threshold < 64):
        raise ManifestError(f"phash_threshold must be an integer in [0, 63] or None, got {phash_threshold!r}")
    dup = manifest["path"].duplicated()
    if dup.any():
        raise ManifestError(f"manifest lists {int(dup.sum())} path(s) twice, e.g. {manifest['path'][dup].iloc[0]!r}")
    df = manifest.sort_values("path", kind="stable").reset_index(drop=True)
    labels: list[Any] = []
    reasons: list[str] = []
    for row in df.to_dict("records"):
        label, reason = rules.classify(row)
        labels.append(label)
        reasons.append(reason)
    df["label"] = pd.array(labels, dtype="string")
    df["reason"] = reasons
    kept = df["label"].notna().to_numpy().copy()

    # exact duplicates: the first path of each MD5 stays
    idx = np.flatnonzero(kept)
    first_of: dict[str, int] = {}
    for i in idx:
        md5 = df.at[i, "md5"]
        if md5 in first_of:
            kept[i] = False
            df.at[i, "reason"] = f"exact duplicate of {df.at[first_of[md5], 'path']}"
        else:
            first_of[md5] = int(i)

    if phash_threshold is not None:
        idx = np.flatnonzero(kept)
        a, b, dist = near_duplicate_pairs(_hashes_u64(df["phash"].to_numpy()[idx]), phash_threshold)
        neighbours: dict[int, list[tuple[int, int]]] = {}
        for i, j, d in zip(idx[a], idx[b], dist):
            neighbours.setdefault(int(max(i, j)), []).append((int(min(i, j)), int(d)))
        for j in sorted(neighbours):  # path order: earlier kept rows win
            hit = next(((i, d) for i, d in sorted(neighbours[j]) if kept[i]), None)
            if hit is not None:
                kept[j] = False
                df.at[j, "reason"] = f"near duplicate of {df.at[hit[0], 'path']} (pHash distance {hit[1]})"
    df["kept"] = kept
    df.loc[~df["kept"], "label"] = pd.NA
    front = [c for c in ("path", "kept", "label", "reason") if c in df.columns]
    return df[front + [c for c in df.columns if c not in front]]


def summarize_filter(df) -> str:
    """A short text report: kept per class and the most common rejection reasons."""
    lines = [f"{int(df['kept'].sum())} kept of {len(df)} files"]
    for label, n in df.loc[df["kept"], "label"].value_counts().sort_index().items():
        lines.append(f"  {label:<24} {n}")
    rej = df.loc[~df["kept"], "reason"].str.replace(r" of .*| \(.*|: .*", "", regex=True)
    if len(rej):
        lines.append("rejected:")
        for reason, n in rej.value_counts().head(10).items():
            lines.append(f"  {n:>6}  {reason}")
    return "\n".join(lines)

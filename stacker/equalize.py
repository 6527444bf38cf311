"""Class-balanced assignment: force predicted class counts to known quotas.

The exact problem
-----------------
Given probabilities ``P`` (N rows, K classes) and count bounds
``lower[k] <= count[k] <= upper[k]``, give every row one class so that the total
score ``sum_i s[i, a(i)]`` is maximal, with ``s = log P`` (default) or ``s = P``
(``objective="prob"``).  With exact quotas, ``lower == upper``.

It is a transportation problem with only K sinks, so its dual has one *price* per
class: an assignment is optimal exactly when there are prices ``p`` such that every
row takes an argmax of ``s[i] - p`` and the counts meet the bounds (and, with
bounded quotas, a class below its upper bound has ``p <= 0`` and one above its lower
bound has ``p >= 0``).  :func:`solve_assignment` finds such an assignment and its
prices without the N x N matrix of the Hungarian method:

1. start from the argmax (the optimum without quotas, prices 0);
2. with K >= 20, take a few bulk dual steps first (each over- or under-full class
   moves its price to shed or win half its excess at once);
3. repair the counts by successive shortest paths on the K class nodes: moving a
   row from class a to b costs ``s[i, a] - s[i, b]``, the cheapest such row per
   pair is kept in partially sorted candidate lists, and each round one Dijkstra
   search with potentials (the prices), from every class with an excess at once,
   gives shortest chains of moves, of which the vertex-disjoint ones are applied;
4. on large inputs (N > 20,000), prices are first solved (recursively) on a sample
   of one row per block of 8 (fixed seed); rows whose best class leads the runner-up
   by a wide margin under those prices are frozen, steps 2-3 run on the contested
   rows only, and the certificate decides whether to stop or to widen the margin:
   frozen rows are certified at once when the prices moved (class against class)
   by less than their lead, else by a pass over all rows.

Steps 2 and 4 only produce warm starts; step 3 alone makes the result exact.

Kernels are compiled with numba (cached on disk) for inputs of 200,000 values or
more, or once compiled in the process; smaller inputs run interpreted, so a first
CLI run on a 2,640-row table does not wait seconds for a cold compilation
(``STACKER_JIT=1``/``0`` forces either way; see :mod:`stacker._assign_kernels`).

The certificate is checked at the end of every solve; the prices are returned, and
``exp(-p)`` are per-class weights that reproduce the assignment as an argmax of
``P * exp(-p)`` and can be reused on new data (:meth:`HungarianEqualizer.transform`
does not re-use them: it re-solves on the new table's quotas).

Zero probabilities are treated as ``1e-300`` (log = -690.8): a zero is taken only
when the quotas force it.

Ties
----
The result is a deterministic function of the input.  The start takes the lowest
class index among tied maxima; the row moved along a pair of classes is the one of
smallest loss, ties to the lowest row index (among the rows re-solved, on large
inputs); the chains of moves found in a round are applied in order of length, then
of the class reached.  Among several optimal assignments the one reached this way
is returned.

Quotas
------
``quota`` is ``None`` (equal shares), one number for every class, or one number per
class (a sequence in class order, or a ``{class: number}`` mapping).  Numbers that
are all integers are counts; otherwise they must sum to 1 and are proportions.
Counts must sum to the group's size.  Proportions ``pi`` (and ``None``: ``1/K``)
give ``N * pi_k`` rows to class k; when that is not an integer the class is
*bounded* by ``floor(N pi_k) <= count <= ceil(N pi_k)`` and the data decide which
classes take the extra rows.  ``lower``/``upper`` give explicit bounds instead.

Greedy rules (:class:`GreedyEqualizer`)
---------------------------------------
``"iterative"`` (the 1st place of the camera-model challenge): repeatedly, the
class predicted most often among the free rows takes its quota of free rows by
descending probability; those rows and that class leave the problem and the
argmax is re-taken.  Under bounds rather than a quota it takes as many rows as
predict it, moved into its bounds (and into what the other open classes still need
and can hold).  ``"topk"``: all (row, class) pairs by descending probability,
each taken while the row is free and the class has room.

Probabilities out
-----------------
The hard assignment is what ``fit_predict``/``predict`` return (and, for the batch
given to ``fit``, ``labels_``/``assignment_``).  ``fit_transform``/``transform`` return
``P * exp(-p)`` renormalised per row (``objective="log"``: a prior shift to the
quota prior, whose argmax is the assignment) or, for ``objective="prob"`` and the
greedy rules, the input probabilities; in every case rows whose argmax disagrees
with the assignment (ties at the price margin) get their assigned and argmax values
swapped, so the output's argmax *is* the assignment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import ClassifierMixin

from stacker._assign_kernels import TINY, kernels
from stacker.base import Transform, register
from stacker.errors import ConfigError, LabelError, ProbabilityError, SchemaError
from stacker.inputs import Form, group_codes
from stacker.table import ID, PredictionTable

__all__ = [
    "solve_assignment",
    "greedy_assignment",
    "check_certificate",
    "resolve_quota",
    "assignment_objective",
    "apply_prices",
    "HungarianEqualizer",
    "GreedyEqualizer",
    "QuotaSpec",
]

QuotaSpec = None | float | int | Sequence[float] | Mapping[str, float] | np.ndarray

_SMALL = 20_000  # above this many rows, prices come from a subsample first
_SUBSAMPLE = 8
# With many classes, each unit of the exact repair costs O(K^2): bulk price steps first.
_REFINE_MIN_K = 20
_REFINE_SWEEPS = 2
_SEED = 20180412  # the sample that gives the first prices; any fixed value keeps runs reproducible
_CERT_TOL = 1e-9


# ------------------------------------------------------------------ validation
def _check_probs(P: np.ndarray, *, what: str = "probabilities", scan: bool = True) -> np.ndarray:
    """Shape checks, and (``scan``) one pass for NaN, infinite, negative and all-zero rows."""
    P = np.ascontiguousarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] < 2:
        raise ConfigError(f"{what} must be a 2-d array with at least 2 classes, got shape {P.shape}")
    if P.shape[0] == 0:
        raise ConfigError(f"{what}: no rows to assign (empty group)")
    if not scan or not kernels.pick(P.size).has_bad_rows(P):  # one pass; the details below only on failure
        return P
    finite = np.isfinite(P)
    if not finite.all():
        rows = np.flatnonzero(~finite.all(axis=1))
        raise ProbabilityError(f"{what}: NaN or infinite values", rows=rows)
    neg = (P < 0).any(axis=1)
    if neg.any():
        raise ProbabilityError(f"{what}: negative values", rows=np.flatnonzero(neg))
    zero = ~(P > 0).any(axis=1)
    if zero.any():
        raise ProbabilityError(
            f"{what}: rows of all-zero probabilities have no class to prefer", rows=np.flatnonzero(zero)
        )
    return P


def _check_bounds(lower: Any, upper: Any, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    bounds = []
    for name, raw in (("lower", lower), ("upper", upper)):
        try:
            b = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name} quotas must be numbers, got {raw!r}") from None
        if b.shape != (k,):
            raise ConfigError(f"{name} quotas: expected {k} values, got shape {b.shape}")
        if not np.all(np.isfinite(b)) or np.any(b != np.round(b)):
            raise ConfigError(f"{name} quotas must be whole numbers, got {b.tolist()}")
        if np.any(b < 0):
            raise ConfigError(f"negative {name} quota: {b.tolist()}")
        bounds.append(b)
    if np.any(bounds[0] > n):
        raise ConfigError(f"a lower quota ({bounds[0].max():.0f}) asks for more rows than there are ({n})")
    # No class can take more than n rows: clip before the int64 cast, so huge bounds cannot overflow the sums.
    # n + 1, not n: an upper bound above n stays one the count never reaches, as the certificate reads it.
    lo = bounds[0].astype(np.int64)
    up = np.minimum(bounds[1], n + 1).astype(np.int64)
    if np.any(lo > up):
        k0 = int(np.flatnonzero(lo > up)[0])
        raise ConfigError(f"lower quota {lo[k0]} exceeds upper quota {up[k0]} for class {k0}")
    if lo.sum() > n:
        raise ConfigError(f"quotas ask for at least {int(lo.sum())} rows but there are only {n}")
    if up.sum() < n:
        raise ConfigError(f"quotas place at most {int(up.sum())} rows but there are {n}")
    return lo, up


# ---------------------------------------------------------------------- quotas
def resolve_quota(
    quota: QuotaSpec,
    n: int,
    classes: Sequence[str],
    *,
    lower: QuotaSpec = None,
    upper: QuotaSpec = None,
    group: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Turn a quota specification into integer ``(lower, upper)`` count bounds for ``n`` rows.

    See the module docstring for the forms accepted and the rounding rule.
    """
    k = len(classes)
    where = f" (group {group})" if group is not None else ""
    if n <= 0:
        raise ConfigError(f"empty group{where}: no rows to assign")
    if lower is not None or upper is not None:
        if quota is not None:
            raise ConfigError("give either quota or lower/upper bounds, not both")
        lo = np.zeros(k, np.int64) if lower is None else _as_counts(lower, n, classes, "lower", math.floor, where)
        up = np.full(k, n, np.int64) if upper is None else _as_counts(upper, n, classes, "upper", math.ceil, where)
    elif quota is None:
        lo = np.full(k, n // k, np.int64)
        up = np.full(k, -(-n // k), np.int64)
    else:
        values = _per_class(quota, classes, "quota")
        if np.all(values == np.round(values)) and not _looks_like_proportions(values, n):
            if values.sum() != n:  # in floats: counts near 2**63 must not overflow before the check
                raise ConfigError(f"quotas sum to {values.sum():.0f} but the group{where} has {n} rows")
            lo = up = values.astype(np.int64)
        else:
            if abs(values.sum() - 1.0) > 1e-6:
                raise ConfigError(f"quota proportions sum to {values.sum():g}, not 1 (counts must be whole numbers)")
            lo = np.floor(values * n + 1e-9).astype(np.int64)
            up = np.ceil(values * n - 1e-9).astype(np.int64)
    try:
        return _check_bounds(lo, up, n, k)
    except ConfigError as exc:
        raise ConfigError(f"{exc}{where}") from None


def _looks_like_proportions(values: np.ndarray, n: int) -> bool:
    # [1, 0, 0] sums to 1: read it as proportions only when counts could not fit n rows.
    return bool(abs(values.sum() - 1.0) < 1e-9 and n != 1)


def _numbers(values: list[Any], name: str) -> np.ndarray:
    bad = [v for v in values if isinstance(v, (bool, str, bytes)) or not isinstance(v, (int, float, np.number))]
    if bad:
        raise ConfigError(f"{name} values must be numbers, got {bad[0]!r}")
    try:
        return np.array([float(v) for v in values], dtype=np.float64)
    except OverflowError:  # an int too large for a float
        raise ConfigError(f"{name} has a value too large: {max(values)!r}") from None


def _per_class(spec: Any, classes: Sequence[str], name: str) -> np.ndarray:
    k = len(classes)
    if isinstance(spec, Mapping):
        unknown = [c for c in spec if c not in classes]
        if unknown:
            raise ConfigError(f"{name} names unknown classes {unknown}; classes: {list(classes)}")
        missing = [c for c in classes if c not in spec]
        if missing:
            raise ConfigError(f"{name} lacks classes {missing}")
        values = _numbers([spec[c] for c in classes], name)
    elif np.ndim(spec) == 0:
        values = np.full(k, _numbers([spec], name)[0])
    else:
        values = _numbers(list(np.asarray(spec, dtype=object).ravel()), name)
        if values.shape != (k,):
            raise ConfigError(f"{name}: expected {k} values (one per class), got {values.size}")
    if not np.all(np.isfinite(values)):
        raise ConfigError(f"{name} has NaN or infinite values: {values.tolist()}")
    if np.any(values < 0):
        raise ConfigError(f"negative {name}: {values.tolist()}")
    return values


def _as_counts(spec, n, classes, name, rounding, where) -> np.ndarray:
    """Bounds as counts (whole numbers) or proportions (any fraction; rounded outwards)."""
    values = _per_class(spec, classes, name)
    if np.all(values == np.round(values)):
        if name == "lower" and values.max() > n:
            raise ConfigError(f"a lower quota of {values.max():.0f} rows exceeds the group{where}'s {n} rows")
        return np.minimum(values, n + 1).astype(np.int64)  # no class takes more than n rows; no int64 overflow
    if np.any(values > 1):
        raise ConfigError(f"{name} bounds{where} mix proportions and counts: {values.tolist()}")
    nudge = 1e-9 if rounding is math.floor else -1e-9
    return np.array([rounding(v * n + nudge) for v in values], np.int64)


# --------------------------------------------------------------------- solving
def _scores(P: np.ndarray, log_mode: bool) -> np.ndarray:
    return np.log(np.maximum(P, TINY)) if log_mode else P.copy()


def _solve(P: np.ndarray, lo: np.ndarray, up: np.ndarray, log_mode: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """Assignment, potentials ``h`` (K + 1) and whether the row certificate was already checked."""
    n, k = P.shape
    if n <= _SMALL:
        S = _scores(P, log_mode)
        h = np.zeros(k + 1)
        assign = np.argmax(S, axis=1).astype(np.int64)
        if k >= _REFINE_MIN_K:
            kernels.pick(P.size).refine_prices(S, assign, h, lo, up, _REFINE_SWEEPS)
        if kernels.pick(P.size).ssp(S, assign, h, lo, up) != 0:  # pragma: no cover - bounds are checked before
            raise ConfigError(f"the quotas cannot be met (lower {lo.tolist()}, upper {up.tolist()})")
        return assign, h, False
    # Prices from a sample: one random row out of every block of _SUBSAMPLE rows (fixed
    # seed), an equal-probability sample whatever the row order, gathered in order.
    # The rows are validated here (the caller skips its scan): the sample before its
    # solve, all rows in the first bulk pass; the detailed error comes from _check_probs.
    kern = kernels.pick(P.size)
    m = n // _SUBSAMPLE
    idx = np.arange(m, dtype=np.int64) * _SUBSAMPLE + np.random.default_rng(_SEED).integers(0, _SUBSAMPLE, m)
    slo = np.floor(lo * (m / n)).astype(np.int64)
    sup = np.minimum(np.ceil(up * (m / n)).astype(np.int64), m)
    sample = np.take(P, idx, axis=0)  # take: several times faster than P[idx]
    if kern.has_bad_rows(sample):
        _check_probs(P)
    h = _solve(sample, slo, sup, log_mode)[1]
    del sample  # an eighth of the input: not held through the passes below
    for attempt in range(12):
        # Freeze the rows that lead their runner-up by more than delta under these prices;
        # re-solve exactly on the others; the certificate over all rows says if that was enough.
        assign, margin, cnt, bad = kern.bulk_argmax(P, h, log_mode)
        if bad:
            _check_probs(P)
        units = int(np.maximum(cnt - up, 0).sum() + np.maximum(lo - cnt, 0).sum())
        target = (8 * units + 64 * k + 1024) * 4**attempt
        if target >= n:
            delta = np.inf
        else:
            # The quantile of the margins, estimated on a strided sixteenth of them.
            step = 16
            strided = margin[::step]
            q = min(target // step, len(strided) - 1)
            delta = float(np.partition(strided, q)[q])
        cand, S, fixed_cnt = kern.gather_contested(P, assign, margin, delta, log_mode, cnt)
        nc = len(cand)
        clo = np.maximum(lo - fixed_cnt, 0)
        cup = up - fixed_cnt
        if nc < n and ((cup < 0).any() or clo.sum() > nc or cup.sum() < nc):
            continue
        sub = np.ascontiguousarray(assign[cand])
        hh = h.copy()
        if k >= _REFINE_MIN_K:
            kern.refine_prices(S, sub, hh, clo, cup, _REFINE_SWEEPS)
        code = kern.ssp(S, sub, hh, clo, cup)
        if code != 0:
            if nc == n:  # pragma: no cover - bounds are checked before
                raise ConfigError(f"the quotas cannot be met (lower {lo.tolist()}, upper {up.tolist()})")
            continue
        assign[cand] = sub
        if _frozen_rows_certified(kern, h, hh, delta, log_mode) and kern.score_violations(S, sub, hh, _CERT_TOL) == 0:
            return assign, hh, True
        if kern.certificate_violations(P, assign, hh, log_mode, _CERT_TOL) == 0:
            return assign, hh, True
        h = hh
    raise RuntimeError("exact assignment did not converge")  # pragma: no cover


def _frozen_rows_certified(kern, h: np.ndarray, hh: np.ndarray, delta: float, log_mode: bool) -> bool:
    """Whether every frozen row is still at an argmax under the new potentials ``hh``.

    A frozen row leads every other class by more than ``delta`` under ``h`` (a score
    difference, or a ratio of weighted probabilities); moving from ``h`` to ``hh``
    changes any such lead by at most the spread of ``hh - h``, so a spread below the
    lead proves the row certificate for all frozen rows without a pass over them.
    """
    if not np.isfinite(delta):
        return True  # nothing was frozen
    if delta <= 0:
        return False
    change = hh[:-1] - h[:-1]
    spread = float(change.max() - change.min())
    lead = math.log(delta) if kern.margin_is_ratio(h, log_mode) else delta
    return spread <= lead


def solve_assignment(
    proba: np.ndarray,
    lower: np.ndarray | Sequence[int],
    upper: np.ndarray | Sequence[int] | None = None,
    *,
    objective: str = "log",
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact class-balanced assignment maximising the total log-probability (or probability).

    Parameters
    ----------
    proba : ndarray of shape (n, K)
        Non-negative scores per row and class (probabilities; rows need not sum to 1).
    lower, upper : array of K ints
        Count bounds; ``upper=None`` means exact quotas ``lower``.
    objective : {"log", "prob"}
        Maximise ``sum log P[i, a(i)]`` (zeros as 1e-300) or ``sum P[i, a(i)]``.
    check : bool, default True
        Verify the optimality certificate (one extra pass).

    Returns
    -------
    assignment : ndarray of shape (n,), int64
        The class index of each row.
    prices : ndarray of shape (K,)
        Class prices: each row's class is an argmax of ``score - prices``.  With exact
        quotas they are shifted so the smallest is 0; with bounds, a class strictly
        inside its bounds has price 0.  ``exp(-prices)`` are per-class weights.
    """
    log_mode = _objective(objective)
    P = np.asarray(proba)
    P = _check_probs(P, scan=P.ndim != 2 or P.shape[0] <= _SMALL)  # large inputs: validated by _solve's passes
    n, k = P.shape
    lo, up = _check_bounds(lower, lower if upper is None else upper, n, k)
    assign, h, rows_checked = _solve(P, lo, up, log_mode)
    prices = h[k] - h[:k]
    if np.array_equal(lo, up):
        prices = prices - prices.min()
    if check:
        ok, why = check_certificate(P, assign, prices, lo, up, objective=objective, rows=not rows_checked)
        if not ok:  # pragma: no cover - a bug, not bad input
            raise RuntimeError(f"optimality certificate failed: {why}")
    return assign, prices


def _objective(objective: str) -> bool:
    if objective not in ("log", "prob"):
        raise ConfigError(f"objective must be 'log' or 'prob', got {objective!r}")
    return objective == "log"


def check_certificate(
    proba: np.ndarray,
    assignment: np.ndarray,
    prices: np.ndarray,
    lower: np.ndarray,
    upper: np.ndarray,
    *,
    objective: str = "log",
    tol: float = _CERT_TOL,
    rows: bool = True,
) -> tuple[bool, str]:
    """Check that ``assignment`` is optimal, certified by ``prices``.

    True when the counts meet the bounds, every row's class is an argmax of
    ``score - prices`` (within ``tol`` relative), and with bounded quotas every class
    below its upper bound has ``price <= 0`` and every class above its lower bound
    has ``price >= 0``.  Returns ``(ok, reason)``.  ``rows=False`` skips the
    per-row check (done already by the solver on large inputs).
    """
    log_mode = _objective(objective)
    P = np.ascontiguousarray(proba, dtype=np.float64)
    a = np.ascontiguousarray(assignment, dtype=np.int64)
    k = P.shape[1]
    lower = np.asarray(lower)
    upper = np.asarray(upper)
    cnt = np.bincount(a, minlength=k)
    if (cnt < lower).any() or (cnt > upper).any():
        return False, f"counts {cnt.tolist()} outside [{lower.tolist()}, {upper.tolist()}]"
    h = np.append(-np.asarray(prices, dtype=np.float64), 0.0)
    bad = kernels.pick(P.size).certificate_violations(P, a, h, log_mode, tol) if rows else 0
    if bad:
        return False, f"{bad} rows are not at an argmax of score - prices"
    scale = tol * (1.0 + np.abs(prices).max())
    if not np.array_equal(lower, upper):
        if ((cnt < upper) & (prices > scale)).any() or ((cnt > lower) & (prices < -scale)).any():
            return False, "a class strictly inside its bounds has a non-zero price"
    return True, ""


def apply_prices(proba: np.ndarray, prices: np.ndarray, *, objective: str = "log") -> np.ndarray:
    """Re-use prices on new rows: the argmax of ``score - prices`` (lowest class on ties).

    On rows from the same distribution this approximately meets the quotas the prices
    were solved for (exactly, on the rows they were solved on, up to ties); it is the
    cheap, streaming form of the equalizer.  ``objective="log"`` is ``argmax P * exp(-prices)``.
    """
    P = _check_probs(np.asarray(proba))
    p = np.asarray(prices, dtype=np.float64)
    if p.shape != (P.shape[1],) or not np.isfinite(p).all():
        raise ConfigError(f"prices must be {P.shape[1]} finite numbers, got {p.tolist()}")
    score = np.log(np.maximum(P, TINY)) if _objective(objective) else P
    return np.argmax(score - p, axis=1).astype(np.int64)


def assignment_objective(proba: np.ndarray, assignment: np.ndarray, objective: str = "log") -> float:
    """Total score of an assignment (zeros as 1e-300 under the log objective)."""
    P = np.asarray(proba, dtype=np.float64)
    picked = P[np.arange(len(P)), np.asarray(assignment)]
    return float(np.log(np.maximum(picked, TINY)).sum() if _objective(objective) else picked.sum())


def greedy_assignment(
    proba: np.ndarray, lower: np.ndarray | Sequence[int], upper=None, *, method: str = "iterative"
) -> np.ndarray:
    """Greedy class-balanced assignment (see the module docstring for the two rules).

    With bounds, a class takes up to ``upper`` rows while leaving enough rows for
    the lower bounds of the classes still open.
    """
    P = _check_probs(np.asarray(proba))
    n, k = P.shape
    lo, up = _check_bounds(lower, lower if upper is None else upper, n, k)
    assign = np.full(n, -1, np.int64)
    if method == "iterative":
        free = np.ones(n, bool)
        open_ = np.ones(k, bool)
        while open_.any():
            rows = np.flatnonzero(free)
            cls = np.flatnonzero(open_)
            sub = P[np.ix_(rows, cls)]
            votes = np.bincount(np.argmax(sub, axis=1), minlength=len(cls))
            j = int(np.argmax(votes))  # most predicted, lowest class index on ties
            c = cls[j]
            others = open_.copy()
            others[c] = False
            # The rows that vote for c, within its bounds and what the other open classes still need and can hold:
            # with equal bounds (quotas) exactly its quota; with a lower bound only not every free row.
            room = len(rows) - int(lo[others].sum())
            least = max(int(lo[c]), len(rows) - int(min(up[others].sum(), len(rows))))
            take = min(max(int(votes[j]), least), int(up[c]), room) if others.any() else len(rows)
            # Descending probability, lower row index first on ties.
            order = np.argsort(-sub[:, j], kind="stable")[:take]
            assign[rows[order]] = c
            free[rows[order]] = False
            open_[c] = False
    elif method == "topk":
        order = np.argsort(-P, axis=None, kind="stable")
        need_lo = lo.copy()
        taken = np.zeros(k, np.int64)
        left = n
        for flat in order:
            i, c = divmod(int(flat), k)
            if assign[i] >= 0 or taken[c] >= up[c]:
                continue
            # Taking a row for c must leave enough free rows for the other classes' minimums.
            if need_lo.sum() - (need_lo[c] > 0) > left - 1:
                continue
            assign[i] = c
            taken[c] += 1
            need_lo[c] = max(need_lo[c] - 1, 0)
            left -= 1
            if left == 0:
                break
    else:
        raise ConfigError(f"greedy method must be 'iterative' or 'topk', got {method!r}")
    cnt = np.bincount(assign[assign >= 0], minlength=k)
    if (assign < 0).any() or (cnt < lo).any() or (cnt > up).any():  # pragma: no cover
        raise RuntimeError("greedy assignment missed the quotas")
    return assign


# ------------------------------------------------------------------ transforms
def _output_proba(P: np.ndarray, assign: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
    """``renorm(P * weights)``, with the rows whose argmax is not the assignment (ties) fixed so that it is.

    A fixed row swaps its top value with the assigned class's, and any class still tied with the
    assigned one (a lower index wins argmax) is shaved by a relative 1e-9; a row left with no
    mass (weights underflowed) becomes one-hot.  ``np.argmax(out, 1) == assign`` always holds.
    """
    out = P * weights if weights is not None else P.copy()
    s = out.sum(axis=1, keepdims=True)
    out /= np.where(s > 0, s, 1.0)  # in place: at 1,000,000 x 100 a second array costs seconds of page faults
    rows = np.arange(len(out))
    for i in np.flatnonzero(np.argmax(out, axis=1) != assign):
        row, a = out[i], assign[i]
        top = int(np.argmax(row))
        row[top], row[a] = row[a], row[top]
        mx = row[a]
        if not mx > 0:
            row[:] = 0.0
            row[a] = 1.0
            continue
        comp = row >= mx
        comp[a] = False
        row[comp] = mx * (1 - 1e-9)
        row /= row.sum()
    bad = np.argmax(out, axis=1) != assign
    if bad.any():  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"output probabilities disagree with the assignment on rows {rows[bad][:5].tolist()}")
    return out


@dataclass
class _Group:
    name: str
    rows: np.ndarray


class _Equalizer(ClassifierMixin, Transform):
    """Shared parts of the equalizers: model choice, grouping, the transductive estimator API.

    An equalizer is *transductive*: it decides the classes of the batch it is given
    as a whole.  ``fit(X)`` equalizes ``X`` and keeps the result (``assignment_``,
    ``labels_``, ``prices_``); ``fit_predict``/``fit_transform`` return it;
    ``predict(X)``/``transform(X)`` equalize a new batch and change nothing fitted.
    """

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        return tags

    def _proba(self, table: PredictionTable) -> tuple[np.ndarray, str]:
        model = getattr(self, "model", None)
        if model is not None:
            return table.proba(model), str(model)
        if table.n_models == 1:
            return table.probs[:, 0, :], table.models[0]
        return table.probs.mean(axis=1), "mean"

    def _model_name(self, table: PredictionTable) -> str:
        model = getattr(self, "model", None)
        return str(model) if model is not None else table.models[0] if table.n_models == 1 else "mean"

    def _groups(self, table: PredictionTable, groups: Any = None) -> list[_Group]:
        if groups is not None:  # per-row group values (arrays); they replace ``by``
            codes, values = group_codes(groups, len(table))
            return [_Group(f"group={v}", np.flatnonzero(codes == g)) for g, v in enumerate(values)]
        by = getattr(self, "by", None)
        if by is None:
            return [_Group("all", np.arange(len(table)))]
        cols = [by] if isinstance(by, str) else list(by)
        missing = [c for c in cols if c not in table.meta.columns]
        if missing:
            raise SchemaError(
                f"no group column {missing[0]!r}; columns: {list(table.meta.columns)}"
                + ("; for arrays pass groups= instead of by=" if table.source and table.source.startswith("<") else ""),
                path=table.source,
                column=missing[0],
            )
        frame = table.meta[cols]
        null = frame.isna().any(axis=1).to_numpy()
        if null.any():
            rows = np.flatnonzero(null)
            raise SchemaError(
                "rows with a null group value",
                path=table.source,
                column=cols[0],
                rows=rows,
                ids=table.meta[ID].iloc[rows[:5]].tolist(),
            )
        codes, uniques = (
            pd.MultiIndex.from_frame(frame).factorize(sort=True)
            if len(cols) > 1
            else pd.factorize(frame[cols[0]], sort=True)
        )
        out = []
        for g, value in enumerate(uniques):
            out.append(_Group(f"{'/'.join(cols)}={value}", np.flatnonzero(codes == g)))
        return out

    def _bounds(self, n: int, classes: Sequence[str], group: str) -> tuple[np.ndarray, np.ndarray]:
        return resolve_quota(
            self.quota,
            n,
            classes,
            lower=getattr(self, "lower", None),
            upper=getattr(self, "upper", None),
            group=group,
        )

    def _assign(self, P: np.ndarray, lo: np.ndarray, up: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _equalize(
        self, P: np.ndarray, classes: Sequence[str], group: str, output: bool
    ) -> tuple[np.ndarray, np.ndarray | None, Any]:
        """One group: ``(assignment, output probabilities if asked, prices or None)``."""
        lo, up = self._bounds(len(P), classes, group)
        a, p = self._assign(P, lo, up)
        if not output:
            return a, None, None if p is None else p.tolist()
        weights = None if p is None or self._weights_off() else np.exp(-(p - p.min()))
        return a, _output_proba(P, a, weights), None if p is None else p.tolist()

    def _solve(
        self, table: PredictionTable, groups: Any = None, output: bool = True
    ) -> tuple[np.ndarray, PredictionTable | None, dict]:
        """Equalize every group: ``(assignment, output table or None, {group: prices})``."""
        P_all, name = self._proba(table)
        n = len(P_all)
        grps = self._groups(table, groups)
        whole = len(grps) == 1 and len(grps[0].rows) == n  # no copies in and out of a group
        assign = np.empty(n, np.int64)
        out = np.empty_like(P_all) if output and not whole else None
        info: dict[str, Any] = {}
        for grp in grps:
            P = P_all if whole else P_all[grp.rows]
            # The table's rows are valid probabilities already (finite, >= 0, summing to 1); check the shape only.
            _check_probs(P, scan=False)
            a, o, extra = self._equalize(P, table.classes, grp.name, output)
            if whole:
                assign, out = a, o
            else:
                assign[grp.rows] = a
                if out is not None:
                    out[grp.rows] = o
            if extra is not None:
                info[grp.name] = extra
        result = None if out is None else table.replace(probs=out[:, None, :], models=[name])
        return assign, result, info

    def _fit_solve(self, X: Any, y: Any, groups: Any, output: bool) -> tuple[PredictionTable | None, Form]:
        table, form = self._fit_input(X, y)
        assign, out, info = self._solve(table, groups, output)
        self.assignment_ = assign
        self.labels_ = self._labels(assign, table, form)
        self._set_info(info)
        self.output_model_ = self._model_name(table)
        return out, form

    def _set_info(self, info: dict[str, Any]) -> None:
        self.prices_ = info

    def fit(self, X: Any, y: Any = None, groups: Any = None) -> _Equalizer:
        """Equalize ``X`` (per group) and keep the result; ``y`` only names the classes of an array."""
        self._fit_solve(X, y, groups, output=False)
        return self

    def fit_predict(self, X: Any, y: Any = None, groups: Any = None) -> np.ndarray:
        """The equalized class of every row of ``X``: labels (class indices for arrays fitted without ``y``)."""
        self._fit_solve(X, y, groups, output=False)
        return self.labels_

    def fit_transform(self, X: Any, y: Any = None, groups: Any = None) -> Any:
        """Probabilities of ``X`` whose argmax is exactly the equalized class of each row."""
        out, form = self._fit_solve(X, y, groups, output=True)
        assert out is not None
        return self._output(out, form, reduced=True)

    def transform(self, X: Any, groups: Any = None) -> Any:
        """Equalize a new batch; the output's argmax is its assignment.  The fitted state is not changed."""
        self._check_fitted("classes_")
        table, form = self._input(X)
        out = self._solve(table, groups)[1]
        assert out is not None
        return self._output(out, form, reduced=True)

    def predict(self, X: Any, groups: Any = None) -> np.ndarray:
        """The equalized class of every row of a new batch.  The fitted state is not changed."""
        self._check_fitted("classes_")
        table, form = self._input(X)
        return self._labels(self._solve(table, groups, output=False)[0], table, form)

    def score(self, X: Any, y: Any = None, groups: Any = None, sample_weight: Any = None) -> float:
        """Accuracy of :meth:`predict` against ``y`` (default: the table's labels)."""
        from sklearn.metrics import accuracy_score

        table, form = self._input(X)
        pred = self.predict(table if form.kind != "array" else X, groups)
        if y is None:
            if not table.has_labels:
                raise LabelError("score needs labels: give y, or a table with a label column", path=table.source)
            known = table.y >= 0
            return float(
                accuracy_score(
                    np.asarray(table.labels)[known],
                    pred[known],
                    sample_weight=None if sample_weight is None else np.asarray(sample_weight)[known],
                )
            )
        return float(accuracy_score(np.asarray(y), pred, sample_weight=sample_weight))

    def _weights_off(self) -> bool:
        return getattr(self, "objective", "log") != "log"


@register("hungarian")
class HungarianEqualizer(_Equalizer):
    """Exact class-balanced assignment per group (see :mod:`stacker.equalize`).

    Parameters
    ----------
    quota : None, number, sequence or mapping, default None
        Per-class quota: counts or proportions (module docstring); None: equal shares,
        floor/ceil bounded when the group size is not a multiple of K.
    by : str or list of str, optional
        Meta column(s) to equalize within, e.g. ``"manip"``.
    lower, upper : number, sequence or mapping, optional
        Explicit count (or proportion) bounds instead of ``quota``.
    objective : {"log", "prob"}, default "log"
        Maximise the total log-probability or the total probability.
    model : str, optional
        The model to equalize; default: the only model, or the arithmetic mean of all.

    Attributes
    ----------
    classes_ : ndarray
        Class names (tables, DataFrames), ``y``'s labels, or column indices (arrays fitted without ``y``).
    assignment_ : ndarray of int
        Class index per row of the batch given to ``fit``.
    labels_ : ndarray
        Class label per row of that batch (``classes_[assignment_]``).
    prices_ : dict
        Group name -> class prices (weights ``exp(-price)``) of that batch.

    Examples
    --------
    >>> import numpy as np
    >>> P = np.array([[0.6, 0.4], [0.7, 0.3], [0.2, 0.8], [0.9, 0.1]])
    >>> HungarianEqualizer().fit_predict(P)
    array([1, 0, 1, 0])
    """

    def __init__(
        self,
        quota: QuotaSpec = None,
        by: str | list[str] | None = None,
        lower: QuotaSpec = None,
        upper: QuotaSpec = None,
        objective: str = "log",
        model: str | None = None,
    ) -> None:
        self.quota = quota
        self.by = by
        self.lower = lower
        self.upper = upper
        self.objective = objective
        self.model = model

    def _assign(self, P, lo, up):
        return solve_assignment(P, lo, up, objective=self.objective)


@register("greedy")
class GreedyEqualizer(_Equalizer):
    """Greedy class-balanced assignment per group: ``"iterative"`` (1st place) or ``"topk"``.

    Parameters are those of :class:`HungarianEqualizer` (no ``objective``), plus
    ``method``.  The output probabilities are the input ones (argmax fixed up).
    """

    def __init__(
        self,
        quota: QuotaSpec = None,
        by: str | list[str] | None = None,
        lower: QuotaSpec = None,
        upper: QuotaSpec = None,
        method: str = "iterative",
        model: str | None = None,
    ) -> None:
        self.quota = quota
        self.by = by
        self.lower = lower
        self.upper = upper
        self.method = method
        self.model = model

    def _assign(self, P, lo, up):
        return greedy_assignment(P, lo, up, method=self.method), None

"""Exact and greedy class-balanced assignment: scipy's Hungarian on the expanded matrix as oracle, certificate,
bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

from stacker._assign_kernels import TINY
from stacker.equalize import (
    GreedyEqualizer,
    HungarianEqualizer,
    apply_prices,
    assignment_objective,
    check_certificate,
    greedy_assignment,
    resolve_quota,
    solve_assignment,
)
from stacker.errors import ConfigError, ProbabilityError, SchemaError
from stacker.table import PredictionTable
from tests.conftest import make_table

_BONUS = 1e5


def oracle(P: np.ndarray, lower: np.ndarray, upper: np.ndarray, objective: str = "log") -> float:
    """Optimal total score by scipy's Hungarian method on the expanded N x sum(upper) matrix.

    Lower bounds are enforced by giving each class's first ``lower`` columns a bonus.
    """
    S = np.log(np.maximum(P, TINY)) if objective == "log" else P
    cols, bonus = [], []
    for k in range(P.shape[1]):
        cols += [k] * int(upper[k])
        bonus += [_BONUS] * int(lower[k]) + [0.0] * int(upper[k] - lower[k])
    C = -(S[:, cols] + np.asarray(bonus))
    r, c = linear_sum_assignment(C)
    return float(-C[r, c].sum() - _BONUS * lower.sum())


def _kind_probs(kind: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "random":
        return rng.dirichlet(np.ones(k), size=n)
    if kind == "peaked":
        return rng.dirichlet(np.full(k, 0.05), size=n) + 0.0
    if kind == "flat":
        return np.full((n, k), 1.0 / k)
    if kind == "tied":
        P = np.round(rng.dirichlet(np.ones(k), size=n), 1) + 1e-3
        return P / P.sum(axis=1, keepdims=True)
    if kind == "onehot":
        return np.eye(k)[rng.integers(0, k, n)]
    if kind == "zeros":
        P = rng.dirichlet(np.ones(k), size=n)
        P[rng.random((n, k)) < 0.4] = 0.0
        P[P.sum(axis=1) == 0, 0] = 1.0
        return P / P.sum(axis=1, keepdims=True)
    raise AssertionError(kind)


def _assert_optimal(P, lo, up, objective="log"):
    a, prices = solve_assignment(P, lo, up, objective=objective)
    cnt = np.bincount(a, minlength=P.shape[1])
    assert (cnt >= lo).all() and (cnt <= up).all()
    ok, why = check_certificate(P, a, prices, lo, up, objective=objective)
    assert ok, why
    mine = assignment_objective(P, a, objective)
    best = oracle(P, lo, up, objective)
    assert mine == pytest.approx(best, rel=1e-9, abs=1e-6)
    return a, prices


KINDS = ["random", "peaked", "flat", "tied", "onehot", "zeros"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 80),
    k=st.integers(2, 6),
    kind=st.sampled_from(KINDS),
    bounded=st.booleans(),
    objective=st.sampled_from(["log", "prob"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_matches_hungarian_oracle(n, k, kind, bounded, objective, seed):
    rng = np.random.default_rng(seed)
    P = _kind_probs(kind, n, k, rng)
    # Random quotas summing to n; bounded: a random slack around them.
    q = np.bincount(rng.integers(0, k, n), minlength=k).astype(np.int64)
    if bounded:
        lo = np.maximum(q - rng.integers(0, 3, k), 0)
        up = q + rng.integers(0, 3, k)
    else:
        lo = up = q
    _assert_optimal(P, lo, up, objective)


@pytest.mark.parametrize("jit", ["0", "1"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n,k", [(600, 10), (2000, 7), (900, 30), (910, 30)])  # K >= 20: bulk price steps first
def test_larger_fixed_cases(kind, n, k, jit, monkeypatch):
    # Both the interpreted kernels and the numba-compiled ones (STACKER_JIT=1).
    monkeypatch.setenv("STACKER_JIT", jit)
    rng = np.random.default_rng(n + k)
    P = _kind_probs(kind, n, k, rng)
    lo, up = resolve_quota(None, n, [str(i) for i in range(k)])
    _assert_optimal(P, lo, up)


def test_compiling_the_kernels_leaves_the_interpreted_ones_interpreted(monkeypatch):
    """STACKER_JIT=0 after a compile in the same process still runs plain Python end to end."""
    numba = pytest.importorskip("numba")
    from stacker import _assign_kernels as ak

    compiled = ak.kernels.compile()
    assert isinstance(compiled.ssp, numba.core.dispatcher.Dispatcher)
    for name in ("_select", "_store", "_recompute", "_add_newcomer", "_weights", "_value", "ssp"):
        assert not isinstance(getattr(ak, name), numba.core.dispatcher.Dispatcher), name
    monkeypatch.setenv("STACKER_JIT", "0")
    assert ak.kernels.pick(10**9) is ak.PYTHON


@pytest.mark.parametrize("n,k", [(48_000, 6), (24_000, 25)])
def test_subsampled_path_is_exact_and_certified(n, k):
    # Above 20,000 rows prices come from a subsample and rows are frozen: the answer must not change.
    rng = np.random.default_rng(5)
    P = rng.dirichlet(np.full(k, 0.4), size=n)
    P[:, 0] *= 3  # a strong bias towards class 0 forces many moves
    P /= P.sum(axis=1, keepdims=True)
    q = np.full(k, n // k)
    a, prices = solve_assignment(P, q)
    assert (np.bincount(a, minlength=k) == q).all()
    ok, why = check_certificate(P, a, prices, q, q)
    assert ok, why
    # Same optimum as a direct solve on the whole problem (no subsample).
    import stacker.equalize as eq

    old = eq._SMALL
    try:
        eq._SMALL = n + 1
        b, _ = solve_assignment(P, q)
    finally:
        eq._SMALL = old
    assert assignment_objective(P, a) == pytest.approx(assignment_objective(P, b), rel=1e-12)


def test_prices_reproduce_assignment_as_weighted_argmax():
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.ones(5), size=500)
    P[:, 2] *= 4
    P /= P.sum(axis=1, keepdims=True)
    q = np.full(5, 100)
    a, prices = solve_assignment(P, q)
    assert prices.min() == 0.0
    assert prices[2] > 0  # the over-predicted class is taxed
    w = np.exp(-prices)
    agree = np.argmax(P * w, axis=1) == a
    assert agree.mean() > 0.99  # only rows tied at the margin may differ
    # Re-used on fresh rows from the same distribution, the prices nearly meet the quotas.
    Q = rng.dirichlet(np.ones(5), size=5000)
    Q[:, 2] *= 4
    Q /= Q.sum(axis=1, keepdims=True)
    counts = np.bincount(apply_prices(Q, prices), minlength=5)
    assert np.abs(counts - 1000).max() < 150
    assert np.abs(np.bincount(np.argmax(Q, axis=1), minlength=5) - 1000).max() > 500
    with pytest.raises(ConfigError, match="prices"):
        apply_prices(Q, prices[:3])


def test_deterministic_and_tie_rule():
    P = np.full((6, 3), 1.0 / 3)
    a1, _ = solve_assignment(P, [2, 2, 2])
    a2, _ = solve_assignment(P.copy(), [2, 2, 2])
    assert np.array_equal(a1, a2)
    assert np.bincount(a1, minlength=3).tolist() == [2, 2, 2]


def test_bounded_quota_lets_data_decide():
    # 11 rows, 3 classes: floor/ceil bounds 3..4; the extra rows go where the data want them.
    P = np.array([[0.9, 0.05, 0.05]] * 5 + [[0.05, 0.9, 0.05]] * 3 + [[0.05, 0.05, 0.9]] * 3)
    lo, up = resolve_quota(None, 11, ["a", "b", "c"])
    assert lo.tolist() == [3, 3, 3] and up.tolist() == [4, 4, 4]
    a, prices = solve_assignment(P, lo, up)
    assert np.bincount(a, minlength=3).tolist() == [4, 4, 3] or np.bincount(a, minlength=3).tolist() == [4, 3, 4]
    assert np.bincount(a, minlength=3)[0] == 4
    ok, why = check_certificate(P, a, prices, lo, up)
    assert ok, why


def test_resolve_quota_forms():
    classes = ["a", "b", "c", "d"]
    assert resolve_quota(3, 12, classes)[0].tolist() == [3, 3, 3, 3]
    assert resolve_quota([4, 4, 2, 2], 12, classes)[1].tolist() == [4, 4, 2, 2]
    assert resolve_quota({"a": 6, "b": 2, "c": 2, "d": 2}, 12, classes)[0].tolist() == [6, 2, 2, 2]
    lo, up = resolve_quota(0.25, 10, classes)
    assert lo.tolist() == [2, 2, 2, 2] and up.tolist() == [3, 3, 3, 3]
    lo, up = resolve_quota([0.5, 0.5, 0, 0], 10, classes)
    assert lo.tolist() == [5, 5, 0, 0] and up.tolist() == [5, 5, 0, 0]
    lo, up = resolve_quota(None, 12, classes, lower=2, upper=4)
    assert lo.tolist() == [2] * 4 and up.tolist() == [4] * 4


@pytest.mark.parametrize(
    "quota,kw,match",
    [
        ([3, 3, 3, 2], {}, "sum to 11"),
        ([5, -1, 4, 4], {}, "negative"),
        (20, {}, "sum to 80"),
        ([0.5, 0.6, 0, 0], {}, "sum to 1.1"),
        ({"a": 3, "b": 3, "c": 3, "x": 3}, {}, "unknown classes"),
        ([float("nan")] * 4, {}, "NaN"),
        ([3, 3, 3], {}, "expected 4"),
        (None, {"lower": 4}, "at least 16"),
        (None, {"upper": 2}, "at most 8"),
        (None, {"lower": [4, 0, 0, 0], "upper": [3, 4, 4, 4]}, "exceeds"),
        (3, {"lower": 1}, "not both"),
    ],
)
def test_bad_quotas(quota, kw, match):
    with pytest.raises(ConfigError, match=match):
        resolve_quota(quota, 12, ["a", "b", "c", "d"], **kw)


def test_empty_group_and_bad_probabilities():
    with pytest.raises(ConfigError, match="empty group"):
        resolve_quota(None, 0, ["a", "b"])
    with pytest.raises(ConfigError, match="no rows"):
        solve_assignment(np.zeros((0, 3)), [0, 0, 0])
    P = np.full((4, 2), 0.5)
    bad = P.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ProbabilityError, match="NaN") as err:
        solve_assignment(bad, [2, 2])
    assert err.value.rows == [2]
    bad = P.copy()
    bad[1] = 0
    with pytest.raises(ProbabilityError, match="all-zero") as err:
        solve_assignment(bad, [2, 2])
    assert err.value.rows == [1]
    bad = P.copy()
    bad[3, 0] = -0.1
    with pytest.raises(ProbabilityError, match="negative"):
        greedy_assignment(bad, [2, 2])
    with pytest.raises(ConfigError, match="objective"):
        solve_assignment(P, [2, 2], objective="linear")


@pytest.mark.parametrize("jit", ["0", "1"])
def test_bad_rows_in_large_inputs_are_found(jit, monkeypatch):
    # Above 20,000 rows the validation rides on the solver's passes: a bad row inside
    # the price sample and one outside it must both be reported, by row.
    monkeypatch.setenv("STACKER_JIT", jit)
    rng = np.random.default_rng(3)
    n = 24_000
    P = rng.dirichlet(np.ones(4), size=n)
    q = np.full(4, n // 4)
    cases = (
        (0, np.nan, "NaN"),
        (7, np.nan, "NaN"),
        (12_345, np.inf, "infinite"),
        (19_999, -0.5, "negative"),
        (n - 1, 0.0, "all-zero"),
    )
    for row, value, match in cases:
        bad = P.copy()
        bad[row] = value
        with pytest.raises(ProbabilityError, match=match) as err:
            solve_assignment(bad, q)
        assert err.value.rows == [row]


def test_zero_probabilities_are_taken_only_when_forced():
    # Class 1 has probability 0 for all but one row; it must still receive 2 rows.
    P = np.array([[1.0, 0.0], [0.9, 0.1], [1.0, 0.0], [1.0, 0.0]])
    a, _ = solve_assignment(P, [2, 2])
    assert a[1] == 1 and np.bincount(a).tolist() == [2, 2]


# ------------------------------------------------------------------------- greedy
def test_greedy_iterative_rule_by_hand():
    # Class 0 is predicted by rows 0,1,2 (most); it keeps its top-2 (rows 0, 1); row 2 re-takes
    # its argmax among the remaining classes.
    P = np.array(
        [
            [0.90, 0.05, 0.05],
            [0.80, 0.15, 0.05],
            [0.50, 0.10, 0.40],
            [0.10, 0.80, 0.10],
            [0.20, 0.70, 0.10],
            [0.10, 0.30, 0.60],
        ]
    )
    a = greedy_assignment(P, [2, 2, 2], method="iterative")
    assert a.tolist() == [0, 0, 2, 1, 1, 2]


def test_greedy_topk_and_quotas():
    rng = np.random.default_rng(1)
    P = rng.dirichlet(np.ones(4), size=103)
    lo, up = resolve_quota(None, 103, list("abcd"))
    for method in ("iterative", "topk"):
        a = greedy_assignment(P, lo, up, method=method)
        cnt = np.bincount(a, minlength=4)
        assert (cnt >= lo).all() and (cnt <= up).all()
        # The exact assignment is never worse than a greedy one.
        exact, _ = solve_assignment(P, lo, up)
        assert assignment_objective(P, exact) >= assignment_objective(P, a) - 1e-9
    with pytest.raises(ConfigError, match="greedy method"):
        greedy_assignment(P, lo, up, method="best")


# ------------------------------------------------------------------ transforms
def test_hungarian_equalizer_by_manip_on_table():
    table = make_table(n_images=200, seed=3)
    eq = HungarianEqualizer(by="manip")
    out = eq.fit_transform(table)
    assert out.models == ("mean",) and len(out) == len(table)
    assert list(out.meta.columns) == list(table.meta.columns)
    manip = table.manip
    for flag in (0, 1):
        counts = np.bincount(eq.assignment_[manip == flag], minlength=10)
        assert counts.tolist() == [10] * 10
    # The output's argmax is the hard assignment, rows sum to 1.
    assert np.array_equal(np.argmax(out.probs[:, 0, :], axis=1), eq.assignment_)
    np.testing.assert_allclose(out.probs.sum(axis=2), 1.0)
    assert set(eq.prices_) == {"manip=0", "manip=1"}
    assert list(eq.labels_[:3]) == [table.classes[i] for i in eq.assignment_[:3]]
    # A named model and the greedy rule.
    g = GreedyEqualizer(by="manip", model="cnn-a")
    out_g = g.fit_transform(table)
    assert out_g.models == ("cnn-a",)
    assert np.array_equal(np.argmax(out_g.probs[:, 0, :], axis=1), g.assignment_)


def test_output_argmax_handles_exact_ties():
    # Flat rows: every class ties, the assignment spreads them; the output must follow it.
    table = PredictionTable.from_arrays(
        [f"i{j}" for j in range(6)], np.full((6, 3), 1 / 3), ["a", "b", "c"], models=["m"]
    )
    eq = HungarianEqualizer()
    out = eq.fit_transform(table)
    assert np.array_equal(np.argmax(out.probs[:, 0, :], axis=1), eq.assignment_)
    assert np.bincount(eq.assignment_).tolist() == [2, 2, 2]


def test_equalizer_errors_name_group_and_column():
    table = make_table(n_images=40, seed=1)
    with pytest.raises(SchemaError, match="no group column 'camera'"):
        HungarianEqualizer(by="camera").fit_transform(table)
    with pytest.raises(ConfigError, match="group manip=0"):
        HungarianEqualizer(by="manip", quota=3).fit_transform(table)
    with pytest.raises(SchemaError, match="no model"):
        HungarianEqualizer(model="nope").fit_transform(table)


def test_null_group_values_are_refused():
    table = make_table(n_images=20, seed=2)
    meta = table.meta.copy()
    meta["manip_kind"] = ["jpg70"] * 19 + [None]
    t = table.replace(meta=meta)
    t.meta.loc[19, "manip_kind"] = None
    with pytest.raises(SchemaError, match="null group value") as err:
        HungarianEqualizer(by="manip_kind").fit_transform(t)
    assert err.value.rows == [19]


@pytest.mark.parametrize("method", ["iterative", "topk"])
def test_greedy_bounds_that_the_argmax_meets_leave_it_unchanged(method):
    # With only lower bounds, the iterative rule gave the first class every free row but the others'
    # minimums (CIFAR-10, --lower 5: accuracy 0.9668 -> 0.1031).
    rng = np.random.default_rng(0)
    P = rng.dirichlet(np.full(6, 0.3), size=300)
    votes = np.bincount(P.argmax(axis=1), minlength=6)
    lo = np.full(6, int(votes.min()) // 2)
    for upper in (None, np.full(6, int(votes.max()) + 3)):
        out = greedy_assignment(P, lo, np.full(6, 300) if upper is None else upper, method=method)
        if method == "topk":
            np.testing.assert_array_equal(out, P.argmax(axis=1))
        else:  # the most predicted class takes as many rows as predict it, by descending probability
            counts = np.bincount(out, minlength=6)
            assert counts[votes.argmax()] == votes.max() and (counts >= lo).all()
            assert (out == P.argmax(axis=1)).mean() > 0.85
    # Tight bounds still move rows, and still meet them.
    tight = np.full(6, 50)
    assert (np.bincount(greedy_assignment(P, tight, method=method), minlength=6) == 50).all()

"""The budget planner on a fake clock and a fake cost model: ordering, admission, stopping, calibration."""

from __future__ import annotations

import math

import pytest

from stacker.errors import ConfigError
from stacker.planner import CostModel, Planner, Work, check_time_limit


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeCost(CostModel):
    """Seconds per fold by member name (``params["cost"]``); calibration as in CostModel."""

    def __init__(self) -> None:
        super().__init__(Work(1000, 10, 3, 2))

    def raw(self, family, params, n_folds=1):
        return float(params["cost"]) * n_folds

    def combine_seconds(self, n_members, n_folds, n_slots):
        return 1.0


def member(name, family, cost, n_folds=2, joint=False):
    tasks = [list(range(n_folds))] if joint else [[f] for f in range(n_folds)]
    return (name, family, {"cost": cost}, tasks)


def drain(planner, clock, slots=1, durations=None):
    """Run the planner to the end with ``slots`` workers on the fake clock; each task takes its raw cost."""
    running = []  # (end time, task)
    started = []
    while True:
        while len(running) < slots:
            t = planner.next_task()
            if t is None:
                break
            started.append(t)
            took = (durations or {}).get(planner.members[t.member].name, t.params["cost"] * len(t.folds))
            running.append((clock.now + took, t))
        if not running:
            return started
        running.sort(key=lambda r: r[0])
        end, t = running.pop(0)
        clock.now = max(clock.now, end)
        planner.task_done(t)


def names(planner, tasks):
    out = []
    for t in tasks:
        n = planner.members[t.member].name
        if n not in out:
            out.append(n)
    return out


def test_time_limit_checks():
    assert check_time_limit(None) is None
    assert check_time_limit(math.inf) is None
    assert check_time_limit(30) == 30.0
    for bad in (0, -5, float("nan"), "60", True, [1]):
        with pytest.raises(ConfigError, match="time_limit"):
            check_time_limit(bad)


def test_without_budget_every_task_in_the_given_order():
    clock = FakeClock()
    members = [member("a", "xgboost", 5), member("b", "pool", 1), member("c", "keras", 3, joint=True)]
    order = [(2, [0, 1]), (0, [0]), (1, [0]), (0, [1]), (1, [1])]
    p = Planner(members, FakeCost(), 2, None, order=order, n_folds=2, clock=clock)
    assert p.settled
    tasks = drain(p, clock, slots=2)
    assert [(t.member, t.folds) for t in tasks] == order
    assert all(p.complete(i) for i in range(3))
    assert p.summary()["skipped"] == []


def test_budget_orders_by_gain_per_second_and_cheap_combiners_first():
    clock = FakeClock()
    members = [
        member("xgb-0", "xgboost", 4),
        member("lgbm-0", "lightgbm", 4),
        member("xgb-1", "xgboost", 4),
        member("sel", "selection", 0.5),
        member("pool", "pool", 0.5),
    ]
    p = Planner(members, FakeCost(), 1, 1000, n_folds=2, clock=clock)
    tasks = drain(p, clock)
    # pool (gain 1) and selection (0.68) cost little; then xgb-0 (0.61 / 8 s), xgb-1 (0.305 / 8 s), lgbm (0.19 / 8 s)
    assert names(p, tasks) == ["pool", "sel", "xgb-0", "xgb-1", "lgbm-0"]
    # member by member: every fold of a member before the next member
    assert [t.folds for t in tasks[:2]] == [[0], [1]]
    assert p.summary()["fitted"] == ["pool", "sel", "xgb-0", "xgb-1", "lgbm-0"]


def test_budget_skips_members_that_would_end_late_and_admits_cheaper_ones():
    clock = FakeClock()
    members = [
        member("pool", "pool", 1),
        member("xgb-big", "xgboost", 10),
        member("xgb-small", "xgboost", 2),
        member("keras", "keras", 3, joint=True),
    ]
    # 1 slot, 20 s, 1 s reserve: pool 2 s; xgb-big 20 s would end at 22 > 19: skipped; keras 6 s ends at 8;
    # xgb-small 4 s ends at 12.
    p = Planner(members, FakeCost(), 1, 20, n_folds=2, clock=clock)
    tasks = drain(p, clock)
    fitted = p.summary()["fitted"]
    assert "xgb-big" not in fitted and {"pool", "keras", "xgb-small"} <= set(fitted)
    assert "xgb-big" not in names(p, tasks)  # never started
    skipped = {s["name"]: s for s in p.summary()["skipped"]}
    assert set(skipped) == {"xgb-big"}
    assert "budget of 20 s" in skipped["xgb-big"]["reason"] and skipped["xgb-big"]["expected_seconds"] == 20.0
    assert clock.now <= 20


def test_two_slots_are_simulated_as_a_list_schedule():
    clock = FakeClock()
    # Two slots: four folds of 8 s take 16 s on two slots, which fits 26 s less the 1 s reserve and the
    # 8 s margin of a family not yet seen; on one slot 32 s would not.
    members = [member("xgb", "xgboost", 8, n_folds=4)]
    p2 = Planner(members, FakeCost(), 2, 26, n_folds=4, clock=clock)
    drain(p2, clock, slots=2)
    assert p2.summary()["fitted"] == ["xgb"] and p2.forced is None
    clock = FakeClock()
    p1 = Planner(members + [member("pool", "pool", 0.5, n_folds=4)], FakeCost(), 1, 26, n_folds=4, clock=clock)
    drain(p1, clock, slots=1)
    assert p1.summary()["fitted"] == ["pool"]


def test_a_budget_too_small_for_anything_fits_the_cheapest_member_and_says_so():
    clock = FakeClock()
    members = [member("xgb", "xgboost", 50), member("sel", "selection", 20), member("pool", "pool", 30)]
    p = Planner(members, FakeCost(), 1, 5, n_folds=2, clock=clock)
    drain(p, clock)
    s = p.summary()
    assert s["fitted"] == ["sel"] and s["forced"] == "sel"
    assert {x["name"] for x in s["skipped"]} == {"xgb", "pool"}
    assert s["overruns"]  # it ended past the budget: reported


def test_deadline_drops_members_with_folds_still_queued():
    clock = FakeClock()
    # Estimated 2 s per fold, really 16 s: after the first xgb fold (ends at 18 s) the recalibrated estimate
    # of the second (2 s x 8^(5/9) = 6.3 s) ends past 110% of the 20 s budget, so it is not started and the
    # member is dropped whole (no partial OOF).
    members = [member("pool", "pool", 1), member("xgb", "xgboost", 2)]
    p = Planner(members, FakeCost(), 1, 20, n_folds=2, clock=clock)
    tasks = drain(p, clock, durations={"xgb": 16.0})
    s = p.summary()
    assert s["fitted"] == ["pool"]
    assert not p.complete(1)
    assert [n for n in names(p, tasks)] == ["pool", "xgb"] and len([t for t in tasks if t.member == 1]) == 1
    dropped = {x["name"]: x["reason"] for x in s["skipped"]}
    assert "past the budget of 20 s" in dropped["xgb"]
    assert clock.now == 18.0


def test_deadline_keeps_the_only_member_rather_than_none():
    clock = FakeClock()
    members = [member("xgb", "xgboost", 2)]
    p = Planner(members, FakeCost(), 1, 10, n_folds=2, clock=clock)
    drain(p, clock, durations={"xgb": 30.0})
    assert p.summary()["fitted"] == ["xgb"]  # finished, then stopped, and reported
    assert len(p.summary()["overruns"]) == 2


def test_calibration_scales_a_family_and_moves_the_others():
    cost = FakeCost()
    assert cost.predict("xgboost", {"cost": 2}) == 2
    for _ in range(4):
        cost.observe("xgboost", {"cost": 2}, 1, 6.0)  # 3x slower than expected
    assert cost.factor("xgboost") == pytest.approx(3.0)
    assert cost.factor("keras") == pytest.approx(3.0)  # unobserved: the machine's ratio
    cost.observe("keras", {"cost": 1}, 1, 1.0)
    assert 1.0 < cost.factor("keras") < 3.0


def test_the_margin_narrows_once_a_family_has_finished_a_task():
    clock = FakeClock()
    # xgb-0 (4 s a fold, 2 folds) alone: 8 s + a 4 s unseen margin fits 14 s less 1 s reserve; after it,
    # xgb-1 (same cost) ends at 16 s + 1.2 s margin, which fits 19 s but would not with the unseen 4 s.
    members = [member("xgb-0", "xgboost", 4), member("xgb-1", "xgboost", 4)]
    p = Planner(members, FakeCost(), 1, 20, n_folds=2, clock=clock)
    drain(p, clock)
    assert p.summary()["fitted"] == ["xgb-0", "xgb-1"]
    clock = FakeClock()
    p = Planner(members, FakeCost(), 1, 16, n_folds=2, clock=clock)  # 8 + 4 <= 15, then 16 + 1.2 > 15
    drain(p, clock)
    assert p.summary()["fitted"] == ["xgb-0"]


def test_calibration_changes_the_plan():
    clock = FakeClock()
    members = [
        member("pool", "pool", 1),
        member("xgb-0", "xgboost", 3),
        member("xgb-1", "xgboost", 3),
        member("xgb-2", "xgboost", 3),
    ]
    # Really 3x slower (9 s a fold): xgb-0 ends at 20 s; then xgb-1 is expected to take 2 x 3 s x 3^(3/4)
    # = 13.7 s, past the 29 s deadline, so it is skipped (uncalibrated, 6 s would have fitted and ended at 38 s).
    p = Planner(members, FakeCost(), 1, 30, n_folds=2, clock=clock)
    drain(p, clock, durations={"xgb-0": 9.0, "xgb-1": 9.0, "xgb-2": 9.0})
    assert p.summary()["fitted"] == ["pool", "xgb-0"]
    assert clock.now <= 30


def test_forecast_counts_planned_member_folds_and_eta():
    clock = FakeClock()
    members = [member("pool", "pool", 1), member("xgb", "xgboost", 4), member("huge", "xgboost", 100)]
    p = Planner(members, FakeCost(), 1, 30, n_folds=2, clock=clock)
    planned, eta = p.forecast()
    assert planned == 4  # pool and xgb, 2 folds each; huge does not fit
    assert eta == pytest.approx(2 + 8 + 1)
    p_none = Planner(members, FakeCost(), 1, None, n_folds=2, clock=clock)
    assert p_none.forecast() == (6, pytest.approx(2 + 8 + 200 + 1))

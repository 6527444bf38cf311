"""Planning a Blend's fits under a time budget: a cost model and an anytime scheduler.

The algorithm is kept apart from the Blend and from the executors, so it runs on
a fake clock in tests:

* :class:`CostModel` predicts the wall seconds of one task (a member's fits on
  one or more folds) from the rows, features, classes, expected boosting rounds
  or epochs and the family, with constants fitted to a Blend's own fits on the
  cost benchmark's table (``benchmarks/bench_blend_cost.py``), and corrects them
  online: each family's estimates are multiplied by the geometric mean of
  observed / predicted seconds of its finished tasks, shrunk towards the ratio
  of all families (so a busy machine slows every family's estimate at once).
* :class:`Planner` hands out tasks one at a time, when a worker slot frees.
  Without a budget it hands out every task in the order given.  With a budget
  it considers the members in the order of expected gain per expected second
  (the strong cheap combiners, the log-linear pool and greedy selection, come
  first) and *admits* a member, with all its folds, only when a list-schedule
  simulation of the work already committed plus this member on the slots ends
  before the deadline, less the reserve for combining and a margin for the
  estimate's error (30% of the member's longest task once its family has a
  finished task to calibrate on, the whole task before).  A member that does not
  fit is skipped for good (time only runs out).  If the recalibrated estimates
  of an admitted member's queued folds end more than 10% past the budget, the
  member is dropped whole: a member enters the blend only with every fold, so
  its out-of-fold predictions never leak.  A running fit is never interrupted;
  one that ends past the budget is finished and reported as an overrun.

The budget counts from the planner's creation (the start of ``Blend.fit``).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stacker.errors import ConfigError

__all__ = ["CostModel", "Planner", "PlanTask", "Work", "FAMILY_GAIN", "check_time_limit"]

#: Prior expected gain of a family's first member (later members of a family count 1/(1 + j)).
#: From ``benchmarks/bench_blend_quality.py`` on the CIFAR-10 table: each family alone lowers the
#: geometric mean's out-of-fold log loss (0.1251) by pool 0.0248, selection 0.0169, XGBoost 0.0151,
#: Keras 0.0102, LightGBM 0.0046, logistic 0.0034; the gains are those drops over the pool's.
FAMILY_GAIN: dict[str, float] = {
    "pool": 1.0,
    "selection": 0.68,
    "xgboost": 0.61,
    "keras": 0.41,
    "lightgbm": 0.19,
    "logistic": 0.14,
}


def check_time_limit(value: Any, where: str = "time_limit") -> float | None:
    """``None`` or ``inf`` (no budget) or a positive finite number of seconds; else a ConfigError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where} must be a positive number of seconds or None, got {value!r}")
    v = float(value)
    if math.isnan(v) or v <= 0:
        raise ConfigError(f"{where} must be a positive number of seconds, got {value!r}")
    return None if math.isinf(v) else v


@dataclass(frozen=True)
class Work:
    """The size of one fold's fit: training rows, feature columns, classes and level-1 models."""

    n_rows: int
    n_features: int
    n_classes: int
    n_models: int


# Seconds per unit of work, fitted to a Blend's own fits (2 workers, one thread each, on 2 idle cores:
# 20 members of `best` on 50,000 and 20,000 rows x 91 features x 10 classes); the online calibration
# corrects them for the machine and the table at hand.
_CONSTANTS: dict[str, float] = {
    "xgboost": 1.07e-9,  # per training row x feature x class x round, depth 1-2
    "lightgbm": 5.2e-9,  # per row x feature x class x round, 31-63 leaves
    "keras": 1.3e-10,  # per row x weight x epoch, forward and backward, a member's folds batched
    "keras_row": 3.2e-6,  # per row x epoch: the per-step overhead of the small batched matmuls
    "logistic": 6.0e-9,  # per row x feature x class x L-BFGS iteration
    "pool": 7.0e-10,  # per row x model x class x L-BFGS iteration
    "selection": 1.4e-9,  # per row x model x class x greedy step
    "combine": 2.5e-9,  # the Blend's weight search: per row x member x step x (folds + 1)
}
_ROW_REF = 40_000
_ROW_EXPONENT = {"xgboost": 1.15, "lightgbm": 0.7, "keras": 1.15, "pool": 0.9}
#: Share of a candidate's longest task kept free before the deadline: the cost model's typical error
#: (+-30% on the cost benchmark's fits) once its family has finished a task here, and a whole task's
#: worth before that (26-class trees ran twice their uncalibrated estimate on PMLB letter).
MARGIN = 0.3
MARGIN_UNSEEN = 1.0
#: An admitted member's remaining folds may run to this multiple of the budget before it is dropped.
GRACE = 1.1
#: Fixed seconds per task (start, prediction, serialisation).
_OVERHEAD = 0.1


def _num(params: Mapping[str, Any], key: str, default: float) -> float:
    v = params.get(key, default)
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else float(default)


def expected_rounds(params: Mapping[str, Any], scale: float) -> float:
    """Boosting rounds to expect: the best round near ``scale / learning_rate``, plus the patience.

    On the cost benchmark's 40,000 training rows XGBoost's best round was about
    12 / learning rate and LightGBM's about 4.4 / learning rate.
    """
    n_est = _num(params, "n_estimators", 1500)
    lr = max(_num(params, "learning_rate", 0.1), 1e-4)
    stop = params.get("early_stopping_rounds", 25)
    if stop is None:
        return n_est
    return min(n_est, scale / lr + float(stop))


def _widths(value: Any) -> list[int]:
    """Hidden layer widths from a parameter as given (a width, a list of widths); 64 where unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [max(1, int(value))]
    try:
        return [max(1, int(u)) for u in value]
    except (TypeError, ValueError):
        return [64]


class CostModel:
    """Expected wall seconds of a task, calibrated online from the tasks that finished.

    Parameters
    ----------
    work : Work
        The size of one fold's fit.
    constants : mapping, optional
        Seconds per unit of work by family (see ``_CONSTANTS``).
    prior_weight : float, default 2.0
        How many observations the prior (the all-family ratio, or 1 before any)
        counts for when a family's correction factor is estimated.
    """

    def __init__(self, work: Work, constants: Mapping[str, float] | None = None, prior_weight: float = 2.0) -> None:
        self.work = work
        self.constants = {**_CONSTANTS, **(constants or {})}
        self.prior_weight = float(prior_weight)
        self._log_sum: dict[str, float] = {}
        self._count: dict[str, int] = {}

    def raw(self, family: str, params: Mapping[str, Any], n_folds: int = 1) -> float:
        """The uncalibrated estimate for ``n_folds`` fits of one member."""
        w = self.work
        d, k, m = w.n_features, w.n_classes, w.n_models
        # Rows enter as (rows / 40,000) ** exponent x 40,000: the constants hold at 40,000 training rows,
        # and from 16,000 to 40,000 XGBoost and Keras grew faster than the rows (more rounds and epochs
        # before stopping), LightGBM slower.
        n = _ROW_REF * (max(w.n_rows, 1) / _ROW_REF) ** _ROW_EXPONENT.get(family, 1.0)
        c = self.constants.get(family, self.constants["xgboost"])
        if family == "xgboost":
            depth = _num(params, "max_depth", 2)
            per = c * n * d * k * expected_rounds(params, 12.0) * (0.6 + 0.4 * depth)
        elif family == "lightgbm":
            per = c * n * d * k * expected_rounds(params, 4.4) * (1.0 + _num(params, "num_leaves", 31) / 64)
        elif family == "keras":
            sizes = [d, *_widths(params.get("hidden_layer_sizes", (64,))), k]
            weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
            # Early stopping: Adam stopped after 15-28 epochs on the cost benchmark, SGD after 42-77.
            settle = 14.0 if params.get("optimizer", "adam") == "adam" else 50.0
            epochs = min(_num(params, "epochs", 100), settle + _num(params, "patience", 5))
            per = n * (c * weights + self.constants["keras_row"]) * epochs
            return _OVERHEAD + per * n_folds
        elif family == "logistic":
            per = c * n * d * k * min(_num(params, "max_iter", 100), 100)
        elif family == "pool":
            per = c * n * m * k * min(_num(params, "max_iter", 500), 150)
        elif family == "selection":
            per = c * n * m * k * _num(params, "n_iter", 50)
        else:
            per = c * n * d * k * 100
        return (_OVERHEAD + per) * n_folds

    def factor(self, family: str) -> float:
        """The online correction of ``family``'s estimates (1 before any observation)."""
        total = sum(self._count.values())
        prior = sum(self._log_sum.values()) / total if total else 0.0
        n = self._count.get(family, 0)
        return math.exp((self._log_sum.get(family, 0.0) + self.prior_weight * prior) / (n + self.prior_weight))

    def predict(self, family: str, params: Mapping[str, Any], n_folds: int = 1) -> float:
        return self.raw(family, params, n_folds) * self.factor(family)

    def observe(self, family: str, params: Mapping[str, Any], n_folds: int, seconds: float) -> None:
        """Record a finished task's wall seconds."""
        r = max(float(seconds), 1e-3) / max(self.raw(family, params, n_folds), 1e-3)
        self._log_sum[family] = self._log_sum.get(family, 0.0) + math.log(r)
        self._count[family] = self._count.get(family, 0) + 1

    def combine_seconds(self, n_members: int, n_folds: int, n_slots: int) -> float:
        """Expected seconds of the Blend's weight search over ``n_members`` (K + 1 searches on the slots)."""
        w = self.work
        rows = w.n_rows * n_folds / max(n_folds - 1, 1)  # all rows, not one fold's training rows
        return 0.5 + self.constants["combine"] * rows * n_members * 100 * (n_folds + 1) / max(n_slots, 1)

    def observed(self, family: str) -> int:
        """How many finished tasks of ``family`` the estimates are calibrated on."""
        return self._count.get(family, 0)

    def factors(self) -> dict[str, float]:
        return {f: round(self.factor(f), 4) for f in sorted(self._count)}


@dataclass
class PlanTask:
    """One unit of work: member ``member`` on folds ``folds`` (one task, run by one worker)."""

    index: int
    member: int
    folds: list[int]
    family: str
    params: dict[str, Any] = field(repr=False)
    expected: float = 0.0


@dataclass
class _Member:
    index: int
    name: str
    family: str
    params: dict[str, Any]
    tasks: list[list[int]]  # the fold lists of its tasks
    rank: int  # position within its family, for the diminishing gain


class Planner:
    """Hands out a Blend's tasks one at a time, within an optional time budget.

    Parameters
    ----------
    members : sequence of (name, family, params, task fold lists)
        Every member with the folds of each of its tasks (``[[0], [1], ...]``, or
        ``[[0, 1, 2, 3, 4]]`` for a family that fits a member's folds together).
    cost : CostModel
    n_slots : int
        Tasks that run at once.
    time_limit : float or None
        Seconds from now; None: no budget (every task, in the order of ``order``).
    order : sequence of (member, folds) or None
        The task order without a budget (default: member by member).
    n_folds : int
        Folds of the Blend (for the combining reserve).
    clock : callable, default time.monotonic
    start : float, optional
        The clock reading the budget counts from (default: now).
    gain : mapping, optional
        Prior gain by family (default :data:`FAMILY_GAIN`).
    """

    def __init__(
        self,
        members: Sequence[tuple[str, str, dict[str, Any], list[list[int]]]],
        cost: CostModel,
        n_slots: int,
        time_limit: float | None,
        *,
        order: Sequence[tuple[int, list[int]]] | None = None,
        n_folds: int = 5,
        clock: Callable[[], float] = time.monotonic,
        start: float | None = None,
        gain: Mapping[str, float] | None = None,
    ) -> None:
        self.cost = cost
        self.n_slots = max(1, int(n_slots))
        self.time_limit = check_time_limit(time_limit)
        self.n_folds = int(n_folds)
        self.clock = clock
        self.gain = dict(FAMILY_GAIN if gain is None else gain)
        self.t0 = clock() if start is None else float(start)
        seen: dict[str, int] = {}
        self.members: list[_Member] = []
        for i, (name, family, params, tasks) in enumerate(members):
            self.members.append(_Member(i, name, family, dict(params), [list(t) for t in tasks], seen.get(family, 0)))
            seen[family] = seen.get(family, 0) + 1
        self._lock = threading.Lock()
        self._tasks: list[PlanTask] = []
        self._queue: list[PlanTask] = []  # admitted, not started
        self._running: dict[int, float] = {}  # task index -> start time
        self._done: dict[int, set[int]] = {}  # member -> finished task indices
        self._member_tasks: dict[int, list[int]] = {}
        self.admitted: list[int] = []
        self.skipped: dict[int, str] = {}
        self.dropped: dict[int, str] = {}  # admitted, then dropped with folds unfitted
        self.overruns: list[dict[str, Any]] = []
        self.forced: int | None = None
        if self.time_limit is None:
            seq = order if order is not None else [(m.index, f) for m in self.members for f in m.tasks]
            for mi, folds in seq:
                self._enqueue(mi, folds)
            self.admitted = sorted({mi for mi, _ in seq})
            self._undecided: list[int] = []
        else:
            self._undecided = [m.index for m in self.members]

    # ------------------------------------------------------------------ helpers
    def elapsed(self) -> float:
        return self.clock() - self.t0

    def _expected(self, m: _Member, folds: list[int]) -> float:
        return self.cost.predict(m.family, m.params, len(folds))

    def _enqueue(self, mi: int, folds: list[int]) -> None:
        m = self.members[mi]
        t = PlanTask(len(self._tasks), mi, list(folds), m.family, m.params, self._expected(m, folds))
        self._tasks.append(t)
        self._queue.append(t)
        self._member_tasks.setdefault(mi, []).append(t.index)

    def _key(self, mi: int) -> float:
        m = self.members[mi]
        g = self.gain.get(m.family, 0.1) / (1.0 + m.rank)
        return g / max(sum(self._expected(m, f) for f in m.tasks), 1e-6)

    def _slots(self, now: float) -> list[float]:
        """When each slot is expected to be free: running tasks at their expected end (or now if overdue)."""
        ends = []
        for ti, start in self._running.items():
            t = self._tasks[ti]
            ends.append(max(now, start + self.cost.predict(t.family, t.params, len(t.folds))))
        return sorted(ends + [now] * max(0, self.n_slots - len(ends)))

    @staticmethod
    def _place(slots: list[float], seconds: Sequence[float]) -> float:
        """List-schedule ``seconds`` onto ``slots`` (modified in place); the time the last one ends."""
        end = max(slots) if not seconds else 0.0
        for s in seconds:
            i = min(range(len(slots)), key=slots.__getitem__)
            slots[i] += s
            end = max(end, slots[i])
        return end

    def _reserve(self, n_members: int) -> float:
        return self.cost.combine_seconds(n_members, self.n_folds, self.n_slots)

    def _fits(self, slots: list[float], mi: int, n_admitted: int) -> tuple[bool, float]:
        m = self.members[mi]
        trial = list(slots)
        seconds = [self._expected(m, f) for f in m.tasks]
        end = self._place(trial, seconds)
        # A margin for the estimate's error on this member's longest task, so that one long fit admitted
        # late does not run far past the budget; wider while the family has no finished task to calibrate on.
        margin = MARGIN if self.cost.observed(m.family) else MARGIN_UNSEEN
        assert self.time_limit is not None  # only asked under a budget
        deadline = self.t0 + self.time_limit - self._reserve(n_admitted + 1) - margin * max(seconds)
        return end <= deadline, end

    # ------------------------------------------------------------------ the executor's calls
    def next_task(self) -> PlanTask | None:
        """The next task to start on a free slot, or None when nothing more will start."""
        with self._lock:
            now = self.clock()
            if self.time_limit is not None:
                self._drop_late(now)
                if not self._queue:
                    self._admit(now)
            if not self._queue:
                return None
            t = self._queue.pop(0)
            t.expected = self.cost.predict(t.family, t.params, len(t.folds))
            self._running[t.index] = now
            return t

    def _admit(self, now: float) -> None:
        """Admit the best undecided member that fits (skipping for good those that do not)."""
        slots = self._slots(now)
        self._place(slots, [self.cost.predict(t.family, t.params, len(t.folds)) for t in self._queue])
        while self._undecided:
            self._undecided.sort(key=self._key, reverse=True)
            mi = self._undecided.pop(0)
            ok, end = self._fits(slots, mi, len(self.admitted))
            if not ok and not self.admitted:
                # Too small a budget for anything: fit the cheapest member and say so.
                cheapest = min(
                    [mi, *self._undecided],
                    key=lambda j: sum(self._expected(self.members[j], f) for f in self.members[j].tasks),
                )
                if cheapest != mi:
                    self._undecided.append(mi)
                    self._undecided.remove(cheapest)
                    mi = cheapest
                self.forced = mi
                ok = True
            if ok:
                self.admitted.append(mi)
                for folds in self.members[mi].tasks:
                    self._enqueue(mi, folds)
                return
            self.skipped[mi] = (
                f"expected to end {end - self.t0:.0f} s into the budget of "
                f"{self.time_limit:g} s (with {self._reserve(len(self.admitted) + 1):.1f} s "
                f"kept for combining)"
            )

    def _drop_late(self, now: float) -> None:
        """Drop the admitted members whose queued folds are now expected to end past the grace deadline.

        Calibration may have raised the estimates since they were admitted.  If
        no other member would be left whole, the earliest admitted one is kept
        and finished (its overrun is reported).
        """
        if not self._queue or self.time_limit is None:
            return
        slots = self._slots(now)
        ends: dict[int, float] = {}
        for t in self._queue:
            e = self._place(slots, [self.cost.predict(t.family, t.params, len(t.folds))])
            ends[t.member] = max(ends.get(t.member, 0.0), e)
        late = {mi for mi, e in ends.items() if e > self.t0 + GRACE * self.time_limit}
        if not late:
            return
        keep = None
        if all(mi in late for mi in self.admitted):
            keep = min(late, key=self.admitted.index)
        for mi in late - {keep}:
            self.dropped[mi] = (
                f"its remaining folds were expected to end more than {GRACE - 1:.0%} past the "
                f"budget of {self.time_limit:g} s; its finished folds were discarded"
            )
        self._queue = [t for t in self._queue if t.member not in late or t.member == keep]

    def task(self, index: int) -> PlanTask:
        return self._tasks[index]

    @property
    def settled(self) -> bool:
        """Whether every member is decided (admitted or skipped), so the blend's member set is known."""
        with self._lock:
            return not self._undecided

    def live(self) -> list[int]:
        """Admitted members that were not dropped."""
        with self._lock:
            return [mi for mi in self.admitted if mi not in self.dropped]

    def task_done(self, task: PlanTask, seconds: float | None = None) -> None:
        """Record a finished task; ``seconds`` (its own fit time) calibrates the cost model."""
        with self._lock:
            now = self.clock()
            start = self._running.pop(task.index, now)
            took = now - start if seconds is None else float(seconds)
            self.cost.observe(task.family, task.params, len(task.folds), took)
            self._done.setdefault(task.member, set()).add(task.index)
            if self.time_limit is not None and now > self.t0 + self.time_limit:
                m = self.members[task.member]
                self.overruns.append(
                    {
                        "member": m.name,
                        "folds": task.folds,
                        "seconds": round(now - start, 3),
                        "expected": round(task.expected, 3),
                        "past_budget": round(now - self.t0 - self.time_limit, 3),
                    }
                )

    # ------------------------------------------------------------------ outcome
    def complete(self, mi: int) -> bool:
        """Whether every task of member ``mi`` was admitted, not dropped, and has finished."""
        tasks = self._member_tasks.get(mi, [])
        return (
            mi in self.admitted and mi not in self.dropped and bool(tasks) and len(self._done.get(mi, ())) == len(tasks)
        )

    def forecast(self) -> tuple[int, float]:
        """``(member-folds expected to be fitted in all, seconds from now to the expected end)``."""
        with self._lock:
            now = self.clock()
            slots = self._slots(now)
            end = self._place(slots, [self.cost.predict(t.family, t.params, len(t.folds)) for t in self._queue])
            folds = sum(sum(len(f) for f in self.members[mi].tasks) for mi in self.admitted if mi not in self.dropped)
            n_adm = len(self.admitted)
            for mi in sorted(self._undecided, key=self._key, reverse=True):
                ok, e = self._fits(slots, mi, n_adm)
                if ok:
                    self._place(slots, [self._expected(self.members[mi], f) for f in self.members[mi].tasks])
                    folds += sum(len(f) for f in self.members[mi].tasks)
                    end, n_adm = max(end, e), n_adm + 1
            return folds, max(0.0, end - now) + self._reserve(n_adm)

    def summary(self) -> dict[str, Any]:
        """What was fitted, skipped (and why), overruns and the cost corrections: JSON-able."""
        names = [m.name for m in self.members]
        skipped = [
            {
                "name": names[mi],
                "family": self.members[mi].family,
                "reason": r,
                "expected_seconds": round(sum(self._expected(self.members[mi], f) for f in self.members[mi].tasks), 3),
            }
            for mi, r in sorted({**self.skipped, **self.dropped}.items())
        ]
        for mi in self._undecided:  # never considered (the run stopped first)
            skipped.append(
                {
                    "name": names[mi],
                    "family": self.members[mi].family,
                    "reason": "not considered: the fit stopped first",
                    "expected_seconds": None,
                }
            )
        return {
            "time_limit": self.time_limit,
            "seconds": round(self.elapsed(), 3),
            "fitted": [names[mi] for mi in self.admitted if self.complete(mi)],
            "skipped": skipped,
            "overruns": self.overruns,
            "forced": None if self.forced is None else names[self.forced],
            "cost_factors": self.cost.factors(),
        }

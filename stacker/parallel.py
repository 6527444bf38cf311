"""Running many (member, fold) fits: planned (:func:`plan_fits`), then run locally with joblib or on a Dask cluster.

The unit of work is :func:`fit_member_folds`, a pure module-level function whose
inputs are arrays, JSON-able parameters and seeds, and whose output is, per
fold, the out-of-fold probabilities plus the fitted model as native bytes and a
JSON sidecar.  No estimator object crosses a process boundary, so the same function
runs under joblib's loky workers and on ``dask.distributed`` workers, and the
result for a seed does not depend on where or in which order tasks ran.

Each task limits its own BLAS/OpenMP/torch threads to one, and the executor
runs ``n_jobs`` tasks side by side, so two cores are never oversubscribed.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from stacker.errors import ConfigError, StackerError
from stacker.files import _alive as _pid_alive
from stacker.threads import available_cores

__all__ = [
    "fit_member_folds",
    "run_tasks",
    "check_scheduler",
    "effective_n_jobs",
    "plan_fits",
    "member_tasks",
    "fits_jointly",
    "task_seed",
    "watch_parent",
]


def _limit_threads(family: str):
    from threadpoolctl import threadpool_limits

    if family == "keras":
        import torch

        torch.set_num_threads(1)
    return threadpool_limits(1)


def fit_member_folds(
    family: str,
    params: dict[str, Any],
    seeds: Sequence[int],
    X: np.ndarray,
    y: np.ndarray,
    w: np.ndarray,
    groups: np.ndarray,
    train: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    preload: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Fit one member on each of its folds: model ``j`` on ``train[j]`` rows with ``seeds[j]``, predicting ``valid[j]``.

    The models are fitted through the family's ``fit_many``, so a family that
    trains several models faster together (the Keras MLP) does so; the others
    fit one by one.  ``preload`` names every family of the run: importing them
    all in the first task a worker runs keeps that worker's memory steady
    afterwards, so loky's leak check (300 MB over the size after the first
    task) does not recycle the worker, and re-import torch, each time a Keras
    task follows a tree task.

    Returns
    -------
    dict
        ``folds``: per fold a dict of ``proba`` (n_valid, n_classes) out-of-fold
        probabilities, ``model`` (native bytes) and ``sidecar`` (JSON-able dict);
        ``seconds``: wall time of the task's fits, predictions and serialisation
        (not of the first task's imports).
    """
    from stacker.metamodels import get_family

    for name in preload:
        get_family(name)  # imports Keras (and torch) for "keras"
        if name in ("xgboost", "lightgbm"):
            importlib.import_module(name)
    t0 = time.perf_counter()  # after the imports: the planner's cost model calibrates on the fits alone
    cls = get_family(family)
    out = []
    with _limit_threads(family):
        ests = [cls(**{**params, "random_state": int(s)}) for s in seeds]
        try:
            cls.fit_many(ests, [(X[tr], y[tr], w[tr], groups[tr]) for tr in train])
        except StackerError:
            raise
        except (ValueError, TypeError, _library_error(family)) as exc:
            # A value the library refuses (max_depth = -3): name the recipe's family and values, not a worker's stack.
            shown = {k: v for k, v in params.items() if k not in ("layout", "input", "device", "n_jobs")}
            raise ConfigError(
                f"a {family!r} member with {shown} could not be fitted; check the recipe's values "
                f"({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
            ) from None
        for est, va in zip(ests, valid):
            proba = est.predict_proba(X[va]) if len(va) else np.zeros((0, len(est.classes_)))
            model, sidecar = est.to_state()
            out.append({"proba": proba, "model": model, "sidecar": sidecar})
    return {"folds": out, "seconds": time.perf_counter() - t0}


def _library_error(family: str) -> type[Exception]:
    """The error class of a family's library, for a parameter value it refuses (XGBoost's is a ValueError)."""
    if family == "lightgbm":
        import lightgbm

        return lightgbm.basic.LightGBMError
    return ValueError


def effective_n_jobs(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs`` (-1 or None: every core; never more than this process may use)."""
    from joblib import effective_n_jobs as _eff

    if n_jobs is not None and (isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0):
        raise ConfigError(f"n_jobs must be a non-zero integer (-1: every core), got {n_jobs!r}")
    # More processes than cores only compete for them (-j 100000 started a pool that never finished).
    # The cores are those of the affinity mask (taskset, cpusets), as for level1's threads, not the machine's.
    return max(1, min(int(_eff(-1 if n_jobs is None else n_jobs)), available_cores()))


def check_scheduler(address: object, name: str = "scheduler") -> str:
    """A Dask scheduler address (``tcp://host:port``, or ``host:port``), stripped; a ConfigError names ``name``.

    Only the form is checked, so that a command can refuse a mistyped address before it reads its table;
    whether a scheduler answers there is found when the fits start.
    """
    import re

    if not isinstance(address, str) or not re.fullmatch(r"([a-z]+://)?[^\s:/]+:\d+", address.strip()):
        raise ConfigError(f"{name} must be a Dask scheduler address like tcp://host:port, got {address!r}")
    return address.strip()


def _call(key: Any, fn: Callable[..., Any], kwargs: dict[str, Any], shared: dict[str, Any]) -> tuple[Any, Any]:
    return key, fn(**kwargs, **shared)


def run_tasks(
    fn: Callable[..., Any],
    tasks: Iterable[tuple[Any, dict[str, Any]]],
    shared: dict[str, Any],
    *,
    n_jobs: int | None = -1,
    scheduler: str | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(key, fn(**kwargs, **shared))`` for each ``(key, kwargs)`` of ``tasks``, as they complete.

    ``tasks`` is consumed lazily, one item each time a worker is free (the
    budget planner decides what to start at that moment); no more than the
    number of workers are ever queued.  ``shared`` holds the large arrays every
    task reads: joblib memory-maps them into its workers, Dask scatters them
    once to every worker.  With ``scheduler`` (a ``tcp://host:port`` address)
    the tasks run on that Dask cluster; otherwise on ``n_jobs`` local processes
    (1: in this process).  Closing the iterator early (e.g. a pruning callback
    raised) abandons the tasks not yet started.
    """
    if scheduler:
        yield from _run_dask(fn, tasks, shared, scheduler)
    elif effective_n_jobs(n_jobs) == 1:
        for key, kwargs in tasks:
            yield _call(key, fn, kwargs, shared)
    else:
        from joblib import Parallel, delayed, parallel_config

        # batch_size=1 and pre_dispatch=n_jobs: a task is taken from the iterator only when a
        # worker frees, so the planner's decision uses the clock and calibration of that moment.
        # Every loky worker watches this process from its start, so a kill -9 leaves none behind.
        with parallel_config(backend="loky", initializer=_start_worker, initargs=(os.getpid(),)):
            par = Parallel(
                n_jobs=effective_n_jobs(n_jobs),
                return_as="generator_unordered",
                max_nbytes="1M",
                batch_size=1,
                pre_dispatch="n_jobs",
            )
        yield from par(delayed(_call)(key, fn, kw, shared) for key, kw in tasks)


_WATCHED: set[int] = set()


def _start_worker(parent: int) -> None:
    """A loky worker's initializer: sleeping OpenMP threads (before any task imports torch or a booster), and
    :func:`watch_parent`."""
    from stacker.threads import passive_openmp

    passive_openmp()
    watch_parent(parent)


def watch_parent(parent: int, interval: float = 0.5) -> None:
    """In a worker process started by ``parent``: exit as soon as ``parent`` is gone.

    A ``kill -9`` of ``stacker fit`` gives its joblib/loky (or process-pool) workers no chance to be told;
    without this they linger, holding gigabytes, until loky's idle timeout or forever.  On Linux a thread
    waits on a pidfd of ``parent``, which the kernel makes readable the moment ``parent`` exits, reaped or
    not: a worker that starts while its killed parent is still an unreaped zombie (``os.kill(pid, 0)``
    still succeeds then, and ``os.getppid()`` has already changed) exits too.  Elsewhere the thread polls
    every ``interval`` seconds for the parent pid to vanish or for this process to be re-parented (there a
    worker that starts beside an unreaped parent is not caught).  Once the parent is gone, an uncaught
    exception (a broken pipe to it) ends the worker without a traceback.
    Nothing is watched in ``parent`` itself.  Idempotent per process; meant as the initializer of a pool
    that ``parent`` owns (loky, ``ProcessPoolExecutor``).
    """
    if os.getpid() == parent or parent in _WATCHED:
        return
    _WATCHED.add(parent)
    try:
        pidfd = os.pidfd_open(parent)
    except ProcessLookupError:  # already gone (and reaped)
        os._exit(1)
    except (AttributeError, OSError):  # not Linux >= 5.3 / Python >= 3.9: poll instead
        pass
    else:
        _quiet_once_orphaned(lambda: _readable(pidfd, timeout=1.0))
        threading.Thread(target=_exit_when_readable, args=(pidfd,), name="stacker-watch-parent", daemon=True).start()
        return
    if not _pid_alive(parent):
        os._exit(1)
    ppid = os.getppid()

    def gone() -> bool:
        return os.getppid() != ppid or not _pid_alive(parent)

    def poll() -> None:
        while True:
            time.sleep(interval)
            if gone():
                os._exit(1)

    def gone_soon() -> bool:
        time.sleep(2 * interval)  # the broken pipe can come before the parent's pid is gone
        return gone()

    _quiet_once_orphaned(gone_soon)
    threading.Thread(target=poll, name="stacker-watch-parent", daemon=True).start()


def _readable(fd: int, timeout: float | None = None) -> bool:
    import select

    return bool(select.select([fd], [], [], timeout)[0])  # a pidfd is readable once its process has exited


def _exit_when_readable(pidfd: int) -> None:
    _readable(pidfd)
    os._exit(1)


def _quiet_once_orphaned(gone: Callable[[], bool]) -> None:
    """Make an uncaught exception end this worker silently when its parent is gone (``gone()`` waits a moment).

    When the parent dies its pipes close before the kernel wakes the watcher, so a thread of the worker can
    meet the broken pipe first (``multiprocessing.resource_sharer``, serving a tensor's file descriptor to the
    parent, met ``EOFError``) and print a traceback for a failure that is only the kill.  Any other
    exception is reported as before, once ``gone()`` has said no.
    """
    import sys

    sys_hook, thread_hook = sys.excepthook, threading.excepthook

    def on_exception(*exc: Any) -> None:
        if gone():
            os._exit(1)
        sys_hook(*exc)

    def on_thread_exception(args: Any) -> None:
        if gone():
            os._exit(1)
        thread_hook(args)

    sys.excepthook = on_exception
    threading.excepthook = on_thread_exception


def _run_dask(fn, tasks, shared, scheduler: str) -> Iterator[tuple[Any, Any]]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ConfigError(f"a Dask scheduler needs dask.distributed: pip install 'stacker[tune]' ({exc})") from None
    try:
        client = Client(check_scheduler(scheduler), timeout="20s", set_as_default=False)
    except (OSError, ValueError, TypeError) as exc:  # unreachable, or not an address ('missing port number')
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc})") from None
    try:
        remote = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
        slots = max(1, sum(client.nthreads().values()))
        pending = iter(tasks)
        # The client is not the default one, so as_completed needs its loop.
        running = as_completed([], loop=client.loop)
        submitted = []

        def submit_one() -> None:
            for key, kw in pending:
                fut = client.submit(_call, key, fn, kw, remote, pure=False)
                submitted.append(fut)
                running.add(fut)
                return

        for _ in range(slots):
            submit_one()
        try:
            for fut in running:
                yield fut.result()
                submit_one()  # after the caller has recorded the result
        finally:
            client.cancel(submitted)
    finally:
        client.close()


# ---------------------------------------------------------------------- planning a Blend's fits
def fits_jointly(family: str) -> bool:
    """Whether the family overrides ``fit_many`` (fits several models faster together)."""
    from stacker.metamodels import FAMILIES
    from stacker.metamodels._base import MetaModel

    module, name = FAMILIES[family]  # the module alone: Keras itself is imported by the workers
    cls = getattr(importlib.import_module(module), name)
    return getattr(cls.fit_many, "__func__", None) is not getattr(MetaModel.fit_many, "__func__", None)


def task_seed(member_seed: int, fold: int) -> int:
    """The training seed of a member's fold model: a function of the two, whatever the schedule."""
    return int(np.random.default_rng([member_seed, fold]).integers(2**31 - 1))


def plan_fits(
    members: Sequence[Any],
    kwargs: Sequence[dict[str, Any]],
    train_rows: Sequence[np.ndarray],
    n_features: int,
    n_classes: int,
    n_models: int,
    n_jobs: int | None,
    time_limit: float | None,
    started: float,
):
    """The :class:`~stacker.planner.Planner` of a Blend's (member, folds) tasks.

    Without a budget: a family that trains a member's fold models together (the Keras MLP batches
    them into one network) gets one task per member, queued first: they are the longest tasks.  The
    rest run fold-major, so early folds finish first and ``on_fold`` can prune a trial early; within a
    fold the likely-longest fits go first, so the run does not end on one long fit and an idle core.
    With a budget the planner orders members by expected gain per second instead.
    """
    from stacker.planner import CostModel, Planner, Work

    n_folds = len(train_rows)
    joint = {fam for fam in {m.family for m in members} if fits_jointly(fam)}
    tasks = [[list(range(n_folds))] if m.family in joint else [[f] for f in range(n_folds)] for m in members]
    cost = CostModel(Work(int(np.mean([len(r) for r in train_rows])), n_features, n_classes, n_models))
    by_cost = sorted(range(len(members)), key=lambda i: cost.raw(members[i].family, kwargs[i]), reverse=True)
    order = [(mi, list(range(n_folds))) for mi in by_cost if members[mi].family in joint]
    order += [(mi, [f]) for f in range(n_folds) for mi in by_cost if members[mi].family not in joint]
    return Planner(
        [(m.name, m.family, kwargs[i], tasks[i]) for i, m in enumerate(members)],
        cost,
        effective_n_jobs(n_jobs),
        time_limit,
        order=order,
        n_folds=n_folds,
        start=started,
    )


def member_tasks(
    planner: Any, members: Sequence[Any], train_rows: Sequence[np.ndarray], fold_rows: Sequence[np.ndarray]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The planner's tasks as :func:`fit_member_folds` arguments, handed out as workers free up."""
    while (t := planner.next_task()) is not None:
        m = members[t.member]
        yield (
            t.index,
            {
                "family": m.family,
                "params": t.params,
                "seeds": [task_seed(m.seed, f) for f in t.folds],
                "train": [train_rows[f] for f in t.folds],
                "valid": [fold_rows[f] for f in t.folds],
            },
        )

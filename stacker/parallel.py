"""Running many (member, fold) fits: locally with joblib, or on a Dask cluster.

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
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from stacker.errors import ConfigError

__all__ = ["fit_member_folds", "run_tasks", "effective_n_jobs"]


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
        ``seconds``: wall time of the whole task.
    """
    from stacker.metamodels import get_family

    t0 = time.perf_counter()
    for name in preload:
        get_family(name)  # imports Keras (and torch) for "keras"
        if name in ("xgboost", "lightgbm"):
            importlib.import_module(name)
    cls = get_family(family)
    out = []
    with _limit_threads(family):
        ests = [cls(**{**params, "random_state": int(s)}) for s in seeds]
        cls.fit_many(ests, [(X[tr], y[tr], w[tr], groups[tr]) for tr in train])
        for est, va in zip(ests, valid):
            proba = est.predict_proba(X[va]) if len(va) else np.zeros((0, len(est.classes_)))
            model, sidecar = est.to_state()
            out.append({"proba": proba, "model": model, "sidecar": sidecar})
    return {"folds": out, "seconds": time.perf_counter() - t0}


def effective_n_jobs(n_jobs: int | None) -> int:
    from joblib import effective_n_jobs as _eff

    return int(_eff(-1 if n_jobs is None else n_jobs))


def _call(index: int, fn: Callable[..., Any], kwargs: dict[str, Any], shared: dict[str, Any]) -> tuple[int, Any]:
    return index, fn(**kwargs, **shared)


def run_tasks(
    fn: Callable[..., Any],
    tasks: Sequence[dict[str, Any]],
    shared: dict[str, Any],
    *,
    n_jobs: int | None = -1,
    scheduler: str | None = None,
    progress: bool = False,
    desc: str = "fits",
) -> Iterator[tuple[int, Any]]:
    """Yield ``(task index, fn(**task, **shared))`` as tasks complete, in any order.

    ``shared`` holds the large arrays every task reads: joblib memory-maps them
    into its workers, Dask scatters them once to every worker.  With
    ``scheduler`` (a ``tcp://host:port`` address) the tasks run on that Dask
    cluster; otherwise on ``n_jobs`` local processes (1: in this process).
    Closing the iterator early (e.g. a pruning callback raised) abandons the
    remaining tasks.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc=desc, disable=not progress, leave=False)
    try:
        if scheduler:
            gen = _run_dask(fn, tasks, shared, scheduler)
        elif effective_n_jobs(n_jobs) == 1 or len(tasks) <= 1:
            gen = (_call(i, fn, t, shared) for i, t in enumerate(tasks))
        else:
            from joblib import Parallel, delayed

            par = Parallel(n_jobs=n_jobs, return_as="generator_unordered", max_nbytes="1M")
            gen = par(delayed(_call)(i, fn, t, shared) for i, t in enumerate(tasks))
        for item in gen:
            bar.update(1)
            yield item
    finally:
        bar.close()


def _run_dask(fn, tasks, shared, scheduler: str) -> Iterator[tuple[int, Any]]:
    try:
        from distributed import Client, as_completed
    except ImportError as exc:
        raise ConfigError(f"a Dask scheduler needs dask.distributed: pip install 'stacker[tune]' ({exc})") from None
    try:
        client = Client(scheduler, timeout="20s", set_as_default=False)
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler!r} ({exc})") from None
    try:
        remote = {k: client.scatter(v, broadcast=True) for k, v in shared.items()}
        futures = [client.submit(_call, i, fn, t, remote, pure=False) for i, t in enumerate(tasks)]
        try:
            # The client is not the default one, so as_completed needs its loop.
            for fut in as_completed(futures, loop=client.loop):
                yield fut.result()
        finally:
            client.cancel(futures)
    finally:
        client.close()

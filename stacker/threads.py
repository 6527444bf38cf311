"""CPU threads for torch (and the other OpenMP code) that hold up when the cores are shared.

Two settings decide what a CPU run costs on a machine that other work also uses
(a laptop, a notebook kernel, a CI runner); ``benchmarks/bench_cpu_share.py``
measures both (one level1 run of the demo, alone and beside two busy processes, on
2 cores: the defaults below took 0.35x the CPU time and 0.46x the wall time of torch's
defaults beside the busy processes, and 0.75x / 0.96x alone):

- **The OpenMP wait policy.**  By default an OpenMP thread that runs out of work
  spins for a while before it sleeps, so every torch operator burns CPU time
  between parallel regions; on busy cores the spinning threads also take
  turns from the ones doing the work.  :func:`passive_openmp` asks for
  ``OMP_WAIT_POLICY=PASSIVE`` (sleep at once) unless the user chose a policy.
  The runtime reads it once, when it loads, so the command-line entry points
  call it before torch, XGBoost or LightGBM are imported; a library user who
  imports torch first sets ``OMP_WAIT_POLICY`` themselves.
- **The intra-op thread count.**  :func:`default_threads` is what ``level1`` and
  ``stacker demo`` use unless told otherwise (``--threads``, ``threads=``): one thread
  for inputs smaller than :data:`SPLIT_FROM` pixels a side, whose operators are too small
  to split (``bench_cpu_share.py --sizes``, resnet10t training on 2 cores, img/s with 1 and
  2 threads: 164 / 100 at 16 px, 75 / 82 at 48 px, 33 / 43 at 96 px, 6.1 / 9.9 at 224 px;
  beside two busy processes 52 / 53 at 48 px; the threshold is conservative, see the README);
  from there every core this process may use, less the DataLoader workers (each worker
  is a process that takes a core of its own).  The Blend's members run with one thread
  each, side by side (:mod:`stacker.parallel`).
"""

from __future__ import annotations

import os

from stacker.errors import ConfigError

__all__ = [
    "SPLIT_FROM",
    "available_cores",
    "cap_workers",
    "check_threads",
    "default_threads",
    "passive_openmp",
    "set_torch_threads",
]

#: Inputs at least this many pixels a side get more than one default thread (see above).
SPLIT_FROM = 128


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def passive_openmp() -> None:
    """Ask the OpenMP runtime to let idle threads sleep, not spin, unless ``OMP_WAIT_POLICY`` is set.

    Takes effect only in a process that has not loaded an OpenMP runtime yet, and in
    the worker processes it starts afterwards (they inherit the environment).
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def check_threads(threads: object, *, name: str = "threads") -> int | None:
    """``None`` (the default) or a positive integer, checked; a ConfigError names the option."""
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ConfigError(f"option {name} must be a positive integer (or left out for the default), got {threads!r}")
    return threads


def default_threads(workers: int = 0, size: int | None = None) -> int:
    """Intra-op threads for a torch run on the CPU on ``size``-pixel inputs with ``workers`` DataLoader workers.

    One below :data:`SPLIT_FROM` pixels (or with no size given), else the free cores.
    """
    if size is None or size < SPLIT_FROM:
        return 1
    return max(1, available_cores() - max(0, int(workers)))


def cap_workers(workers: int) -> int:
    """DataLoader workers for a CPU run: at most the cores less one, which the training threads need.

    More workers than that only take turns on the cores with the model (each is a process of its own).
    """
    return max(0, min(int(workers), available_cores() - 1))


def set_torch_threads(threads: int | None = None, *, workers: int = 0, size: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); return the number set."""
    import torch

    n = check_threads(threads) or default_threads(workers, size)
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    return n

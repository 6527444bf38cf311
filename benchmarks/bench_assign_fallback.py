"""Which exact solver when numba is absent: the interpreted kernels, the compiled ones, OR-Tools' min-cost flow.

One run, same inputs (``bench_equalize.make_probs``, equal quotas), best of ``--repeat``:

* ``interpreted``: stacker's kernels with ``STACKER_JIT=0`` (the SSP loop in Python);
* ``compiled``: the same kernels compiled by numba (loaded from the on-disk cache);
* ``or-tools``: ``SimpleMinCostFlow`` on source -> rows -> classes -> sink, costs
  ``round(-log p * 1e6)`` (min-cost flow needs integers), arcs added from NumPy arrays.

Run:  python benchmarks/bench_assign_fallback.py [--sizes 2640x10,100000x10,100000x100] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_equalize import make_probs  # noqa: E402
from stacker.equalize import assignment_objective, resolve_quota, solve_assignment  # noqa: E402

SCALE = 1e6


def ortools_assign(P: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, float]:
    """Exact min-cost flow on integer costs; ``(assignment, build seconds)``."""
    from ortools.graph.python import min_cost_flow

    t0 = time.perf_counter()
    n, k = P.shape
    src, sink = n + k, n + k + 1
    rows = np.arange(n)
    cost = np.rint(-np.log(np.maximum(P, 1e-300)) * SCALE).astype(np.int64)
    tails = np.concatenate([np.full(n, src), np.repeat(rows, k), n + np.arange(k)])
    heads = np.concatenate([rows, np.tile(n + np.arange(k), n), np.full(k, sink)])
    caps = np.concatenate([np.ones(n * (k + 1), np.int64), counts.astype(np.int64)])
    costs = np.concatenate([np.zeros(n, np.int64), cost.ravel(), np.zeros(k, np.int64)])
    flow = min_cost_flow.SimpleMinCostFlow()
    arcs = flow.add_arcs_with_capacity_and_unit_cost(tails, heads, caps, costs)
    flow.set_nodes_supplies(np.array([src, sink]), np.array([n, -n]))
    build = time.perf_counter() - t0
    if flow.solve() != flow.OPTIMAL:
        raise RuntimeError("OR-Tools did not find an optimal flow")
    used = flow.flows(arcs[n : n + n * k]).reshape(n, k)
    return np.argmax(used, axis=1), build


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2640x10,100000x10,100000x100")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--interpreted-max", type=int, default=10**7, help="skip the interpreted solver above N*K")
    args = ap.parse_args()
    from stacker._assign_kernels import kernels

    kernels.compile()
    print(f"exact assignment without numba: cpu count {os.cpu_count()}, load avg {os.getloadavg()[0]:.1f}")
    print(
        f"{'N':>9} {'K':>4} {'interpreted s':>14} {'compiled s':>11} {'or-tools s':>11} {'(build s)':>10} "
        f"{'or-tools / compiled':>20} {'objective gap':>14}"
    )
    for size in args.sizes.split(","):
        n, k = (int(v) for v in size.split("x"))
        P = make_probs(n, k)
        lo, up = resolve_quota(None, n, [str(i) for i in range(k)])
        solve_assignment(P[:2000], *resolve_quota(None, 2000, [str(i) for i in range(k)]))  # warm the kernels
        os.environ["STACKER_JIT"] = "1"
        t_jit, (a, _) = best(lambda: solve_assignment(P, lo, up), args.repeat)
        if n * k <= args.interpreted_max:
            os.environ["STACKER_JIT"] = "0"
            t_py, (a_py, _) = best(lambda: solve_assignment(P, lo, up), 1)
            assert np.array_equal(a_py, a)
        else:
            t_py = float("nan")
        os.environ.pop("STACKER_JIT")
        try:
            t_or, (b, build) = best(lambda: ortools_assign(P, lo), args.repeat)
            gap = assignment_objective(P, a) - assignment_objective(P, b)
            print(
                f"{n:>9,} {k:>4} {t_py:>14.2f} {t_jit:>11.3f} {t_or:>11.3f} {build:>10.3f} "
                f"{t_or / t_jit:>19.1f}x {gap:>14.3e}",
                flush=True,
            )
        except ImportError:
            print(f"{n:>9,} {k:>4} {t_py:>14.2f} {t_jit:>11.3f} {'-':>11} (pip install ortools)", flush=True)
    print(
        "objective gap = ours - or-tools (total log-probability; >= 0: ours is at least as good; OR-Tools "
        "optimises costs rounded to 1e-6)"
    )


if __name__ == "__main__":
    main()

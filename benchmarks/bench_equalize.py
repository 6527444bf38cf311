"""Equalization bars: exact equalizer vs scipy's expanded-matrix Hungarian; CIFAR-10 accuracy.

Part 1 (speed): for each N and K, time and peak extra memory of
:func:`stacker.equalize.solve_assignment` and, where N <= --scipy-max, of
``scipy.optimize.linear_sum_assignment`` on the N x N expanded matrix, in the
same run, with both objectives compared.  Each case runs in a fresh subprocess
so that peak memory (Linux VmHWM, reset before the solve) is the solve's own.
Inputs: classifier-like rows (Dirichlet(0.3) plus a peak at a balanced "true"
class) with a mild class bias, so the plain argmax misses the quotas.

Part 2 (accuracy): on ../shared/data/cifar10-5models (1,000 rows per class),
accuracy before and after exact and greedy equalization, for each model and the
mean; ``--table FILE [--table-model NAME]`` adds lines for another prediction
table on the same rows (e.g. the Blend's output).

    python benchmarks/bench_equalize.py                      # everything
    python benchmarks/bench_equalize.py --skip-cifar --sizes 2640,1000000 --classes 10
    python benchmarks/bench_equalize.py --scipy-max 10000    # scipy at N=10,000 too (~2 min, ~840 MB)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CIFAR = ROOT.parent / "shared" / "data" / "cifar10-5models" / "probs.parquet"


def make_probs(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % k)
    alpha = np.full((n, k), 0.3)
    alpha[np.arange(n), y] += 3.0
    g = rng.standard_gamma(alpha)
    g *= 1.0 + 0.5 * np.arange(k) / (k - 1)  # mild bias: later classes are over-predicted
    g /= g.sum(axis=1, keepdims=True)
    return g


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _measure(fn):
    """(result, seconds, peak extra MiB over the RSS before the call)."""
    import gc

    gc.collect()
    ok = _reset_peak()
    base = _rss_kb("VmRSS")
    t = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t
    peak = (_rss_kb("VmHWM") - base) / 1024 if ok else float("nan")
    return out, dt, peak


def case(n: int, k: int, scipy_max: int, repeat: int) -> dict:
    """One (N, K) case; runs in a fresh process."""
    from stacker._assign_kernels import kernels
    from stacker.equalize import assignment_objective, resolve_quota, solve_assignment

    kernels.compile()  # load (or compile) the numba kernels outside the timings
    warm = make_probs(2000, k, seed=1)
    lo, up = resolve_quota(None, 2000, [str(i) for i in range(k)])
    solve_assignment(warm, lo, up)

    P = make_probs(n, k)
    lo, up = resolve_quota(None, n, [str(i) for i in range(k)])
    moved = int(np.abs(np.bincount(np.argmax(P, axis=1), minlength=k) - lo).sum() // 2)
    times, peaks = [], []
    for _ in range(repeat):
        (a, prices), dt, peak = _measure(lambda: solve_assignment(P, lo, up))
        times.append(dt)
        peaks.append(peak)
    # The same solve through the estimator on a plain array: validation, grouping, output probabilities.
    from stacker.equalize import HungarianEqualizer

    est_times = []
    for _ in range(repeat):
        labels, dt, _ = _measure(lambda: HungarianEqualizer().fit_predict(P))
        est_times.append(dt)
    if not np.array_equal(labels, a):  # pragma: no cover - a bug
        raise SystemExit(f"HungarianEqualizer().fit_predict differs from solve_assignment at {n} x {k}")
    res = {
        "estimator_s": min(est_times),
        "n": n,
        "k": k,
        "quota_lo": int(lo.min()),
        "quota_hi": int(up.max()),
        "argmax_off": moved,
        "ours_s": min(times),
        "ours_median_s": float(np.median(times)),
        "ours_peak_mib": max(peaks),
        "input_mib": P.nbytes / 2**20,
        "ours_obj": assignment_objective(P, a),
    }
    if n <= scipy_max:
        from scipy.optimize import linear_sum_assignment

        def scipy_solve():
            # The expanded matrix needs exact column counts: floor/ceil bounds are
            # resolved to our solution's counts (the data's choice), which is optimal.
            counts = np.bincount(a, minlength=k)
            cols = np.repeat(np.arange(k), counts)
            C = -np.log(np.maximum(P, 1e-300))[:, cols]
            r, c = linear_sum_assignment(C)
            return float(-C[r, c].sum())

        obj, dt, peak = _measure(scipy_solve)
        res.update(scipy_s=dt, scipy_peak_mib=peak, scipy_obj=obj)
    return res


def _child(args: list[str]) -> dict:
    n, k, scipy_max, repeat = map(int, args)
    return case(n, k, scipy_max, repeat)


def first_call_seconds() -> dict:
    """A fresh process: import + first solve of a 2,640 x 10 table (interpreted by default),
    and with STACKER_JIT=1 (numba kernels loaded from the on-disk cache, or compiled)."""
    code = (
        "import time; t=time.perf_counter();"
        "from benchmarks.bench_equalize import make_probs;"
        "from stacker.equalize import solve_assignment;"
        "import numpy as np; P=make_probs(2640,10); t1=time.perf_counter();"
        "solve_assignment(P, np.full(10,264)); t2=time.perf_counter();"
        "print(t2-t1)"
    )
    out = {}
    for label, env in (("default", {}), ("STACKER_JIT=1", {"STACKER_JIT": "1"})):
        r = subprocess.run(
            [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
        )
        out[label] = float(r.stdout.strip()) if r.returncode == 0 else r.stderr[-300:]
    return out


def speed(sizes: list[int], classes: list[int], scipy_max: int, repeat: int) -> None:
    print(
        f"exact equalizer vs scipy expanded-matrix Hungarian (cpu count {os.cpu_count()}, "
        f"load avg {os.getloadavg()[0]:.1f})"
    )
    head = (
        f"{'N':>9} {'K':>4} {'off':>7} {'ours ms':>9} {'med ms':>9} {'est. ms':>9} {'ours MiB':>9} {'input MiB':>9} "
        f"{'scipy ms':>9} {'scipy MiB':>9} {'speed-up':>9} {'objective diff':>15}"
    )
    print(head)
    ctx = mp.get_context("spawn")
    for k in classes:
        for n in sizes:
            with ctx.Pool(1) as pool:
                r = pool.apply(
                    _child, ([str(n), str(k), str(scipy_max), str(repeat if n < 10**6 else max(2, repeat // 2))],)
                )
            line = (
                f"{r['n']:>9,} {r['k']:>4} {r['argmax_off']:>7,} {r['ours_s'] * 1e3:>9.2f} "
                f"{r['ours_median_s'] * 1e3:>9.2f} "
                f"{r['estimator_s'] * 1e3:>9.2f} {r['ours_peak_mib']:>9.1f} {r['input_mib']:>9.1f}"
            )
            if "scipy_s" in r:
                diff = r["ours_obj"] - r["scipy_obj"]
                line += (
                    f" {r['scipy_s'] * 1e3:>9.1f} {r['scipy_peak_mib']:>9.1f} "
                    f"{r['scipy_s'] / r['ours_s']:>8.0f}x {diff:>15.3e}"
                )
            else:
                line += f" {'-':>9} {'-':>9} {'-':>9} {'-':>15}"
            print(line, flush=True)
    print(
        "off = rows the plain argmax puts over the quotas; ours = solve_assignment, best of repeats, med = their "
        "median; est. = HungarianEqualizer().fit_predict on the array (its validation and grouping included), best; "
        "MiB = peak RSS over the RSS before the call"
    )
    print(f"load avg after: {os.getloadavg()[0]:.1f}")
    print(f"first solve of 2,640 x 10 in a fresh process (s): {json.dumps(first_call_seconds())}")


def cifar(table_path: Path | None, table_model: str | None) -> None:
    from stacker.equalize import GreedyEqualizer, HungarianEqualizer
    from stacker.table import PredictionTable, read_table

    if not CIFAR.exists():
        print(f"CIFAR-10 table not found at {CIFAR}: skipped")
        return
    from stacker._assign_kernels import kernels

    kernels.compile()  # the same (compiled) kernels as part 1; a 10,000 x 10 table alone would run interpreted
    t = read_table(CIFAR)
    y = t.y
    rows: list[tuple[str, PredictionTable]] = [(m, t.select_models([m])) for m in t.models]
    rows.append(("mean of 5", t))
    if table_path is not None:
        extra = read_table(table_path)
        if list(extra.ids) != list(t.ids):
            order = {v: i for i, v in enumerate(extra.ids)}
            extra = extra.take([order[v] for v in t.ids])
        rows.append(
            (
                f"{table_path.name}:{table_model or 'mean'}",
                extra if table_model is None else extra.select_models([table_model]),
            )
        )
    print("\nCIFAR-10 (10,000 rows, 1,000 per class): accuracy before / after equalization")
    print(f"{'predictions':>22} {'argmax':>8} {'exact':>8} {'iterative':>10} {'topk':>8} {'exact ms':>9}")
    for name, table in rows:
        P = table.probs.mean(axis=1)
        before = float(np.mean(np.argmax(P, axis=1) == y))
        t0 = time.perf_counter()
        ex = HungarianEqualizer().fit(table)
        ms = (time.perf_counter() - t0) * 1e3
        it = GreedyEqualizer(method="iterative").fit(table)
        tk = GreedyEqualizer(method="topk").fit(table)
        accs = [float(np.mean(e.assignment_ == y)) for e in (ex, it, tk)]
        print(f"{name:>22} {before:>8.4f} {accs[0]:>8.4f} {accs[1]:>10.4f} {accs[2]:>8.4f} {ms:>9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="2640,10000,100000,1000000")
    ap.add_argument("--classes", default="10,100")
    ap.add_argument("--scipy-max", type=int, default=2640, help="run scipy up to this N (10,000 takes ~2 min)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-cifar", action="store_true")
    ap.add_argument("--table", type=Path, help="extra predictions on the CIFAR rows (e.g. a Blend output)")
    ap.add_argument("--table-model", help="model of --table to use (default: mean of its models)")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    if not args.skip_speed:
        speed(
            [int(s) for s in args.sizes.split(",")],
            [int(s) for s in args.classes.split(",")],
            args.scipy_max,
            args.repeat,
        )
    if not args.skip_cifar:
        cifar(args.table, args.table_model)


if __name__ == "__main__":
    main()

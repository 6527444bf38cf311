"""CPU-seconds and wall time of one level-1 run alone and beside busy processes, before and after.

    python benchmarks/bench_cpu_share.py [--busy 2] [--epochs 1] [--steps 20] [--grid]
    python benchmarks/bench_cpu_share.py --sizes 48,96,224 [--busy 2]

The run is the demo's first CNN (resnet10t on the demo's real digit images, 2-fold
out-of-fold training plus the test predictions) as ``level1 oof`` runs it:

- **before**: torch's default intra-op threads (one per core) and the OpenMP runtime's
  default wait policy (idle threads spin before they sleep): what level1 did until it
  chose its own threads;
- **after**: the ``level1`` command with its defaults (``OMP_WAIT_POLICY=PASSIVE``,
  :func:`stacker.threads.default_threads` threads);
- ``--grid`` adds the two mixed settings (spinning with one thread, sleeping with one per
  core), which tell the two changes apart.

``--sizes`` measures instead where a second thread starts to pay, which is
:data:`stacker.threads.SPLIT_FROM`: resnet10t training steps (batch 16, random
images, ``OMP_WAIT_POLICY=PASSIVE``) in images per second at each input size with one
thread and with one per core, alone and beside ``--busy`` busy processes.

Each setting runs alone, then beside ``--busy`` processes that spin in a Python loop
(other work on the same cores).  CPU-seconds are the run's own user + system time
(``os.wait4``, its DataLoader workers included), not the busy loops'.  The machine is
shared and noisy: compare the lines of one run, not the numbers of two runs.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The child: a level1 OOF run with the given threads (0: level1's default, -1: torch's own) and wait policy.
CHILD = r"""
import sys
from level1 import Level1Config, train_oof
threads, data, out, epochs, steps = sys.argv[1:6]
cfg = Level1Config(
    data=data, folds=2, seed=0, crop=16, d4=False, manip_prob=0.5, model="resnet10t", batch_size=64,
    epochs=int(epochs), steps_per_epoch=int(steps), lr=1e-2, schedule="cosine", top_k=1, val_max_images=300,
    views=["identity"], manip_pattern="_manip", device="cpu", progress=False,
    threads=max(int(threads), 0) or None,
)
if int(threads) < 0:
    import torch
    cfg = cfg.replace(threads=torch.get_num_threads())  # torch's default: level1 before it chose
train_oof(cfg, out, overwrite=True, log=lambda m: None)
"""


# The child of --sizes: train-step throughput of resnet10t at one input size and thread count.
RATE = r"""
import sys, time
import timm, torch
threads, size, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = timm.create_model("resnet10t", num_classes=10)
opt = torch.optim.Adam(model.parameters())
x, y = torch.randn(16, 3, size, size), torch.randint(0, 10, (16,))
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
step()
t0, n = time.perf_counter(), 0
while time.perf_counter() - t0 < seconds:
    step()
    n += 16
print(n / (time.perf_counter() - t0))
"""


def _busy(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _sizes(a: argparse.Namespace, cores: int) -> None:
    sizes = [int(v) for v in a.sizes.split(",")]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    print(f"resnet10t training, batch 16, img/s with 1 / {cores} threads (PASSIVE), {a.seconds:g} s each", flush=True)
    for busy in sorted({0, a.busy}):
        for size in sizes:
            rates = []
            for threads in (1, cores):
                loops = _busy(busy)
                try:
                    out = subprocess.run(
                        [sys.executable, "-c", RATE, str(threads), str(size), str(a.seconds)],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                finally:
                    for p in loops:
                        p.kill()
                        p.wait()
                rates.append(float(out.stdout.strip().splitlines()[-1]))
            print(
                f"  {size:4d} px, {busy} busy: {rates[0]:6.1f} / {rates[1]:6.1f} img/s "
                f"({rates[1] / rates[0]:.2f}x with {cores} threads)",
                flush=True,
            )


def _images(root: Path) -> Path:
    from stacker.apps.demo import make_digit_images

    manifests = make_digit_images(root)
    csv = root / "holdout.csv"
    manifests["holdout"].to_csv(csv, index=False)
    return csv


def _run(
    setting: str, threads: int, policy: str | None, busy: int, data: Path, out: Path, a: argparse.Namespace
) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    loops = _busy(busy)
    try:
        time.sleep(0.5 if busy else 0.0)
        t0 = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(threads), str(data), str(out), str(a.epochs), str(a.steps)], env=env
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - t0
    finally:
        for p in loops:
            p.kill()
            p.wait()
    if status != 0:
        raise SystemExit(f"{setting}: the level1 run failed (status {status})")
    return {"setting": setting, "busy": busy, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="busy-loop processes beside the run (2)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per fold (1)")
    ap.add_argument("--steps", type=int, default=20, help="batches of 64 per epoch (20)")
    ap.add_argument("--grid", action="store_true", help="also the two mixed settings")
    ap.add_argument("--sizes", help="instead: img/s at these input sizes with 1 thread and one per core")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per --sizes measurement (8)")
    a = ap.parse_args()

    from stacker.threads import available_cores, default_threads

    cores = available_cores()
    if a.sizes:
        _sizes(a, cores)
        return
    import torch

    settings = [("before", -1, None), ("after", 0, "PASSIVE")]
    if a.grid:
        settings[1:1] = [("spin, 1 thread", 1, None), (f"sleep, {torch.get_num_threads()} threads", -1, "PASSIVE")]
    print(
        f"level1 oof resnet10t, 2 folds x {a.epochs} epoch(s) x {a.steps} batches of 64 on {cores} cores "
        f"(torch default {torch.get_num_threads()} threads; after: {default_threads()} thread(s), PASSIVE)",
        flush=True,
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = _images(Path(tmp) / "images")
        for name, threads, policy in settings:
            for busy in (0, a.busy):
                r = _run(name, threads, policy, busy, data, Path(tmp) / "run", a)
                rows.append(r)
                print(f"  {name:<20} busy {busy}: wall {r['wall']:7.1f} s   CPU {r['cpu']:7.1f} s", flush=True)
    head = ("wall alone", "wall busy", "CPU alone", "CPU busy")
    print(f"\n{'setting':<20} " + " ".join(f"{h:>10}" for h in head) + f" {'busy/alone CPU':>15}")
    for name, _, _ in settings:
        alone = next(r for r in rows if r["setting"] == name and r["busy"] == 0)
        beside = next(r for r in rows if r["setting"] == name and r["busy"] == a.busy)
        print(
            f"{name:<20} {alone['wall']:9.1f}s {beside['wall']:9.1f}s {alone['cpu']:9.1f}s {beside['cpu']:9.1f}s "
            f"{beside['cpu'] / alone['cpu']:14.2f}x"
        )
    first = {r["busy"]: r for r in rows if r["setting"] == "before"}
    last = {r["busy"]: r for r in rows if r["setting"] == "after"}
    print(
        f"\nafter / before beside {a.busy} busy processes: wall {last[a.busy]['wall'] / first[a.busy]['wall']:.2f}x, "
        f"CPU {last[a.busy]['cpu'] / first[a.busy]['cpu']:.2f}x; alone: wall "
        f"{last[0]['wall'] / first[0]['wall']:.2f}x, CPU {last[0]['cpu'] / first[0]['cpu']:.2f}x"
    )


if __name__ == "__main__":
    main()

"""Throughput of the holdout package: scan files/s, manipulations/s, duplicate search.

Run: ``python benchmarks/bench_holdout.py [--quick]``.  Uses ../shared/data when present
(real EXIF samples and camera crops) and synthetic phone-sized JPEGs otherwise/also.
Prints tables of numbers; timings are best of a few repeats.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from holdout.filter import near_duplicate_pairs
from holdout.manipulate import BACKENDS, MANIPULATIONS, manipulate
from holdout.scan import list_files, scan_files

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _phone_jpegs(folder: Path, n: int, size=(4032, 3024)) -> list[str]:
    rng = np.random.default_rng(0)
    small = (rng.random((size[1] // 16, size[0] // 16, 3)) * 255).astype(np.uint8)
    base = Image.fromarray(small).resize(size, Image.BICUBIC)
    paths = []
    for i in range(n):
        p = folder / f"phone_{i:02d}.jpg"
        base.rotate(i).save(p, quality=95)
        paths.append(str(p))
    return paths


def bench_scan(quick: bool) -> None:
    print("scan throughput")
    print(f"{'set':<32}{'files':>6}{'jobs':>6}{'files/s':>10}{'MB/s':>8}")
    sets = []
    if (SHARED / "exif-samples").is_dir():
        sets.append(("exif-samples (real, mixed)", list_files(SHARED / "exif-samples")))
    tmp = tempfile.TemporaryDirectory()
    sets.append(("12 MP phone JPEGs (synthetic)", _phone_jpegs(Path(tmp.name), 4 if quick else 12)))
    for name, files in sets:
        mb = sum(Path(f).stat().st_size for f in files) / 1e6
        for jobs in (1, 2):
            t = _best(lambda: scan_files(files, jobs=jobs), 1 if quick else 2)
            print(f"{name:<32}{len(files):>6}{jobs:>6}{len(files) / t:>10.1f}{mb / t:>8.1f}")
    tmp.cleanup()


def bench_manipulate(quick: bool) -> None:
    rng = np.random.default_rng(1)
    src = np.asarray(Image.fromarray((rng.random((128, 128, 3)) * 255).astype(np.uint8)).resize((1100, 1100)))
    print("\nmanipulations/s (1024x1024 centre crop -> manipulate -> 512x512)")
    print(f"{'kind':<12}" + "".join(f"{b:>10}" for b in BACKENDS))
    n = 3 if quick else 10
    for kind in MANIPULATIONS:
        rates = []
        for backend in BACKENDS:
            t = _best(lambda: [manipulate(src, kind, size=512, backend=backend) for _ in range(n)], 2)
            rates.append(n / t)
        print(f"{kind:<12}" + "".join(f"{r:>10.1f}" for r in rates))


def bench_dedupe(quick: bool) -> None:
    print("\nnear-duplicate search (pigeonhole on 64-bit pHash)")
    print(f"{'hashes':>8}{'threshold':>10}{'seconds':>9}{'pairs':>7}")
    rng = np.random.default_rng(2)
    for n in (10_000,) if quick else (10_000, 50_000):
        h = rng.integers(0, 2**63, size=n, dtype=np.int64).astype(np.uint64)
        h[n // 2 :: 97] = h[: len(h[n // 2 :: 97])] ^ np.uint64(0b101)  # planted near duplicates
        for thr in (4, 6):
            t = time.perf_counter()
            i, _, _ = near_duplicate_pairs(h, thr)
            print(f"{n:>8}{thr:>10}{time.perf_counter() - t:>9.2f}{len(i):>7}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer files and repeats")
    a = ap.parse_args()
    bench_scan(a.quick)
    bench_manipulate(a.quick)
    bench_dedupe(a.quick)

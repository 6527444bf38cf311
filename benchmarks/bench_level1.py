"""Level-1 throughput: JPEG decoding, the training loader, and model train/predict images/s.

    python benchmarks/bench_level1.py [--model resnet10t] [--crop 224] [--batch 16] [--device cpu]

Prints one table.  Decoding uses the real 512x512 camera crops in ../shared/data/cmi-crops
(skipped with a message when absent) and a synthetic 4000x3000 full-size JPEG (quality 95,
camera-like noise) written to a temporary folder.  "train" and "predict" time the model
on random uint8 batches (the loader is measured separately), so together they tell
whether the loader can feed the model.  Timings on a shared machine are noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CMI = ROOT.parent / "shared" / "data" / "cmi-crops"


def _rate(fn, n_items: int, min_time: float = 2.0) -> float:
    fn()  # warm-up
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < min_time:
        fn()
        done += n_items
    return done / (time.perf_counter() - t0)


def _photo(path: Path, w: int = 4000, h: int = 3000) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    smooth = 128 + 60 * np.sin(x / 300.0)[..., None] * np.cos(y / 200.0)[..., None] * np.array([1.0, 0.8, 0.6])
    img = np.clip(smooth + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(path, quality=95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet10t")
    ap.add_argument("--crop", type=int, default=224)
    ap.add_argument("--loader-crop", type=int, default=480)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()

    import torch
    from PIL import Image

    from level1.data import TrainDataset, read_manifest
    from level1.imageio import has_fast_jpeg, read_image

    rows: list[tuple[str, str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_level1_"))
    big = tmp / "photo.jpg"
    _photo(big)

    def pil_full(p: Path) -> np.ndarray:
        with Image.open(p) as im:
            return np.asarray(im.convert("RGB"))

    def pil_crop(p: Path, s: int = 480) -> np.ndarray:  # lazy open + crop: still a full decode
        with Image.open(p) as im:
            return np.asarray(im.crop((1000, 1000, 1000 + s, 1000 + s)).convert("RGB"))

    def pil_draft(p: Path) -> np.ndarray:  # DCT-domain downscale x1/2: fast, but destroys the sensor noise
        with Image.open(p) as im:
            im.draft("RGB", (im.width // 2, im.height // 2))
            return np.asarray(im.convert("RGB"))

    cases = [
        ("PIL full decode", lambda: pil_full(big)),
        ("PIL open+crop 480", lambda: pil_crop(big)),
        ("PIL draft 1/2 (not usable)", lambda: pil_draft(big)),
    ]
    if has_fast_jpeg():
        cases.append(("simplejpeg strict", lambda: read_image(big)))
    for name, fn in cases:
        rows.append(("decode 4000x3000 JPEG", name, _rate(fn, 1, args.seconds)))
    if CMI.exists():
        files = sorted(CMI.glob("*.jpg"))[:64]
        rows.append(
            ("decode 512x512 crops", "PIL", _rate(lambda: [pil_full(f) for f in files], len(files), args.seconds))
        )
        if has_fast_jpeg():
            rows.append(
                (
                    "decode 512x512 crops",
                    "simplejpeg strict",
                    _rate(lambda: [read_image(f) for f in files], len(files), args.seconds),
                )
            )
    else:
        print(f"note: {CMI} not found; skipping the real-crop decode rows", file=sys.stderr)

    # the training loader on full-size photos: decode + even crop + manipulation (p=0.5) + D4
    from level1.data import ImageRecord

    recs = [ImageRecord(f"p{i}", str(big), "a") for i in range(8)]
    ds = TrainDataset(recs, {"a": 0}, crop=args.loader_crop, manip_prob=0.5, d4_labels=None)
    seeds = iter(range(10**9))
    rows.append(
        (
            f"loader sample {args.loader_crop} from 4000x3000",
            "1 process",
            _rate(lambda: ds[(0, next(seeds))], 1, args.seconds),
        )
    )
    from torch.utils.data import DataLoader

    from level1.data import BalancedSampler

    for workers in (2, 4):
        if workers > (os.cpu_count() or 1):
            continue
        sampler = BalancedSampler([0] * 8, 48, seed=0)
        dl = DataLoader(ds, batch_size=8, sampler=sampler, num_workers=workers)
        t0 = time.perf_counter()
        n = sum(len(b["label"]) for b in dl)
        rows.append(
            (f"loader sample {args.loader_crop} from 4000x3000", f"{workers} workers", n / (time.perf_counter() - t0))
        )
    if CMI.exists():
        recs, classes, _ = read_manifest(
            CMI / "external_validation.csv", path_col="fname", label_col="camera", manip_col="is_altered"
        )
        ds2 = TrainDataset(recs, {c: i for i, c in enumerate(classes)}, crop=args.crop, manip_prob=0.5, d4_labels=None)
        rows.append(
            (
                f"loader sample {args.crop} from 512 crops",
                "1 process",
                _rate(lambda: ds2[(int(next(seeds)) % len(recs), next(seeds))], 1, args.seconds),
            )
        )

    # the model
    from level1.model import Level1Net

    device = torch.device(args.device)
    model = Level1Net(args.model, 10).to(device)
    use_amp = device.type == "cuda"
    x = torch.randint(0, 255, (args.batch, 3, args.crop, args.crop), dtype=torch.uint8, device=device)
    m = torch.zeros(args.batch, device=device)
    y = torch.randint(0, 10, (args.batch,), device=device)
    opt = torch.optim.Adam(model.parameters(), 1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)

    def step() -> None:
        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            loss = torch.nn.functional.cross_entropy(model(x, m), y)
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if use_amp:
            torch.cuda.synchronize()

    def infer() -> None:
        with torch.inference_mode(), torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
            model(x, m).float().softmax(1).cpu()

    model.train()
    rows.append((f"train {args.model} {args.crop}px b{args.batch}", str(device), _rate(step, args.batch, args.seconds)))
    model.eval()
    rows.append(
        (f"predict {args.model} {args.crop}px b{args.batch}", str(device), _rate(infer, args.batch, args.seconds))
    )

    card = torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"level1 throughput  (torch {torch.__version__}, threads {torch.get_num_threads()}, {card})")
    print(f"{'what':<42} {'how':<28} {'images/s':>10}")
    for what, how, rate in rows:
        print(f"{what:<42} {how:<28} {rate:>10.1f}")
    import shutil

    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

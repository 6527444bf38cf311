"""``stacker demo``: the whole pipeline on real images that ship with scikit-learn.

1. Data: scikit-learn's 1,797 real 8x8 handwritten digits, drawn at 16x16 on a
   20x20 black canvas (ink on black, so the border is seamless).  A
   class-balanced test set (50 per class, like the challenge's 264) is split
   off; half of the test images and half of the holdout images are altered by
   one of the challenge's eight manipulations with :func:`holdout.manipulate`
   (whole image, then centre crop/pad back to 20x20).
2. Level 1: several small timm CNNs from :mod:`level1`, trained K-fold on the
   CPU (random 16-pixel crops at even offsets, on-the-fly manipulations, no D4
   because a rotated 6 is a 9), each writing out-of-fold holdout rows and
   fold-averaged test rows.
3. Level 2: the per-model tables are merged, a :class:`~stacker.Blend` is fitted
   on the holdout with a small recipe, saved as a bundle, and predicts the test
   set, which is then equalized exactly per manipulation group
   (:class:`~stacker.HungarianEqualizer` with ``by="manip"``).
4. A summary table (each level-1 model, their mean, the Blend, the Blend after
   equalization) and an HTML report.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stacker.table import FOLD, PredictionTable, read_table, write_table

__all__ = ["run_demo", "DEMO_MODELS", "make_digit_images"]

#: The demo's level-1 CNNs: (run name, timm model, epochs, learning rate).  Small, random init, CPU.
DEMO_MODELS: tuple[tuple[str, str, int, float], ...] = (
    ("resnet10t", "resnet10t", 8, 1e-2),
    ("regnety", "regnety_002", 8, 1e-2),
    ("mobilenetv3", "mobilenetv3_small_050", 8, 5e-3),
)
CANVAS, DIGIT, CROP = 20, 16, 16

#: Printed under the summary: why the last line's log loss is higher although its accuracy is not lower.
EQUALIZED_LOG_LOSS = (
    "(equalization picks the classes that give every class its known count: it reweights each class and moves "
    "a few rows to a lower-ranked class, which costs log loss on the rows it moves wrongly; judge it by accuracy)"
)


def _digit_canvas(pixels: np.ndarray) -> np.ndarray:
    from PIL import Image

    gray = (pixels.reshape(8, 8) * (255.0 / 16.0)).astype(np.uint8)
    big = np.asarray(Image.fromarray(gray).resize((DIGIT, DIGIT), Image.Resampling.BICUBIC))
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    off = (CANVAS - DIGIT) // 2
    canvas[off : off + DIGIT, off : off + DIGIT] = big
    return np.repeat(canvas[:, :, None], 3, axis=2)


def _fit_canvas(arr: np.ndarray) -> np.ndarray:
    """Centre crop, or pad with black, back to the canvas size (a resize changes the size)."""
    h, w = arr.shape[:2]
    out = np.zeros((CANVAS, CANVAS, 3), dtype=np.uint8)
    sy, sx = max(0, (h - CANVAS) // 2), max(0, (w - CANVAS) // 2)
    dy, dx = max(0, (CANVAS - h) // 2), max(0, (CANVAS - w) // 2)
    ch, cw = min(h, CANVAS), min(w, CANVAS)
    out[dy : dy + ch, dx : dx + cw] = arr[sy : sy + ch, sx : sx + cw]
    return out


def make_digit_images(root: Path, seed: int = 0, test_per_class: int = 50) -> dict[str, pd.DataFrame]:
    """Write the demo's images under ``root`` and return the holdout and test manifests."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from holdout.manipulate import MANIPULATIONS, manipulate

    digits = load_digits()
    classes = [str(c) for c in digits.target_names]
    y = digits.target
    rng = np.random.default_rng(seed)
    test = np.sort(
        np.concatenate([rng.choice(np.flatnonzero(y == k), test_per_class, replace=False) for k in range(10)])
    )
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test] = True
    # Exactly half of each class altered in the test set, as in the challenge; half overall in the holdout.
    altered = np.zeros(len(y), dtype=bool)
    for k in range(10):
        idx = rng.permutation(np.flatnonzero((y == k) & is_test))
        altered[idx[: len(idx) // 2]] = True
    hold_idx = np.flatnonzero(~is_test)
    altered[rng.choice(hold_idx, len(hold_idx) // 2, replace=False)] = True
    kinds = np.where(altered, rng.choice(np.array(MANIPULATIONS), len(y)), "")
    rows: dict[str, list[dict[str, Any]]] = {"holdout": [], "test": []}
    for i in range(len(y)):
        split = "test" if is_test[i] else "holdout"
        img = _digit_canvas(digits.data[i])
        if kinds[i]:
            img = _fit_canvas(np.asarray(manipulate(img, str(kinds[i]), size=None)))
        name = f"{i:04d}_{'manip' if kinds[i] else 'unalt'}.png"
        path = root / split / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path)
        rows[split].append({"path": f"{split}/{name}", "label": classes[y[i]], "manip_kind": str(kinds[i])})
    return {k: pd.DataFrame(v) for k, v in rows.items()}


def _level1(
    root: Path,
    manifests: dict[str, pd.DataFrame],
    runs: Path,
    n_folds: int,
    seed: int,
    steps: int,
    epochs: int | None,
    threads: int | None,
) -> list[Path]:
    from level1 import Level1Config, train_oof

    hold_csv = root / "holdout.csv"
    manifests["holdout"].to_csv(hold_csv, index=False)
    test_files = [str(root / p) for p in manifests["test"]["path"]]
    tables = []
    for i, (name, model, model_epochs, lr) in enumerate(DEMO_MODELS, 1):
        n_epochs = model_epochs if epochs is None else epochs
        t0 = time.perf_counter()
        print(f"      CNN {i}/{len(DEMO_MODELS)} {name} ({model}, {n_epochs} epochs x {n_folds} folds)", flush=True)

        def log(msg: str, t0: float = t0) -> None:
            # One line per epoch of each fold (the training loop's own message), with the model's elapsed time.
            print(f"        {time.perf_counter() - t0:6.1f} s  {msg.removeprefix('level1: ')}", flush=True)

        cfg = Level1Config(
            data=str(hold_csv),
            folds=n_folds,
            seed=seed,
            crop=CROP,
            d4=False,
            manip_prob=0.5,
            model=model,
            batch_size=64,
            epochs=n_epochs,
            steps_per_epoch=steps,
            lr=lr,
            schedule="cosine",
            top_k=1,
            val_max_images=300,
            views=["identity"],
            manip_pattern="_manip",
            device="cpu",
            threads=threads,
            progress=False,
        )
        path, skipped = train_oof(cfg, runs / name, test_inputs=test_files, overwrite=True, log=log)
        if skipped:
            raise RuntimeError(f"level1 skipped demo images: {skipped[:3]}")
        print(f"      {name} done in {time.perf_counter() - t0:.1f} s (out-of-fold and test predictions)", flush=True)
        tables.append(path)
    return tables


def _split(merged: PredictionTable, manifests: dict[str, pd.DataFrame]) -> tuple[PredictionTable, PredictionTable]:
    """Holdout rows (with a fold) and test rows (fold null, labels and kinds joined from the manifest)."""
    in_fold = merged.meta[FOLD].notna().to_numpy()
    holdout, test = merged.take(in_fold), merged.take(~in_fold)
    info = manifests["test"].assign(id=lambda d: d["path"].str.split("/").str[-1]).set_index("id")
    meta = test.meta.drop(columns=[FOLD])
    names = meta["id"].astype(str).str.split("/").str[-1]
    meta["label"] = info.loc[names, "label"].to_numpy()
    meta["manip_kind"] = info.loc[names, "manip_kind"].to_numpy()
    test = PredictionTable(meta, test.probs, test.classes, test.models, source="demo test")
    hold_meta = holdout.meta.copy()
    hold_meta[FOLD] = hold_meta[FOLD].astype("Int64")
    holdout = PredictionTable(hold_meta, holdout.probs, holdout.classes, holdout.models, source="demo holdout")
    return holdout, test


def _row(name: str, y: np.ndarray, proba: np.ndarray, manip: np.ndarray | None) -> dict[str, Any]:
    from stacker.metrics import score_split

    sc = score_split(y, proba, manip)
    return {
        "model": name,
        "acc": sc["all"]["accuracy"],
        "logloss": sc["all"]["log_loss"],
        "acc unalt": sc["unaltered"]["accuracy"],
        "acc manip": sc["manipulated"]["accuracy"],
    }


def run_demo(
    output: str | Path = "demo-output",
    *,
    seed: int = 0,
    n_folds: int = 2,
    recipe: str = "fast",
    report: bool = True,
    steps_per_epoch: int = 40,
    epochs: int | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    """Run the demo; write images, tables, the bundle, predictions and report under ``output``.

    ``steps_per_epoch`` and ``epochs`` (None: each model's own, see :data:`DEMO_MODELS`) size the
    level-1 training; the tests use a few steps to run the whole pipeline quickly.  ``threads``
    is torch's CPU threads (None: :func:`stacker.threads.default_threads`); the level-1 numbers
    depend on it, as floating-point sums do on their order.
    """
    from stacker.aggregate import aggregate_models
    from stacker.blend import Blend
    from stacker.equalize import HungarianEqualizer
    from stacker.errors import ConfigError
    from stacker.merge import merge_tables
    from stacker.threads import check_threads, default_threads

    # Checked before anything is written or trained.
    check_threads(threads, name="threads (--threads)")
    for name, value, least in (
        ("n_folds (--folds)", n_folds, 2),
        ("steps_per_epoch (--steps)", steps_per_epoch, 1),
        ("epochs (--epochs)", 1 if epochs is None else epochs, 1),  # None: each model's own
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"option {name} must be an integer >= {least}, got {value!r}")
    out = Path(output)
    start = time.perf_counter()

    def stage(text: str) -> None:
        print(f"{text}  [{time.perf_counter() - start:.0f} s]", flush=True)

    stage(f"[1/4] real digits -> {out / 'images'} (balanced test set, half manipulated)")
    manifests = make_digit_images(out / "images", seed=seed)
    print(f"      holdout {len(manifests['holdout'])} images, test {len(manifests['test'])} images", flush=True)

    n_threads = threads or default_threads(size=CROP)  # what each level1 run sets (on CROP-px crops, no workers)
    stage(f"[2/4] level-1 CNNs ({n_folds}-fold on the CPU, {n_threads} torch thread{'s' * (n_threads > 1)})")
    paths = _level1(out / "images", manifests, out / "runs", n_folds, seed, steps_per_epoch, epochs, threads)
    merged = merge_tables([read_table(p) for p in paths])
    holdout, test = _split(merged, manifests)
    write_table(holdout, out / "holdout.parquet")
    write_table(test, out / "test.parquet")

    stage(f"[3/4] Blend (recipe {recipe!r}) on {len(holdout)} holdout rows, predict {len(test)} test rows")
    t0 = time.perf_counter()
    blend = Blend(recipe=recipe, n_folds=5, seed=seed, n_jobs=2, progress=False)
    blend.fit(holdout)
    blend.save(out / "bundle")
    pred = blend.transform(test)
    write_table(pred, out / "predictions.parquet")
    equalized = HungarianEqualizer(by="manip").fit_transform(pred)
    write_table(equalized, out / "equalized.parquet")
    print(f"      fitted and predicted in {time.perf_counter() - t0:.1f} s", flush=True)

    y, manip = test.y, test.manip
    rows = [_row(m, y, test.probs[:, i, :], manip) for i, m in enumerate(test.models)]
    rows.append(_row("mean of level-1", y, aggregate_models(test, 1.0), manip))
    rows.append(_row("Blend", y, pred.probs[:, 0, :], manip))
    rows.append(_row("Blend + equalization", y, equalized.probs[:, 0, :], manip))
    summary = pd.DataFrame(rows).set_index("model")
    oof = blend.scores_["blend"]["all"]
    print()
    stage(
        f"[4/4] test set ({len(test)} images, {0 if manip is None else int(manip.sum())} manipulated); "
        f"Blend out-of-fold on the holdout: acc {oof['accuracy']:.4f}, log loss {oof['log_loss']:.4f}"
    )
    print(summary.to_string(float_format=lambda v: f"{v:.4f}"))
    print(EQUALIZED_LOG_LOSS)
    result: dict[str, Any] = {
        "summary": summary,
        "blend_oof": oof,
        "output": out,
        "test": test,
        "predictions": pred,
        "equalized": equalized,
    }
    if report:
        from stacker.apps.report import write_report

        write_report(out / "bundle", out / "report.html", pred)
        print(f"\nreport: {out / 'report.html'}")
        result["report"] = out / "report.html"
    print(f"demo finished in {time.perf_counter() - start:.1f} s")
    return result

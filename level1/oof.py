"""K-fold out-of-fold training: one run per fold, then the out-of-fold (and test) prediction table."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from level1.config import Level1Config
from level1.data import Skipped, assign_folds, load_source, write_skipped
from level1.errors import ImageDataError, RunError
from level1.predict import predict_records, write_prediction
from level1.run import LAST, OOF_FILE, RUN_FILE
from level1.train import train_model, write_json

__all__ = ["train_oof"]


def train_oof(
    cfg: Level1Config,
    out_dir: str | Path,
    *,
    test_inputs: list[str] | None = None,
    table_path: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Any = None,
) -> tuple[Path, list[Skipped]]:
    """Train one model per fold into ``out_dir/fold<k>`` and write the OOF prediction table.

    Every training image gets its rows from the fold model that did not train on it
    (``fold = k``); each test image (``test_inputs``) gets rows from *every* fold model,
    averaged into one row per image, manipulation and view (``fold`` null).  The table
    (default ``out_dir/oof.parquet``) is named after ``out_dir``.

    Returns the table path and the skipped files.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr))
    cfg.validate()
    from stacker.errors import ConfigError

    if cfg.folds < 2:
        raise ConfigError(f"OOF training needs folds (--folds K) of at least 2, one model per fold; got {cfg.folds}")
    for flag, value in (("--fold", cfg.fold), ("--holdout", cfg.holdout)):
        if value is not None:
            raise ConfigError(
                f"OOF training validates every fold model on its own fold; {flag} is for level1 train (one model)"
            )
    out = Path(out_dir)
    if (out / OOF_FILE).exists() and not (resume or overwrite):
        raise RunError(f"{str(out)!r} already holds an OOF run; pass resume (--resume) or overwrite (--overwrite)")
    if out.exists() and overwrite and not resume:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    records, classes, skipped = load_source(cfg)
    records = assign_folds(records, cfg.folds, cfg.seed)
    write_json(
        out / OOF_FILE,
        {
            "format": "level1-oof",
            "version": 1,
            "name": out.name,
            "folds": cfg.folds,
            "runs": [f"fold{k}" for k in range(cfg.folds)],
            "classes": classes,
            "config": cfg.to_dict(),
        },
    )
    runs = []
    for k in range(cfg.folds):
        run_dir = out / f"fold{k}"
        fold_cfg = cfg.replace(fold=k)
        done = (run_dir / RUN_FILE).exists() and json.loads((run_dir / RUN_FILE).read_text()).get("finished")
        if done and resume:
            log(f"level1: {run_dir} is finished, skipping")
        else:
            res = train_model(
                fold_cfg,
                run_dir,
                records=records,
                classes=classes,
                resume=resume and (run_dir / LAST).exists(),
                overwrite=overwrite or not resume,
                log=log,
            )
            skipped += [s for s in res.skipped if s.path not in {x.path for x in skipped}]
        runs.append(run_dir)
    # predictions: each fold's held-out images, then the test images with every fold model
    tables = []
    for k, run_dir in enumerate(runs):
        held = [r for r in records if r.fold == k]
        t, s = predict_records([run_dir], held, cfg, name=out.name, folds=k)
        tables.append(t)
        skipped += [x for x in s if x.path not in {y.path for y in skipped}]
    if test_inputs:
        from level1.data import collect_images

        test, s = collect_images(test_inputs, manip_pattern=cfg.manip_pattern)
        skipped += s
        clash = sorted({r.id for r in test} & {r.id for r in records})
        if clash:
            raise ImageDataError(f"test images share ids with training images: {clash[:5]}")
        t, s = predict_records(runs, test, cfg, name=out.name, folds=None)
        tables.append(t)
        skipped += [x for x in s if x.path not in {y.path for y in skipped}]
    target = Path(table_path) if table_path else out / "oof.parquet"
    write_prediction(tables, target, extra={"level1": {"mode": "oof", "folds": cfg.folds, "model": cfg.model}})
    if skipped:
        write_skipped(skipped, out / "skipped.csv")
    return target, skipped

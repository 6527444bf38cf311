"""Prediction: TTA views, manipulated variants and snapshot ensembles into a prediction table.

For every image the table holds one row per (manipulation, view):

* ``manip``/``manip_kind``: the image as it is (flag from the source: manifest column or
  ``manip_pattern``; kind "" unless the manifest names it), and, for unaltered images,
  one variant per name in ``manip_variants`` made the challenge's way from the
  ``predict_size`` centre region (flag 1, kind = the manipulation);
* ``view``: ``identity``, ``d4-1`` .. ``d4-7`` and ``crop-{tl,tr,bl,br,c}-rot{0,90,180,270}``
  (see :data:`level1.config.VIEW_GROUPS`);
* probabilities: the softmax averaged over the run's checkpoints (``top``: every kept
  top-k checkpoint, a snapshot ensemble; ``best``; ``last``) and, when several runs are
  given (the fold models of an OOF run), averaged over the runs with equal weight.

The model name of the table is the run directory's name unless ``name`` is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from level1.config import Level1Config
from level1.data import EvalDataset, ImageRecord, Skipped, collate_eval, probe_records, view_names
from level1.errors import RunError
from level1.run import load_models, loader_worker_init, resolve_device, resolve_runs, run_info, runtime_threads

__all__ = ["predict_items", "predict_records", "predict", "write_prediction"]


def predict_items(
    model_groups: Sequence[Sequence[Any]],
    records: Sequence[ImageRecord],
    items: Sequence[tuple[int, str]],
    *,
    groups: Sequence[str],
    size: int,
    crop: int,
    batch_size: int,
    device: Any,
    workers: int = 0,
    progress: bool = True,
    backend: str = "pil",
    desc: str = "predict",
) -> tuple[np.ndarray, np.ndarray, list[Skipped]]:
    """Softmax probabilities ``(n_items, n_views, n_classes)``, a decoded-ok mask and the skipped files.

    Each item is ``(record index, manipulation or "")``; the manipulation flag fed to the
    model is 1 for a manipulation and the record's own flag otherwise.  Probabilities are
    averaged over the models of a group, then over the groups.
    """
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    names = view_names(groups)
    n_classes = model_groups[0][0].head.out_features
    out = np.zeros((len(items), len(names), n_classes), dtype=np.float64)
    ok = np.zeros(len(items), dtype=bool)
    flags = torch.tensor([1.0 if kind else float(records[r].manip) for r, kind in items])
    ds = EvalDataset(records, items, size=size, crop=crop, groups=groups, backend=backend)
    loader: Any = DataLoader(
        ds,  # type: ignore[arg-type]  # a map-style dataset (__len__, __getitem__)
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_eval,
        worker_init_fn=loader_worker_init(),
        pin_memory=device.type == "cuda",
    )
    skipped: list[Skipped] = []
    use_amp = device.type == "cuda"
    with torch.inference_mode():
        for batch in tqdm(loader, desc=desc, disable=not progress, leave=False):
            for line in batch["bad"]:
                path, reason = line.split("\t", 1)
                skipped.append(Skipped(path, reason))
            idx = batch["item"]
            if len(idx) == 0:
                continue
            manip = flags[idx].to(device)
            for v, name in enumerate(names):
                x = batch["views"][name].to(device, non_blocking=True)
                acc = torch.zeros(len(idx), n_classes, dtype=torch.float64)
                for group in model_groups:
                    g = torch.zeros(len(idx), n_classes, dtype=torch.float64)
                    for m in group:
                        with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                            logits = m(x, manip)
                        g += torch.softmax(logits.float(), dim=1).double().cpu()
                    acc += g / len(group)
                out[idx.numpy(), v] = (acc / len(model_groups)).numpy()
            ok[idx.numpy()] = True
    return out, ok, skipped


def predict_records(
    run_dirs: Sequence[str | os.PathLike[str]],
    records: Sequence[ImageRecord],
    cfg: Level1Config,
    *,
    name: str | None = None,
    folds: int | None = None,
) -> tuple[Any, list[Skipped]]:
    """Predict ``records`` with the runs in ``run_dirs`` (averaged) into a :class:`~stacker.table.PredictionTable`.

    ``cfg`` supplies the prediction options (views, manip_variants, predict_size,
    checkpoints, device, workers, batch size, progress); the crop comes from the runs.
    ``folds`` fills the fold column (None: null).  Returns the table and the skipped files.
    """
    from stacker.table import PredictionTable

    runs = [Path(r) for r in run_dirs]
    infos = [run_info(r) for r in runs]
    classes = infos[0]["classes"]
    for run, info in zip(runs, infos):
        if info["classes"] != classes:
            raise RunError(f"run {str(run)!r} has classes {info['classes']}, others have {classes}")
    crop = int(infos[0]["config"]["crop"])
    cfg = cfg.replace(crop=crop)
    records, skipped = probe_records(records, min_side=crop if cfg.small_images == "skip" else None)
    if not records:
        raise RunError("no readable image to predict" + (f" ({len(skipped)} skipped)" if skipped else ""))
    device = resolve_device(cfg.device)
    cfg = runtime_threads(cfg, device, None, size=cfg.effective_predict_size)
    groups = [load_models(r, cfg.checkpoints, device) for r in runs]
    items: list[tuple[int, str]] = []
    for i, r in enumerate(records):
        items.append((i, ""))
        if not r.manip:
            items += [(i, k) for k in cfg.manip_variants]
    probs, ok, s = predict_items(
        groups,
        records,
        items,
        groups=cfg.views,
        size=cfg.effective_predict_size,
        crop=crop,
        batch_size=cfg.effective_batch_size_predict,
        device=device,
        workers=cfg.workers,
        progress=cfg.progress,
        backend=cfg.manip_backend,
    )
    seen = {x.path for x in skipped}
    for x in s:  # one file may fail once per manipulated variant
        if x.path not in seen:
            seen.add(x.path)
            skipped.append(x)
    names = view_names(cfg.views)
    keep = np.flatnonzero(ok)
    if len(keep) == 0:
        raise RunError("no image could be decoded" + f" ({len(skipped)} skipped)")
    n_v = len(names)
    rows: dict[str, list[Any]] = {"id": [], "label": [], "fold": [], "manip": [], "manip_kind": [], "view": []}
    for j in keep:
        rec_i, kind = items[j]
        rec = records[rec_i]
        for v in names:
            rows["id"].append(rec.id)
            rows["label"].append(rec.label)
            rows["fold"].append(folds)
            rows["manip"].append(1 if kind else rec.manip)
            rows["manip_kind"].append(kind or rec.manip_kind)
            rows["view"].append(v)
    model = name or runs[0].name if len(runs) == 1 else (name or runs[0].parent.name)
    table = PredictionTable.from_arrays(
        rows["id"],
        probs[keep].reshape(len(keep) * n_v, 1, -1),
        classes,
        models=[model],
        labels=rows["label"],
        folds=rows["fold"],
        manip=rows["manip"],
        manip_kind=rows["manip_kind"],
        views=rows["view"],
        renormalize=True,
    )
    return table, skipped


def write_prediction(
    tables: Sequence[Any], path: str | os.PathLike[str], *, extra: dict[str, Any] | None = None
) -> Path:
    """Concatenate tables of the same model and classes, drop all-null label/fold columns, write atomically."""
    import pandas as pd

    from stacker.table import FOLD, LABEL, PredictionTable, write_table

    meta = pd.concat([t.meta for t in tables], ignore_index=True)
    probs = np.concatenate([t.probs for t in tables], axis=0)
    for col in (LABEL, FOLD):
        if col in meta.columns and meta[col].isna().all():
            meta = meta.drop(columns=col)
    table = PredictionTable(meta, probs, tables[0].classes, tables[0].models, source=str(path))
    return write_table(table, path, dtype="float32", extra_metadata=extra)


def predict(
    run: str | os.PathLike[str],
    inputs: Sequence[str | os.PathLike[str]] | None = None,
    output: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    name: str | None = None,
    log: Any = None,
    **options: Any,
) -> tuple[Any, list[Skipped]]:
    """Predict images (files/folders, or a manifest with labels) with a run or an OOF run.

    ``options`` override the run's prediction settings (views, manip_variants,
    predict_size, checkpoints, device, workers, threads, batch_size_predict, progress,
    manip_pattern).  Writes the table to ``output`` (parquet) when given.
    """
    from level1.data import collect_images, read_config_manifest

    log = log or (lambda msg: print(msg, file=sys.stderr))
    runs = resolve_runs(run)
    cfg = Level1Config.from_dict(run_info(runs[0])["config"]).replace(**options)
    if manifest is not None:
        records, _, skipped = read_config_manifest(manifest, cfg)
        records = [r.__class__(r.id, r.path, r.label, r.manip, r.manip_kind, None) for r in records]
    else:
        records, skipped = [], []
    if inputs:
        more, s = collect_images(inputs, manip_pattern=cfg.manip_pattern)
        records += more
        skipped += s
    if not records:
        raise RunError("no images to predict" + (f" ({len(skipped)} skipped)" if skipped else ""))
    model_name = name or Path(run).name
    table, s = predict_records(runs, records, cfg, name=model_name)
    skipped += s
    if output is not None:
        write_prediction([table], output, extra={"level1": {"mode": "predict", "runs": [str(r) for r in runs]}})
    return table, skipped

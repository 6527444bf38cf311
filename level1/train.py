"""The training loop of one model (:func:`train_model`); K fold models are :mod:`level1.oof`.

Run directory
    The files of :mod:`level1.run`, all written atomically; ``last.pt`` after every epoch,
    so an interrupted run resumes from its last finished epoch (``resume=True`` /
    ``level1 train --resume``).

Schedule
    ``epochs`` epochs of Adam, the learning rate either reduced on plateau of the
    validation score or cosine-annealed; then ``sgd_cycles`` cycles of SGD with
    momentum, each cosine-annealed from ``sgd_lr`` over ``sgd_cycle_epochs`` epochs,
    whose end points are snapshot-ensemble members.

Checkpoint score
    ``(1 - w) * loss(unaltered) + w * loss(manipulated)`` on the validation images, with
    ``w = val_manip_weight`` (0.3): every unaltered validation image is scored as is and
    once under a manipulation picked deterministically per image; images already
    manipulated count as manipulated.  Without validation images the last ``top_k``
    epochs are kept.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from level1.config import RUNTIME_FIELDS, Level1Config
from level1.data import (
    BalancedSampler,
    ImageRecord,
    Skipped,
    TrainDataset,
    load_source,
    probe_records,
    split_records,
    write_skipped,
)
from level1.errors import ImageDataError
from level1.run import LAST, RUN_FILE, SPLIT_FILE, loader_worker_init, prepare_run_dir, resolve_device, runtime_threads
from stacker.files import atomic_path, atomic_write_text

_F = TypeVar("_F", bound=Callable[..., Any])

__all__ = ["TrainResult", "train_model", "write_json"]


@dataclass
class TrainResult:
    """What a finished (or resumed and finished) run produced."""

    run_dir: Path
    checkpoints: list[dict[str, Any]]
    history: list[dict[str, Any]]
    skipped: list[Skipped] = field(default_factory=list)


def _save_torch(obj: Any, path: Path) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _records_frame(train: list[ImageRecord], val: list[ImageRecord]) -> Any:
    import pandas as pd

    rows = [dict(dataclasses.asdict(r), role="train") for r in train]
    rows += [dict(dataclasses.asdict(r), role="val") for r in val]
    frame = pd.DataFrame(rows, columns=["id", "path", "label", "manip", "manip_kind", "fold", "role"])
    frame["fold"] = frame["fold"].astype("Int64")
    return frame


def _read_split(path: Path) -> tuple[list[ImageRecord], list[ImageRecord]]:
    import pandas as pd

    frame = pd.read_csv(path, keep_default_na=False, na_values={"fold": [""], "label": [""]})
    train: list[ImageRecord] = []
    val: list[ImageRecord] = []
    for row in frame.to_dict("records"):
        fold = row["fold"]
        rec = ImageRecord(
            str(row["id"]),
            str(row["path"]),
            None if pd.isna(row["label"]) else str(row["label"]),
            int(row["manip"]),
            str(row["manip_kind"] or ""),
            None if pd.isna(fold) else int(fold),
        )
        (train if row["role"] == "train" else val).append(rec)
    return train, val


def _lr_factor(t: float, total: float) -> float:
    """Cosine from 1 to 0.01 over ``total`` steps."""
    return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(total, 1)))


def _make_optimizer(model: Any, cfg: Level1Config, kind: str) -> Any:
    import torch

    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=cfg.sgd_lr, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay, nesterov=True
    )


def _ema_update(ema: Any, model: Any, decay: float) -> None:
    import torch

    with torch.no_grad():
        for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(m.detach(), alpha=1.0 - decay)
            else:
                e.copy_(m)


def _validation_items(val: list[ImageRecord], cfg: Level1Config) -> tuple[list[ImageRecord], list[tuple[int, str]]]:
    from holdout.manipulate import MANIPULATIONS

    if cfg.val_max_images is not None and len(val) > cfg.val_max_images:
        keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(val))[: cfg.val_max_images])
        val = [val[i] for i in keep]
    items: list[tuple[int, str]] = []
    for i, r in enumerate(val):
        items.append((i, ""))
        if not r.manip and cfg.val_manip_weight > 0:
            items.append((i, MANIPULATIONS[(cfg.seed + i) % len(MANIPULATIONS)]))
    return val, items


def _validate(
    model: Any,
    val: list[ImageRecord],
    items: list[tuple[int, str]],
    class_index: dict[str, int],
    cfg: Level1Config,
    device: Any,
) -> tuple[dict[str, float], list[Skipped]]:
    from level1.predict import predict_items

    # Inference mode alone keeps BatchNorm in training mode (batch statistics, running stats
    # updated from validation images); evaluate in eval mode and restore the caller's mode.
    was_training = model.training
    model.eval()
    try:
        probs, ok, skipped = predict_items(
            [[model]],
            val,
            items,
            groups=["identity"],
            size=cfg.crop,
            crop=cfg.crop,
            batch_size=cfg.effective_batch_size_predict,
            device=device,
            workers=cfg.workers,
            progress=False,
            backend=cfg.manip_backend,
            desc="validate",
        )
    finally:
        model.train(was_training)
    p = probs[:, 0, :]
    y = np.array([class_index[val[r].label] for r, _ in items])  # type: ignore[index]
    flag = np.array([1 if (kind or val[r].manip) else 0 for r, kind in items])
    nll = -np.log(np.clip(p[np.arange(len(items)), y], 1e-15, 1.0))
    acc = (p.argmax(1) == y).astype(float)
    out: dict[str, float] = {}
    parts = {}
    for name, mask in (("unaltered", (flag == 0) & ok), ("manipulated", (flag == 1) & ok)):
        if mask.any():
            parts[name] = float(nll[mask].mean())
            out[f"val_loss_{name}"] = parts[name]
            out[f"val_acc_{name}"] = float(acc[mask].mean())
    if not parts:
        raise ImageDataError("no validation image could be decoded")
    w = cfg.val_manip_weight
    if len(parts) == 2:
        out["score"] = (1 - w) * parts["unaltered"] + w * parts["manipulated"]
    else:
        out["score"] = next(iter(parts.values()))
    out["val_acc"] = float(acc[ok].mean())
    return out, skipped


def _discarding_an_unstarted_run(train: _F) -> _F:
    """``train`` removing what it made when it fails before its first epoch ends (no ``run.json``, no
    ``last.pt``): a bad model name, weights file or device must not leave a folder that the same command
    then refuses as 'not empty'.  What the folder held before stays."""
    import functools

    @functools.wraps(train)
    def run(cfg: Level1Config, out_dir: str | Path, **kwargs: Any) -> TrainResult:
        out = Path(out_dir)
        before = set(out.iterdir()) if out.is_dir() else None
        try:
            return train(cfg, out_dir, **kwargs)
        except BaseException:
            if not (out / RUN_FILE).exists() and not (out / LAST).exists():
                _discard(out, before)
            raise

    return cast(_F, run)


def _discard(out: Path, before: set[Path] | None) -> None:
    """Remove ``out``, or only what it holds beyond ``before`` when it existed."""
    import shutil

    if before is None:
        shutil.rmtree(out, ignore_errors=True)
        return
    for entry in set(out.iterdir()) - before if out.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


@_discarding_an_unstarted_run
def train_model(
    cfg: Level1Config,
    out_dir: str | Path,
    *,
    records: list[ImageRecord] | None = None,
    classes: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    log: Any = None,
) -> TrainResult:
    """Train one level-1 model into ``out_dir`` (see the module docstring for the layout).

    Parameters
    ----------
    cfg : Level1Config
        With ``fold`` set when ``folds >= 2``; ``holdout`` for a fixed validation list.
    out_dir : path
        The run directory.  Its name is the model name in prediction tables.
    records, classes : optional
        Pre-loaded source (the OOF driver passes them); default: ``load_source(cfg)``.
    resume : bool
        Continue an interrupted run from ``last.pt``; the stored config is used, except its
        runtime fields (device, workers, progress), which ``cfg`` may change.
    overwrite : bool
        Replace an existing run.
    log : callable, optional
        Receives progress messages (default: print to stderr).
    """
    import torch
    from torch.utils.data import DataLoader

    from level1.model import Level1Net

    log = log or (lambda msg: print(msg, file=sys.stderr))
    out = Path(out_dir)
    skipped: list[Skipped] = []
    if not (resume and (out / LAST).exists()):  # a fresh run (prepare_run_dir resumes exactly then)
        # Before the run directory is made: a bad option or data must not leave a half-made run behind.
        cfg.validate()
        if records is None:
            records, classes, skipped = load_source(cfg)
    resuming = prepare_run_dir(out, resume, overwrite)
    if resuming:
        info = json.loads((out / RUN_FILE).read_text())
        stored = Level1Config.from_dict(info["config"])
        cfg = stored.replace(**{k: getattr(cfg, k) for k in RUNTIME_FIELDS})
        classes = list(info["classes"])
        train, val = _read_split(out / SPLIT_FILE)
    else:
        assert records is not None and classes is not None
        unlabelled = [r.id for r in records if r.label is None]
        if unlabelled:
            raise ImageDataError(f"training needs a label for every image; unlabelled: {unlabelled[:5]}")
        from level1.model import check_model_name

        check_model_name(cfg.model)
        train, val = split_records(records, cfg)
        min_side = cfg.crop if cfg.small_images == "skip" else None
        train, s1 = probe_records(train, min_side=min_side)
        val, s2 = probe_records(val, min_side=min_side)
        skipped += s1 + s2
        if not train:
            raise ImageDataError("no readable training image")
        missing = sorted(set(classes) - {r.label for r in train})
        if missing:
            raise ImageDataError(f"classes {missing} have no readable training image")
        with atomic_path(out / SPLIT_FILE) as tmp:
            _records_frame(train, val).to_csv(tmp, index=False)

    class_index = {c: i for i, c in enumerate(classes)}
    device = resolve_device(cfg.device)
    cfg = runtime_threads(cfg, device, log)
    use_amp = bool(cfg.amp and device.type == "cuda")
    torch.manual_seed(cfg.seed)
    model = Level1Net(cfg.model, len(classes), drop_rate=cfg.drop_rate, weights=None if resuming else cfg.weights)
    model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    ema = None
    if cfg.ema_decay is not None:
        ema = copy.deepcopy(model).eval()
        for p in ema.parameters():
            p.requires_grad_(False)

    steps = cfg.steps_per_epoch or max(1, math.ceil(len(train) / cfg.batch_size))
    n_adam = cfg.epochs
    n_total = n_adam + cfg.sgd_cycles * cfg.sgd_cycle_epochs
    opt_kind = "adam"
    optimizer = _make_optimizer(model, cfg, "adam")
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    if resuming:
        state = torch.load(out / LAST, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        opt_kind = state["optimizer_kind"]
        if opt_kind == "sgd":
            optimizer = _make_optimizer(model, cfg, "sgd")
        optimizer.load_state_dict(state["optimizer"])
        if opt_kind == "adam" and state.get("plateau"):
            plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience
            )
            plateau.load_state_dict(state["plateau"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        start_epoch = int(state["epoch"]) + 1
        history = list(state["history"])
        kept = list(state["kept"])
        skipped = [Skipped(p, r) for p, r in state.get("skipped", [])]
        log(f"level1: resuming {out} at epoch {start_epoch + 1}/{n_total}")

    dataset = TrainDataset(
        train,
        class_index,
        crop=cfg.crop,
        manip_prob=cfg.manip_prob,
        d4_labels=None if not cfg.no_d4_classes else set(classes) - set(cfg.no_d4_classes),
        backend=cfg.manip_backend,
    )
    if not cfg.d4:
        dataset.d4_labels = set()
    sampler = BalancedSampler(
        [class_index[r.label] for r in train],  # type: ignore[index]  # training records are labelled
        steps * cfg.batch_size,
        seed=cfg.seed,
        balanced=cfg.balanced,
    )
    loader: Any = DataLoader(
        dataset,  # type: ignore[arg-type]  # a map-style dataset (__len__, __getitem__)
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        worker_init_fn=loader_worker_init(),
        drop_last=False,
    )
    val_records, val_items = _validation_items(val, cfg) if val else ([], [])
    bad_seen = {s.path for s in skipped}
    info_base = {
        "format": "level1-run",
        "version": 1,
        "name": out.name,
        "model": cfg.model,
        "classes": list(classes),
        "config": cfg.to_dict(),
        "n_train": len(train),
        "n_val": len(val),
        "steps_per_epoch": steps,
        "epochs_total": n_total,
    }
    loss_fn = torch.nn.CrossEntropyLoss()
    from tqdm.auto import tqdm

    for epoch in range(start_epoch, n_total):
        phase = "adam" if epoch < n_adam else "sgd"
        if phase == "sgd" and opt_kind != "sgd":
            optimizer, opt_kind = _make_optimizer(model, cfg, "sgd"), "sgd"
        sampler.set_epoch(epoch)
        model.train()
        t0 = time.perf_counter()
        total_loss, n_seen = 0.0, 0
        bar = tqdm(
            loader, total=len(loader), desc=f"epoch {epoch + 1}/{n_total}", disable=not cfg.progress, leave=False
        )
        for step, batch in enumerate(bar):
            if phase == "sgd":
                cycle_epoch = (epoch - n_adam) % cfg.sgd_cycle_epochs
                t = cycle_epoch * steps + step
                lr = cfg.sgd_lr * _lr_factor(t, cfg.sgd_cycle_epochs * steps)
                for g in optimizer.param_groups:
                    g["lr"] = lr
            elif cfg.schedule == "cosine":
                lr = cfg.lr * _lr_factor(epoch * steps + step, n_adam * steps)
                for g in optimizer.param_groups:
                    g["lr"] = lr
            for line in batch["bad"]:
                for entry in filter(None, line.split("\n")):
                    path, reason = entry.split("\t", 1)
                    if path not in bad_seen:
                        bad_seen.add(path)
                        skipped.append(Skipped(path, reason))
                        log(f"level1: skipped {path}: {reason}")
            images = batch["image"].to(device, non_blocking=True)
            if device.type == "cuda":
                images = images.contiguous(memory_format=torch.channels_last)
            labels = batch["label"].to(device, non_blocking=True)
            manip = batch["manip"].to(device, non_blocking=True)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_amp):
                loss = loss_fn(model(images, manip), labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if ema is not None:
                _ema_update(ema, model, cfg.ema_decay)  # type: ignore[arg-type]
            total_loss += float(loss.detach()) * len(labels)
            n_seen += len(labels)
            bar.set_postfix(loss=f"{total_loss / n_seen:.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
        bar.close()
        train_time = time.perf_counter() - t0
        eval_model = ema if ema is not None else model
        row: dict[str, Any] = {
            "epoch": epoch,
            "phase": phase,
            "train_loss": total_loss / max(n_seen, 1),
            "lr": optimizer.param_groups[0]["lr"],
            "train_images_per_s": n_seen / max(train_time, 1e-9),
        }
        if val_items:
            metrics, vskip = _validate(eval_model, val_records, val_items, class_index, cfg, device)
            for s in vskip:
                if s.path not in bad_seen:
                    bad_seen.add(s.path)
                    skipped.append(s)
            row.update(metrics)
        else:
            row["score"] = -float(epoch)  # no validation: keep the latest epochs
        if phase == "adam" and cfg.schedule == "plateau":
            plateau.step(row["score"] if val_items else row["train_loss"])
        history.append(row)
        # top-k checkpoints
        ckpt = f"checkpoints/epoch{epoch + 1:03d}.pt"
        _save_torch({"model": eval_model.state_dict()}, out / ckpt)
        kept.append({"file": ckpt, "epoch": epoch, **{k: v for k, v in row.items() if k.startswith(("val_", "score"))}})
        kept.sort(key=lambda c: (c["score"], -c["epoch"]))
        for old in kept[cfg.top_k :]:
            (out / old["file"]).unlink(missing_ok=True)
        kept = kept[: cfg.top_k]
        _save_torch(
            {
                "epoch": epoch,
                "model": model.state_dict(),
                "ema": ema.state_dict() if ema is not None else None,
                "optimizer": optimizer.state_dict(),
                "optimizer_kind": opt_kind,
                "plateau": plateau.state_dict() if opt_kind == "adam" else None,
                "scaler": scaler.state_dict() if use_amp else None,
                "history": history,
                "kept": kept,
                "skipped": [[s.path, s.reason] for s in skipped],
            },
            out / LAST,
        )
        if skipped:
            write_skipped(skipped, out / "skipped.csv")
        write_json(
            out / RUN_FILE,
            {
                **info_base,
                "epochs_done": epoch + 1,
                "finished": epoch + 1 == n_total,
                "checkpoints": kept,
                "history": history,
                "skipped": len(skipped),
            },
        )
        msg = f"level1: {out.name} epoch {epoch + 1}/{n_total} train_loss {row['train_loss']:.4f}"
        if val_items:
            msg += f" score {row['score']:.4f} val_acc {row['val_acc']:.3f}"
        log(msg + f" ({row['train_images_per_s']:.1f} img/s)")
    if n_total == start_epoch:
        log(f"level1: {out} is already finished")
    if skipped:
        write_skipped(skipped, out / "skipped.csv")
    return TrainResult(out, kept, history, skipped)


# END

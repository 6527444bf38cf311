"""The run directory: its file names, ``run.json``, checkpoint loading, and the device it runs on.

A *run* (one trained model) is a directory::

    run.json              config, classes, kept checkpoints with their scores, history, finished
    split.csv             every image with its role (train / val)
    checkpoints/epochNNN.pt   the top-k model weights (EMA weights when EMA is on)
    last.pt               everything needed to resume: model, EMA, optimizer, scheduler, scaler, epoch
    skipped.csv           unreadable or filtered images

An *OOF run* is a directory with ``oof.json`` (format ``level1-oof``: folds, the fold runs'
names, classes, config) and one run per fold, ``fold0`` .. ``fold<K-1>``.  Weights are loaded
with ``weights_only=True``: a checkpoint never runs code.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from level1.errors import RunError

__all__ = [
    "RUN_FILE",
    "OOF_FILE",
    "LAST",
    "SPLIT_FILE",
    "resolve_device",
    "runtime_threads",
    "prepare_run_dir",
    "resolve_runs",
    "run_info",
    "load_models",
]

RUN_FILE = "run.json"
OOF_FILE = "oof.json"
LAST = "last.pt"
SPLIT_FILE = "split.csv"


def resolve_device(name: str) -> Any:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is a ConfigError."""
    import torch

    from stacker.errors import ConfigError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"option 'device' is {name!r} but torch sees no CUDA device")
    return torch.device(name)


def runtime_threads(cfg: Any, device: Any, log: Any = None, *, size: int | None = None) -> Any:
    """Set torch's CPU threads for ``cfg`` (``threads``, else :func:`stacker.threads.default_threads` for
    ``size``-pixel inputs, default the crop) and, on the CPU, cap the DataLoader workers at the cores less
    one; returns ``cfg`` with the workers used."""
    import sys

    from stacker.threads import available_cores, cap_workers, set_torch_threads

    workers = cap_workers(cfg.workers) if device.type == "cpu" else cfg.workers
    if workers < cfg.workers:
        (log or (lambda m: print(m, file=sys.stderr)))(
            f"level1: {cfg.workers} DataLoader workers on {available_cores()} cores would leave no core for the "
            f"model; using {workers}"
        )
        cfg = cfg.replace(workers=workers)
    set_torch_threads(cfg.threads, workers=cfg.workers, size=size or cfg.crop)
    return cfg


def loader_worker_init() -> Any:
    """A DataLoader ``worker_init_fn`` that makes each worker exit the moment this process dies, even by
    ``kill -9`` (torch's own watchdog takes up to 5 s, and its worker may print a traceback meanwhile)."""
    import functools

    from stacker.parallel import watch_parent

    return functools.partial(watch_parent, os.getpid())


def prepare_run_dir(out: Path, resume: bool, overwrite: bool) -> bool:
    """Return True when an existing run is resumed."""
    if (out / LAST).exists() or (out / RUN_FILE).exists():
        if resume:
            if not (out / LAST).exists():
                raise RunError(f"run {str(out)!r} has no {LAST} to resume from")
            return True
        if overwrite:
            shutil.rmtree(out)
        else:
            raise RunError(
                f"run directory {str(out)!r} already holds a run; pass resume (--resume) or overwrite (--overwrite)"
            )
    elif resume and out.exists() and any(out.iterdir()):
        raise RunError(f"{str(out)!r} is not a level1 run directory (no {RUN_FILE})")
    elif out.exists() and any(out.iterdir()) and not overwrite:
        raise RunError(f"output directory {str(out)!r} is not empty; pass overwrite (--overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    (out / "checkpoints").mkdir(exist_ok=True)
    return False


def resolve_runs(path: str | os.PathLike[str]) -> list[Path]:
    """The run directories behind ``path``: itself, or the fold runs of an OOF directory."""
    p = Path(path)
    if (p / OOF_FILE).is_file():
        info = json.loads((p / OOF_FILE).read_text())
        runs = [p / r for r in info["runs"]]
        missing = [str(r) for r in runs if not (r / RUN_FILE).is_file()]
        if missing:
            raise RunError(f"OOF run {str(p)!r} lacks the fold runs {missing}")
        return runs
    if (p / RUN_FILE).is_file():
        return [p]
    raise RunError(f"{str(p)!r} is not a level1 run directory (no {RUN_FILE} or {OOF_FILE})")


def run_info(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(run_dir) / RUN_FILE
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {str(p)!r} ({exc})") from None


def load_models(run_dir: str | os.PathLike[str], which: str, device: Any) -> list[Any]:
    """The run's networks for ``which`` in ``top`` (every kept checkpoint), ``best`` or ``last``."""
    import torch

    from level1.model import Level1Net

    run = Path(run_dir)
    info = run_info(run)
    cfg = info["config"]
    if which == "last":
        state = torch.load(run / LAST, map_location="cpu", weights_only=True)
        states = [state["ema"] if state.get("ema") is not None else state["model"]]
    else:
        kept = info.get("checkpoints") or []
        if not kept:
            raise RunError(f"run {str(run)!r} has no checkpoint yet")
        kept = kept[:1] if which == "best" else kept
        states = []
        for c in kept:
            f = run / c["file"]
            if not f.is_file():
                raise RunError(f"checkpoint {str(f)!r} listed in run.json is missing")
            states.append(torch.load(f, map_location="cpu", weights_only=True)["model"])
    models = []
    for st in states:
        m = Level1Net(cfg["model"], len(info["classes"]), drop_rate=cfg.get("drop_rate", 0.0))
        try:
            m.load_state_dict(st)
        except RuntimeError as exc:
            raise RunError(f"a checkpoint of {str(run)!r} does not fit its model: {exc}") from None
        m.to(device).eval()
        models.append(m)
    return models

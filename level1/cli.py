"""The ``level1`` command line: ``train``, ``oof`` and ``predict``.

Options map one-to-one onto :class:`level1.config.Level1Config` fields; a ``--config``
file (TOML/YAML) gives the base values and the options given on the command line win.
torch and timm are imported only once a command runs, so ``level1 --help`` is fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from stacker.files import check_output_file, refuse_overwrite

__all__ = ["main", "build_parser"]

S = argparse.SUPPRESS

# (flags, config field, argparse kwargs)
_DATA: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--data",), "data", dict(help="image folder (root/<class>/*.jpg) or manifest (.csv/.parquet)")),
    (("--path-col",), "path_col", dict(help="manifest column of image paths (default path)")),
    (("--label-col",), "label_col", dict(help="manifest column of class names (default label)")),
    (("--fold-col",), "fold_col", dict(help="manifest column of folds (default fold)")),
    (("--manip-col",), "manip_col", dict(help="manifest column of 0/1 manipulation flags (default manip)")),
    (("--kind-col",), "kind_col", dict(help="manifest column of manipulation names (default manip_kind)")),
    (
        ("--manip-pattern",),
        "manip_pattern",
        dict(help="regex: matching file names are already manipulated (e.g. _manip)"),
    ),
    (
        ("--folds",),
        "folds",
        dict(type=int, help="K for a stratified K-fold split (default 0: no split; oof needs K >= 2)"),
    ),
    (("--fold",), "fold", dict(type=int, help="validate on this fold, train on the others")),
    (("--holdout",), "holdout", dict(help="file of image ids to validate on instead of a fold")),
    (("--seed",), "seed", dict(type=int, help="random seed (default 0)")),
]
_SAMPLES: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--crop",), "crop", dict(type=int, help="training crop side, even (default 480)")),
    (("--manip-prob",), "manip_prob", dict(type=float, help="probability of manipulating an unaltered crop (0.5)")),
    (("--manip-backend",), "manip_backend", dict(choices=["pil", "cv2"], help="JPEG/resize library (pil)")),
    (("--no-d4",), "d4", dict(action="store_const", const=False, help="no flips/rotations at all")),
    (("--no-d4-classes",), "no_d4_classes", dict(help="comma-separated classes whose orientation must be kept")),
    (
        ("--no-balanced",),
        "balanced",
        dict(action="store_const", const=False, help="sample uniformly, not class-balanced"),
    ),
    (
        ("--small-images",),
        "small_images",
        dict(choices=["reflect", "skip"], help="images smaller than the crop (reflect)"),
    ),
]
_MODEL: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--model",), "model", dict(help="timm model name (default efficientnet_b0)")),
    (("--weights",), "weights", dict(help="backbone weights file (.pth/.pt/.safetensors); random init without")),
    (("--drop-rate",), "drop_rate", dict(type=float, help="dropout before the head (default 0)")),
    (("--batch-size",), "batch_size", dict(type=int, help="training batch size (16)")),
    (("--epochs",), "epochs", dict(type=int, help="Adam epochs (10)")),
    (("--steps-per-epoch",), "steps_per_epoch", dict(type=int, help="batches per epoch (default: images / batch)")),
    (("--schedule",), "schedule", dict(choices=["plateau", "cosine"], help="Adam learning-rate schedule")),
    (("--lr",), "lr", dict(type=float, help="Adam learning rate (1e-4)")),
    (("--weight-decay",), "weight_decay", dict(type=float, help="L2 weight decay of Adam and SGD (0)")),
    (
        ("--plateau-patience",),
        "plateau_patience",
        dict(type=int, help="epochs without a better score before the plateau schedule halves the learning rate (2)"),
    ),
    (("--sgd-cycles",), "sgd_cycles", dict(type=int, help="SGD cosine cycles after Adam (0)")),
    (("--sgd-cycle-epochs",), "sgd_cycle_epochs", dict(type=int, help="epochs per SGD cycle (3)")),
    (("--sgd-lr",), "sgd_lr", dict(type=float, help="SGD peak learning rate (1e-3)")),
    (
        ("--ema-decay",),
        "ema_decay",
        dict(type=float, help="keep an EMA of the weights with this decay (default: no EMA)"),
    ),
    (("--no-amp",), "amp", dict(action="store_const", const=False, help="no mixed precision on CUDA")),
    (("--top-k",), "top_k", dict(type=int, help="checkpoints kept by validation score (3)")),
    (("--val-manip-weight",), "val_manip_weight", dict(type=float, help="weight of the manipulated loss (0.3)")),
    (
        ("--val-max-images",),
        "val_max_images",
        dict(type=int, help="validate on at most this many images (default: all)"),
    ),
]
_PREDICT: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--views",), "views", dict(help="comma-separated view groups: identity, d4, fivecrop (default identity)")),
    (
        ("--manip-variants",),
        "manip_variants",
        dict(help="comma-separated manipulations (or 'all') to predict too (default: none)"),
    ),
    (("--predict-size",), "predict_size", dict(type=int, help="side of the predicted region (default: the crop)")),
    (("--checkpoints",), "checkpoints", dict(choices=["top", "best", "last"], help="snapshot ensemble (top)")),
    (
        ("--batch-size-predict",),
        "batch_size_predict",
        dict(type=int, help="prediction batch size (default: the training batch size)"),
    ),
]
_RUNTIME: list[tuple[tuple[str, ...], str, dict[str, Any]]] = [
    (("--device",), "device", dict(help="auto, cpu, cuda or cuda:N (auto)")),
    (("--workers",), "workers", dict(type=int, help="DataLoader worker processes (0)")),
    (
        ("--threads",),
        "threads",
        dict(type=int, help="torch CPU threads (default: 1 below 128-px crops, else the cores the workers leave)"),
    ),
    (("--no-progress",), "progress", dict(action="store_const", const=False, help="no progress bars")),
]


def _add(p: argparse.ArgumentParser, spec: list[tuple[tuple[str, ...], str, dict[str, Any]]], title: str) -> None:
    g = p.add_argument_group(title)
    for flags, dest, kw in spec:
        if kw.get("action") not in ("store_true", "store_false", "store_const", "count") and "choices" not in kw:
            kw = {"metavar": dest.upper(), **kw}  # not CFG_<NAME>: the internal dest stays out of --help
        g.add_argument(*flags, dest=f"cfg_{dest}", default=S, **kw)


def _config(args: argparse.Namespace) -> Any:
    from level1.config import Level1Config

    cfg = Level1Config.from_file(args.config) if getattr(args, "config", None) else Level1Config()
    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    return cfg.replace(**overrides) if overrides else cfg.validate()


def _report_skipped(skipped: Sequence[Any], where: str | None) -> None:
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s)" + (f" (listed in {where})" if where else "") + ":", file=sys.stderr)
    for s in skipped[:20]:
        print(f"  {s.path}: {s.reason}", file=sys.stderr)
    if len(skipped) > 20:
        print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)


def _refuse_overwrite(args: argparse.Namespace, cfg: Any) -> None:
    """Before training: the run must not be, hold or lie in the data, and what ``oof`` writes after must be writable."""
    from stacker.errors import ConfigError

    data = [p for p in (cfg.data, cfg.holdout) if p]
    # A run inside an image folder would add its own folders as classes (or images) at the next read.
    folders = {p: "data folder" for p in data if os.path.isdir(p)}
    tests = list(getattr(args, "test", None) or [])
    missing = [t for t in tests if not os.path.exists(t)]
    if missing:
        raise ConfigError(f"--test: no such file or folder: {', '.join(repr(m) for m in missing)}")
    refuse_overwrite([args.output], data + tests, folders)
    table = getattr(args, "table", None)  # may lie in the run (its default does)
    check_output_file(table, "--table")
    refuse_overwrite([table], data + tests, folders)


def _cmd_train(args: argparse.Namespace) -> int:
    from level1.train import train_model

    cfg = _config(args)
    _refuse_overwrite(args, cfg)
    res = train_model(cfg, args.output, resume=args.resume, overwrite=args.overwrite)
    _report_skipped(res.skipped, f"{args.output}/skipped.csv")
    best = res.checkpoints[0] if res.checkpoints else None
    print(
        f"run {res.run_dir}: {len(res.history)} epochs, kept {len(res.checkpoints)} checkpoints"
        + (f", best {best['file']} (score {best['score']:.4f})" if best else "")
    )
    return 0


def _cmd_oof(args: argparse.Namespace) -> int:
    from level1.oof import train_oof

    cfg = _config(args)
    _refuse_overwrite(args, cfg)
    path, skipped = train_oof(
        cfg, args.output, test_inputs=args.test, table_path=args.table, resume=args.resume, overwrite=args.overwrite
    )
    _report_skipped(skipped, f"{args.output}/skipped.csv")
    from stacker.table import read_table

    t = read_table(path)
    print(f"wrote {path}: {len(t)} rows, {t.meta['id'].nunique()} images, model {t.models[0]}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from level1.predict import predict

    overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg_")}
    check_output_file(args.output, "-o/--output")
    folders = {args.run: "run"} | {i: "image folder" for i in args.images if os.path.isdir(i)}
    refuse_overwrite([args.output], list(args.images) + [args.manifest] * bool(args.manifest), folders)
    table, skipped = predict(args.run, args.images, args.output, manifest=args.manifest, name=args.name, **overrides)
    if skipped:
        from pathlib import Path

        from level1.data import write_skipped

        where = Path(args.output).with_suffix(".skipped.csv")
        write_skipped(skipped, where)
        _report_skipped(skipped, str(where))
    print(f"wrote {args.output}: {len(table)} rows, {table.meta['id'].nunique()} images, model {table.models[0]}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from stacker import __version__

    parser = argparse.ArgumentParser(prog="level1", description="Level-1 timm CNNs whose output is a prediction table.")
    parser.add_argument("--version", action="version", version=f"level1 (stacker {__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for name, helptext in (
        ("train", "train one model (one fold, a holdout, or all images)"),
        ("oof", "train K fold models and write the out-of-fold prediction table"),
    ):
        p = sub.add_parser(name, help=helptext, description=helptext)
        p.add_argument("--config", help="TOML or YAML config file; command-line options override it")
        p.add_argument("-o", "--output", required=True, help="run directory")
        p.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
        p.add_argument("--overwrite", action="store_true", help="replace an existing run")
        _add(p, _DATA, "data")
        _add(p, _SAMPLES, "samples")
        _add(p, _MODEL, "model and training")
        _add(p, _PREDICT, "prediction (OOF table)" if name == "oof" else "prediction defaults stored in the run")
        _add(p, _RUNTIME, "runtime")
        if name == "oof":
            p.add_argument("--test", nargs="+", help="test images/folders predicted by every fold model")
            p.add_argument("--table", help="output table (default RUN/oof.parquet)")
        p.set_defaults(func=_cmd_train if name == "train" else _cmd_oof)

    p = sub.add_parser(
        "predict",
        help="predict images with a run (or an OOF run's fold models)",
        description="Predict images with a run's checkpoints (snapshot ensemble), TTA views and "
        "manipulated variants; writes a prediction table.",
    )
    p.add_argument("run", help="run directory (train or oof output)")
    p.add_argument("images", nargs="*", help="image files or folders")
    p.add_argument("--manifest", help="manifest with paths (and labels) to predict")
    p.add_argument("-o", "--output", required=True, help="output table (parquet)")
    p.add_argument("--name", help="model name in the table (default: the run directory's name)")
    _add(p, _PREDICT + [_DATA[6]] + [_SAMPLES[6]], "prediction")
    _add(p, _RUNTIME, "runtime")
    p.set_defaults(func=_cmd_predict)
    return parser


def _with_flag_names(func: Any) -> Any:
    """``func`` with the config fields its ConfigErrors name ("option 'batch_size'") given their flags too."""
    import functools
    import re

    from stacker.errors import ConfigError

    flags = {dest: flag[0] for flag, dest, _ in _DATA + _SAMPLES + _MODEL + _PREDICT + _RUNTIME}

    def named(m: re.Match[str]) -> str:
        flag = flags.get(m.group(1))
        return f"{flag} (option {m.group(1)!r})" if flag else m.group(0)

    @functools.wraps(func)
    def run(args: argparse.Namespace) -> Any:
        try:
            return func(args)
        except ConfigError as exc:
            text = re.sub(r"option '(\w+)'", named, str(exc))
            if text == str(exc):
                raise
            raise ConfigError(text) from None

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``level1`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.command == "predict" and not args.images and not args.manifest:
        print("level1 predict: error: give image files or folders to predict, or --manifest", file=sys.stderr)
        return 2
    from stacker.console import run_command

    args.func = _with_flag_names(args.func)
    hint = f"; continue with: level1 {args.command} ... -o {args.output} --resume" if args.command != "predict" else ""
    return run_command("level1", args, interrupt_hint=hint)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

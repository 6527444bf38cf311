"""The ``holdout`` command line: scan, filter, build, learn, manipulate.

Every output is written atomically; bad input gives a one-line error and exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from stacker import __version__
from stacker.console import checked_type

__all__ = ["main", "build_parser"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}


def _progress(args) -> bool:
    return not args.quiet and sys.stderr.isatty()


def _cmd_scan(args) -> int:
    from holdout.scan import scan_dir, write_manifest
    from stacker.files import refuse_overwrite

    # Inside the folder it would be scanned next time, or replace a file being scanned.
    refuse_overwrite([args.output], [], {args.dir: "folder"})
    df = scan_dir(args.dir, jobs=args.jobs, progress=_progress(args), follow_links=args.follow_links)
    if df.empty:
        from holdout.errors import ManifestError

        raise ManifestError(f"found no files under {args.dir!r}; nothing written")
    write_manifest(df, args.output)
    bad = df[~df["ok"]]
    print(f"scanned {len(df)} files: {len(df) - len(bad)} readable, {len(bad)} not -> {args.output}")
    for row in bad.head(10).itertuples():
        print(f"  {row.path}: {row.error}")
    return 0


def _cmd_filter(args) -> int:
    from holdout.filter import filter_manifest, summarize_filter
    from holdout.rules import load_rules
    from holdout.scan import read_manifest, write_manifest
    from stacker.files import refuse_overwrite

    refuse_overwrite([args.output], [args.manifest] + [args.rules] * os.path.exists(args.rules))
    rules = load_rules(args.rules)
    df = filter_manifest(
        read_manifest(args.manifest), rules, phash_threshold=None if args.keep_near else args.phash_threshold
    )
    write_manifest(df, args.output)
    print(summarize_filter(df))
    return 0


def _cmd_build(args) -> int:
    from holdout.build import build_holdout
    from holdout.scan import read_manifest, write_manifest
    from stacker.files import refuse_overwrite

    refuse_overwrite([args.output], [args.kept] + [args.train] * bool(args.train))
    kept = read_manifest(args.kept, required=("path", "label"))
    train = read_manifest(args.train, required=("path", "label")) if args.train else None
    out = build_holdout(
        kept, args.per_class, seed=args.seed, n_folds=args.folds, train=train,
        train_per_class=args.train_per_class, manip_fraction=args.manip_fraction, allow_short=args.allow_short,
    )  # fmt: skip
    write_manifest(out, args.output)
    counts = out.groupby(["label", "source"]).size().unstack(fill_value=0)
    print(f"{len(out)} images, {out['label'].nunique()} classes, {args.folds} folds -> {args.output}")
    print(counts.to_string())
    return 0


def _cmd_learn(args) -> int:
    from holdout.errors import ManifestError
    from holdout.rules import dump_rules, learn_triples, load_rules
    from holdout.scan import read_manifest
    from stacker.files import refuse_overwrite

    refuse_overwrite([args.output], [args.manifest] + [args.rules] * os.path.exists(args.rules))
    df = read_manifest(args.manifest)
    if args.label_column:
        if args.label_column not in df.columns:
            raise ManifestError(f"file {args.manifest!r}: no column {args.label_column!r}")
        labels = df[args.label_column].astype(str)
    else:  # training images live in one folder per class
        labels = df["path"].map(lambda p: Path(p).parent.name)
    rules = load_rules(args.rules)
    learned = {k: v for k, v in learn_triples(df, labels).items() if k in rules.classes}
    if not learned:
        raise ManifestError(f"file {args.manifest!r}: no readable image has a label among {rules.class_names}")
    dump_rules(rules.with_triples(learned), args.output)
    for k, v in sorted(learned.items()):
        print(f"  {k:<24} {len(v)} triples")
    return 0


def _expand(inputs: Sequence[str]) -> list[Path]:
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out.extend(sorted(q for q in p.iterdir() if q.suffix.lower() in _IMAGE_SUFFIXES))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return out


#: ``--seed``: NumPy's generators refuse negative seeds.
_seed = checked_type(int, lambda v: v >= 0, "an integer >= 0")
#: ``--size``: a positive number of pixels, or ``none`` for the whole image.
_crop_size = checked_type(
    lambda t: None if t.strip().lower() == "none" else int(t),
    lambda v: v is None or v >= 1,
    "a positive number of pixels or 'none'",
)


def _cmd_manipulate(args) -> int:
    import numpy as np
    import pandas as pd
    from PIL import Image

    from holdout.errors import ImageError
    from holdout.manipulate import MANIPULATIONS, manipulate, parse_manipulation, random_manipulation, source_size
    from holdout.scan import write_manifest
    from stacker.errors import ConfigError
    from stacker.files import atomic_path, refuse_overwrite

    kinds = list(MANIPULATIONS) if args.kinds == "all" else [k.strip() for k in args.kinds.split(",")]
    for k in kinds:
        parse_manipulation(k)  # unknown names fail before any work
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise ConfigError(f"--kinds names {', '.join(twice)} more than once")
    if not args.output.strip():
        raise ConfigError("-o/--output is empty; give the folder to write")
    files = _expand(args.crops)
    # The output folder must not be, hold or lie in a folder of inputs: a second run would read its own outputs.
    refuse_overwrite([args.output], args.crops + files, {c: "input folder" for c in args.crops if os.path.isdir(c)})
    rng = np.random.default_rng(args.seed)
    outdir = Path(args.output)
    rows = []
    for src in files:
        try:
            with Image.open(src) as opened:
                im = opened.convert("RGB")
        except Exception as exc:
            raise ImageError(f"{src}: cannot read image ({exc})") from None
        todo = [random_manipulation(rng)] if args.random else kinds
        for kind in todo:
            try:
                out = manipulate(im, kind, size=args.size, backend=args.backend)
            except ImageError as exc:
                hint = ""
                if "needs a centre crop" in str(exc) and args.size:
                    side = min(im.size)
                    # The largest size whose source crop fits (a crop larger than the output is manipulated first).
                    fits = [s for s in range(2, side + 1, 2) if source_size(kind, s) <= side]
                    most = f"at most {fits[-1]} for this image" if fits else "the image is too small for any"
                    hint = f"; pass a smaller --size ({most}) or --size none to manipulate the whole image"
                raise ImageError(f"{src}: {exc}{hint}") from None
            outdir.mkdir(parents=True, exist_ok=True)  # here: a first input that fails leaves no empty folder
            dest = outdir / f"{src.stem}__{kind}.png"  # PNG: no second lossy step
            with atomic_path(dest) as tmp:
                out.save(tmp, format="PNG")
            rows.append({"path": str(dest), "source": str(src), "manip": 1, "manip_kind": kind,
                         "backend": args.backend, "size": args.size or 0})  # fmt: skip
    df = pd.DataFrame(rows, columns=["path", "source", "manip", "manip_kind", "backend", "size"])
    outdir.mkdir(parents=True, exist_ok=True)
    write_manifest(df, outdir / "manifest.parquet")
    print(f"wrote {len(df)} images from {len(files)} inputs -> {outdir} (manifest.parquet)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from holdout.filter import DEFAULT_PHASH_THRESHOLD
    from holdout.manipulate import BACKENDS, MANIPULATIONS

    parser = argparse.ArgumentParser(
        prog="holdout",
        description="Build an external holdout from EXIF-verified photos, and apply the challenge's manipulations.",
    )
    parser.add_argument("--version", action="version", version=f"holdout (stacker {__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "scan",
        help="read EXIF, size, JPEG quality and hashes of every file under DIR",
        description="Read EXIF, size, JPEG quality and hashes of every file under DIR.",
    )
    p.add_argument("dir", help="folder to scan (recursively)")
    p.add_argument("-o", "--output", required=True, help="manifest to write (parquet)")
    p.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="worker processes (default: all CPUs)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="also scan symbolic links to files inside DIR (links are skipped by default)",
    )
    p.set_defaults(func=_cmd_scan)

    p = sub.add_parser(
        "filter",
        help="apply camera rules and remove exact and near duplicates",
        description="Apply camera rules and remove exact and near duplicates.",
    )
    p.add_argument("manifest", help="manifest from `holdout scan`")
    p.add_argument("--rules", required=True, help="rule file (TOML/YAML) or a shipped rule set: cmi10")
    p.add_argument("-o", "--output", required=True, help="every row with kept/label/reason (parquet)")
    p.add_argument(
        "--phash-threshold",
        type=int,
        default=DEFAULT_PHASH_THRESHOLD,
        help=f"max pHash Hamming distance of near duplicates (default {DEFAULT_PHASH_THRESHOLD})",
    )
    p.add_argument("--keep-near", action="store_true", help="remove exact duplicates only")
    p.set_defaults(func=_cmd_filter)

    p = sub.add_parser(
        "build", help="a balanced holdout list with folds", description="A balanced holdout list with folds."
    )
    p.add_argument("kept", help="output of `holdout filter`")
    p.add_argument("--per-class", type=int, required=True, help="external images per class")
    p.add_argument("--seed", type=_seed, default=0, help="random seed (default 0)")
    p.add_argument("--folds", type=int, default=5, help="number of folds (default 5)")
    p.add_argument("--train", help="training list (parquet with path, label) to mix in")
    p.add_argument("--train-per-class", type=int, default=0, help="training images per class (default 0)")
    p.add_argument(
        "--manip-fraction",
        type=float,
        default=0.0,
        help="fraction of rows given a random manipulation (adds manip, manip_kind)",
    )
    p.add_argument("--allow-short", action="store_true", help="accept classes with fewer images")
    p.add_argument("-o", "--output", required=True, help="holdout list (parquet)")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser(
        "learn",
        help="learn allowed (width, height, quality) triples from a scanned training set",
        description="Learn allowed (width, height, quality) triples from a scanned training set.",
    )
    p.add_argument("manifest", help="`holdout scan` of the training images (one folder per class)")
    p.add_argument("--rules", default="cmi10", help="rule file to extend (default: cmi10)")
    p.add_argument("--label-column", help="column with the class (default: the parent folder name)")
    p.add_argument("-o", "--output", required=True, help="rule file to write (TOML)")
    p.set_defaults(func=_cmd_learn)

    p = sub.add_parser(
        "manipulate",
        help="write manipulated copies of crops and a manifest",
        description="Write manipulated copies of crops and a manifest.",
    )
    p.add_argument("crops", nargs="+", help="image files or folders of images")
    p.add_argument("-o", "--output", required=True, help="output folder (PNG files + manifest.parquet)")
    p.add_argument(
        "--kinds", default="all", help=f"comma-separated names or 'all' ({', '.join(MANIPULATIONS)}; default all)"
    )
    p.add_argument("--random", action="store_true", help="one random manipulation per input instead of all kinds")
    p.add_argument("--seed", type=_seed, default=0, help="seed of --random (default 0)")
    p.add_argument(
        "--size",
        type=_crop_size,
        default=512,
        help="output crop side; 'none' manipulates the whole image (default 512)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="pil", help="JPEG/resize library (default pil)")
    p.set_defaults(func=_cmd_manipulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``holdout`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from stacker.console import run_command

    return run_command("holdout", args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

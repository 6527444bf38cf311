"""Image sources, splits, crops and the torch datasets of the level-1 pipeline.

Sources
    :func:`scan_folder` (``root/<class>/*.jpg``), :func:`read_manifest` (CSV or parquet
    with path, label, fold, manipulation columns) and :func:`collect_images` (files and
    folders given on a command line).  Each returns :class:`ImageRecord` s plus a list of
    :class:`Skipped` files; bad files are never fatal, bad *sources* are
    (:class:`~level1.errors.ImageDataError`).

Samples
    Training crops start at even coordinates so the Bayer pattern of every crop is
    aligned the same way.  An unaltered image is manipulated with probability
    ``manip_prob`` by one of :data:`holdout.manipulate.MANIPULATIONS` the challenge's way:
    an (even-aligned) crop of twice the size, the manipulation, then the centre crop.
    D4 flips/rotations are drawn only for classes not listed in ``no_d4_classes``.

Images smaller than the crop (rule ``small_images``)
    ``reflect`` pads them at the bottom/right by mirror reflection up to the crop (the
    pixels that exist keep their noise and their grid position); ``skip`` drops them and
    lists them as skipped.  Resampling is never used: it would erase the sensor noise.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from level1.errors import ImageDataError
from level1.imageio import IMAGE_EXTENSIONS, ImageReadError, probe_image, read_image
from stacker.errors import ConfigError

__all__ = [
    "ImageRecord",
    "Skipped",
    "scan_folder",
    "read_manifest",
    "read_config_manifest",
    "collect_images",
    "load_source",
    "probe_records",
    "assign_folds",
    "split_records",
    "read_id_list",
    "d4_transform",
    "pad_reflect",
    "random_even_crop",
    "center_crop_even",
    "train_crop",
    "predict_base",
    "make_views",
    "view_names",
    "D4_NAMES",
    "FIVECROP_NAMES",
    "TrainDataset",
    "EvalDataset",
    "BalancedSampler",
    "collate_eval",
    "write_skipped",
]


@dataclass(frozen=True)
class ImageRecord:
    """One image: its id in the prediction table, file, class, manipulation and fold."""

    id: str
    path: str
    label: str | None = None
    manip: int = 0
    manip_kind: str = ""
    fold: int | None = None


@dataclass(frozen=True)
class Skipped:
    """A file left out, and why."""

    path: str
    reason: str


def _manip_from_name(name: str, pattern: re.Pattern[str] | None) -> int:
    return int(bool(pattern and pattern.search(name)))


def _compile(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"option 'manip_pattern' is not a valid regular expression ({exc}): {pattern!r}") from None


# --------------------------------------------------------------------- sources
def scan_folder(
    root: str | os.PathLike[str], *, manip_pattern: str | None = None
) -> tuple[list[ImageRecord], list[str], list[Skipped]]:
    """Records of ``root/<class>/<file>``: one class per sub-folder, ids ``<class>/<file>``.

    Files without an image extension are skipped and listed.  A missing root, a root
    without sub-folders, or a class folder without any image file is an
    :class:`~level1.errors.ImageDataError`.
    """
    base = Path(root)
    if not base.is_dir():
        raise ImageDataError(f"image folder {str(base)!r} does not exist or is not a folder")
    pattern = _compile(manip_pattern)
    class_dirs = sorted(d for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise ImageDataError(f"image folder {str(base)!r} has no class sub-folders (expected root/<class>/*.jpg)")
    records: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for d in class_dirs:
        if "/" in d.name:  # pragma: no cover - impossible on POSIX
            raise ImageDataError(f"class folder name {d.name!r} contains '/'")
        files = sorted(f for f in d.rglob("*") if f.is_file() and not f.name.startswith("."))
        images = [f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS]
        skipped += [Skipped(str(f), "not an image file extension") for f in files if f not in set(images)]
        if not images:
            raise ImageDataError(
                f"class folder {str(d)!r} is empty: no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})"
            )
        for f in images:
            rel = f.relative_to(base).as_posix()
            records.append(ImageRecord(rel, str(f), d.name, _manip_from_name(f.name, pattern)))
    return records, [d.name for d in class_dirs], skipped


def read_manifest(
    path: str | os.PathLike[str],
    *,
    path_col: str = "path",
    label_col: str = "label",
    fold_col: str = "fold",
    manip_col: str = "manip",
    kind_col: str = "manip_kind",
    manip_pattern: str | None = None,
) -> tuple[list[ImageRecord], list[str], list[Skipped]]:
    """Records from a CSV or parquet manifest; paths are relative to the manifest's folder.

    Only the path column is required.  ``kind_col`` (also found as ``manipulation``) holds a
    manipulation name ("" or null = unaltered) and implies ``manip = 1``; ``manip_col`` holds
    0/1 (or booleans).  Listed files that do not exist are skipped and listed.
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise ImageDataError(f"manifest {str(p)!r} does not exist")
    try:
        frame = pd.read_parquet(p) if p.suffix.lower() in (".parquet", ".pq") else pd.read_csv(p)
    except Exception as exc:
        raise ImageDataError(f"manifest {str(p)!r} cannot be read ({exc})") from None
    if kind_col not in frame.columns and "manipulation" in frame.columns:
        kind_col = "manipulation"
    if path_col not in frame.columns:
        raise ImageDataError(
            f"manifest {str(p)!r} has no path column {path_col!r} (columns: {list(frame.columns)}); set path_col"
        )
    if len(frame) == 0:
        raise ImageDataError(f"manifest {str(p)!r} has no rows")
    pattern = _compile(manip_pattern)
    base = p.parent
    from holdout.manipulate import MANIPULATIONS

    records: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for i, row in enumerate(frame.to_dict("records")):
        raw = row[path_col]
        if raw is None or (isinstance(raw, float) and np.isnan(raw)) or str(raw) == "":
            raise ImageDataError(f"manifest {str(p)!r}, column {path_col!r}: empty path in row {i}")
        rel = str(raw)
        file = Path(rel) if Path(rel).is_absolute() else base / rel
        label = row.get(label_col) if label_col in frame.columns else None
        label = None if label is None or (isinstance(label, float) and np.isnan(label)) else str(label)
        if label is not None and "/" in label:
            raise ImageDataError(
                f"manifest {str(p)!r}, column {label_col!r}, row {i}: class name {label!r} contains '/'"
            )
        kind = row.get(kind_col) if kind_col in frame.columns else None
        kind = "" if kind is None or (isinstance(kind, float) and np.isnan(kind)) else str(kind)
        if kind and kind not in MANIPULATIONS and kind not in ("1", "unknown"):
            raise ImageDataError(
                f"manifest {str(p)!r}, column {kind_col!r}, row {i}: unknown manipulation {kind!r} "
                f"(expected one of {list(MANIPULATIONS)}, 'unknown' or empty)"
            )
        kind = kind if kind in MANIPULATIONS else ""
        manip = 1 if kind or kind_col in frame.columns and str(row.get(kind_col)) in ("1", "unknown") else 0
        if manip_col in frame.columns:
            v = row[manip_col]
            if v in (0, 1, True, False) or str(v) in ("0", "1"):
                manip = max(manip, int(v))
            else:
                raise ImageDataError(f"manifest {str(p)!r}, column {manip_col!r}, row {i}: expected 0/1, got {v!r}")
        manip = max(manip, _manip_from_name(Path(rel).name, pattern))
        fold = None
        if fold_col in frame.columns:
            v = row[fold_col]
            if v is not None and not (isinstance(v, float) and np.isnan(v)):
                if float(v) != int(float(v)) or int(float(v)) < 0:
                    raise ImageDataError(f"manifest {str(p)!r}, column {fold_col!r}, row {i}: bad fold {v!r}")
                fold = int(float(v))
        if not file.is_file():
            skipped.append(Skipped(str(file), "no such file (listed in the manifest)"))
            continue
        records.append(ImageRecord(rel, str(file), label, manip, kind, fold))
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ImageDataError(f"manifest {str(p)!r}, column {path_col!r}: duplicate paths {dup}")
    classes = sorted({r.label for r in records if r.label is not None})
    return records, classes, skipped


def collect_images(
    inputs: Sequence[str | os.PathLike[str]], *, manip_pattern: str | None = None
) -> tuple[list[ImageRecord], list[Skipped]]:
    """Unlabelled records from files and folders (searched recursively).

    Ids are paths relative to the folder given (``sub/x.jpg``) or the file name for a file
    given directly.  Files without an image extension inside folders are skipped and listed.
    """
    pattern = _compile(manip_pattern)
    records: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for f in sorted(x for x in p.rglob("*") if x.is_file() and not x.name.startswith(".")):
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    skipped.append(Skipped(str(f), "not an image file extension"))
                    continue
                records.append(
                    ImageRecord(f.relative_to(p).as_posix(), str(f), None, _manip_from_name(f.name, pattern))
                )
        elif p.is_file():
            records.append(ImageRecord(p.name, str(p), None, _manip_from_name(p.name, pattern)))
        else:
            raise ImageDataError(f"input {str(p)!r} does not exist")
    ids = [r.id for r in records]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ImageDataError(f"several input images share the id(s) {dup}; pass their common parent folder instead")
    return records, skipped


def read_config_manifest(path: str | os.PathLike[str], cfg: Any) -> tuple[list[ImageRecord], list[str], list[Skipped]]:
    """:func:`read_manifest` with the column names and manipulation pattern of a :class:`Level1Config`."""
    return read_manifest(
        path,
        path_col=cfg.path_col,
        label_col=cfg.label_col,
        fold_col=cfg.fold_col,
        manip_col=cfg.manip_col,
        kind_col=cfg.kind_col,
        manip_pattern=cfg.manip_pattern,
    )


def load_source(cfg: Any) -> tuple[list[ImageRecord], list[str], list[Skipped]]:
    """Records, classes and skipped files of ``cfg.data`` (a folder or a manifest)."""
    if not cfg.data:
        raise ConfigError("option 'data' is required: an image folder (root/<class>/*.jpg) or a manifest")
    p = Path(cfg.data)
    if p.is_dir():
        return scan_folder(p, manip_pattern=cfg.manip_pattern)
    if p.is_file():
        return read_config_manifest(p, cfg)
    raise ImageDataError(f"data {str(p)!r} is neither an image folder nor a manifest file")


def probe_records(
    records: Sequence[ImageRecord], *, min_side: int | None = None
) -> tuple[list[ImageRecord], list[Skipped]]:
    """Drop records whose header cannot be read, or (``min_side`` given) whose image is smaller."""
    ok: list[ImageRecord] = []
    skipped: list[Skipped] = []
    for r in records:
        try:
            w, h = probe_image(r.path)
        except ImageReadError as exc:
            skipped.append(Skipped(r.path, exc.reason))
            continue
        if min_side is not None and min(w, h) < min_side:
            skipped.append(
                Skipped(r.path, f"image of {w}x{h} is smaller than the crop {min_side} (small_images='skip')")
            )
            continue
        ok.append(r)
    return ok, skipped


def write_skipped(skipped: Sequence[Skipped], path: str | os.PathLike[str]) -> None:
    """Write ``path,reason`` rows (atomically)."""
    import csv
    import io

    from stacker.files import atomic_write_text

    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "reason"])
    for s in skipped:
        w.writerow([s.path, s.reason])
    atomic_write_text(path, buf.getvalue())


# ---------------------------------------------------------------------- splits
def assign_folds(records: Sequence[ImageRecord], k: int, seed: int = 0) -> list[ImageRecord]:
    """K folds stratified by label and grouped by image id (:func:`stacker.cv.grouped_folds`, the Blend's
    fold function); records that already carry a fold keep it."""
    import dataclasses

    if all(r.fold is not None for r in records):
        bad = sorted({int(r.fold) for r in records if r.fold is not None and r.fold >= k})
        if bad:
            raise ImageDataError(f"the source's fold column has folds {bad} but folds={k}")
        return list(records)
    if any(r.fold is not None for r in records):
        raise ImageDataError("the source's fold column is filled for some images only")
    if any(r.label is None for r in records):
        raise ImageDataError("a stratified split needs a label for every image")
    from stacker.cv import grouped_folds
    from stacker.errors import ConfigError, LabelError

    classes, y = np.unique(np.array([r.label for r in records]), return_inverse=True)
    try:
        folds = grouped_folds(y, np.array([r.id for r in records], dtype=object), k, seed, classes=list(classes))
    except (LabelError, ConfigError) as exc:
        raise ImageDataError(exc.reason if isinstance(exc, LabelError) else str(exc)) from None
    return [dataclasses.replace(r, fold=int(f)) for r, f in zip(records, folds)]


def read_id_list(path: str | os.PathLike[str]) -> set[str]:
    """Ids from a holdout list: one a line, or a CSV with an ``id`` or ``path`` column."""
    p = Path(path)
    if not p.is_file():
        raise ImageDataError(f"holdout list {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ImageDataError(
            f"holdout list {str(p)!r} is not a text file (one id a line, or a CSV with an id/path/fname column)"
        ) from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ImageDataError(f"holdout list {str(p)!r} is empty")
    if p.suffix.lower() == ".csv":
        import pandas as pd

        try:
            frame = pd.read_csv(p)
        except (ValueError, pd.errors.ParserError) as exc:
            raise ImageDataError(f"holdout list {str(p)!r} is not a readable CSV ({exc})") from None
        for col in ("id", "path", "fname"):
            if col in frame.columns:
                return {str(v) for v in frame[col].dropna()}
        raise ImageDataError(f"holdout list {str(p)!r} has no 'id', 'path' or 'fname' column")
    return set(lines)


def split_records(records: Sequence[ImageRecord], cfg: Any) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """Training and validation records of ``cfg``: by fold, by holdout list, or all for training."""
    if cfg.holdout:
        ids = read_id_list(cfg.holdout)
        names = {Path(i).name for i in ids}
        val = [r for r in records if r.id in ids or Path(r.id).name in names]
        if not val:
            raise ImageDataError(f"no image of the source is in the holdout list {cfg.holdout!r}")
        vset = {r.id for r in val}
        return [r for r in records if r.id not in vset], val
    if cfg.folds >= 2:
        records = assign_folds(records, cfg.folds, cfg.seed)
        if cfg.fold is None:
            raise ConfigError("option 'fold' is required with folds >= 2 (or use `level1 oof` for all folds)")
        return [r for r in records if r.fold != cfg.fold], [r for r in records if r.fold == cfg.fold]
    return list(records), []


# ------------------------------------------------------------------ geometry
#: D4 view names: ``identity`` is the group's identity element, ``d4-1``..``d4-7`` the others.
D4_NAMES = ("identity",) + tuple(f"d4-{k}" for k in range(1, 8))
_CORNERS = ("tl", "tr", "bl", "br", "c")
FIVECROP_NAMES = tuple(f"crop-{c}-rot{r}" for c in _CORNERS for r in (0, 90, 180, 270))


def d4_transform(arr: np.ndarray, k: int) -> np.ndarray:
    """Element ``k`` (0..7) of the dihedral group: ``k % 4`` quarter turns, transposed when ``k >= 4``."""
    out = np.rot90(arr, k % 4, axes=(0, 1))
    if k >= 4:
        out = out.transpose(1, 0, 2)
    return out


def pad_reflect(arr: np.ndarray, size: int) -> np.ndarray:
    """Pad at the bottom/right by mirror reflection so both sides are at least ``size``."""
    h, w = arr.shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if not ph and not pw:
        return arr
    return np.pad(arr, ((0, ph), (0, pw), (0, 0)), mode="symmetric")


def random_even_crop(arr: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` crop at a random even offset (pads by reflection first if too small)."""
    arr = pad_reflect(arr, size)
    h, w = arr.shape[:2]
    top = 2 * int(rng.integers(0, (h - size) // 2 + 1))
    left = 2 * int(rng.integers(0, (w - size) // 2 + 1))
    return arr[top : top + size, left : left + size]


def center_crop_even(arr: np.ndarray, size: int) -> np.ndarray:
    """The centre ``size`` crop, its offset rounded down to even (pads by reflection if too small)."""
    arr = pad_reflect(arr, size)
    h, w = arr.shape[:2]
    top, left = ((h - size) // 2) & ~1, ((w - size) // 2) & ~1
    return arr[top : top + size, left : left + size]


def _manipulated_crop(
    arr: np.ndarray, kind: str, size: int, backend: str, rng: np.random.Generator | None
) -> np.ndarray:
    """Crop twice the size (randomly at even offsets, or centred), manipulate, centre-crop ``size``."""
    from holdout.manipulate import manipulate, source_size

    side = source_size(kind, size)
    h, w = arr.shape[:2]
    if h >= side and w >= side:
        patch = random_even_crop(arr, side, rng) if rng is not None else center_crop_even(arr, side)
        return np.asarray(manipulate(np.ascontiguousarray(patch), kind, size=size, backend=backend))
    # Smaller than the wide first crop (e.g. 512 px crops): manipulate what there is.
    out = np.asarray(manipulate(np.ascontiguousarray(arr), kind, size=None, backend=backend))
    return random_even_crop(out, size, rng) if rng is not None else center_crop_even(out, size)


def train_crop(
    arr: np.ndarray,
    *,
    size: int,
    manip: int,
    manip_prob: float,
    d4: bool,
    rng: np.random.Generator,
    backend: str = "pil",
) -> tuple[np.ndarray, int, str]:
    """One training sample: ``(crop, manip flag, manipulation name or "")``."""
    from holdout.manipulate import random_manipulation

    kind = ""
    if not manip and manip_prob > 0 and rng.random() < manip_prob:
        kind = random_manipulation(rng)
        out = _manipulated_crop(arr, kind, size, backend, rng)
        manip = 1
    else:
        out = random_even_crop(arr, size, rng)
    if d4:
        out = d4_transform(out, int(rng.integers(8)))
    return np.ascontiguousarray(out), int(manip), kind


def predict_base(arr: np.ndarray, kind: str, size: int, backend: str = "pil") -> np.ndarray:
    """The ``size`` image the views are taken from: the centre crop, or a manipulated variant."""
    if not kind:
        return center_crop_even(arr, size)
    return _manipulated_crop(arr, kind, size, backend, None)


def view_names(groups: Sequence[str]) -> list[str]:
    """Names of the views produced by ``groups``, in order, without repeats."""
    names: list[str] = []
    for g in groups:
        new = {"identity": ("identity",), "d4": D4_NAMES, "fivecrop": FIVECROP_NAMES}[g]
        names += [n for n in new if n not in names]
    return names


def make_views(base: np.ndarray, groups: Sequence[str], crop: int) -> dict[str, np.ndarray]:
    """The TTA views of ``base`` (see :data:`level1.config.VIEW_GROUPS`)."""
    out: dict[str, np.ndarray] = {}
    for g in groups:
        if g in ("identity", "d4"):
            out.setdefault("identity", base)
        if g == "d4":
            for k in range(1, 8):
                out.setdefault(D4_NAMES[k], d4_transform(base, k))
        if g == "fivecrop":
            h, w = base.shape[:2]
            bottom, right = (h - crop) & ~1, (w - crop) & ~1
            cy, cx = ((h - crop) // 2) & ~1, ((w - crop) // 2) & ~1
            offs = {"tl": (0, 0), "tr": (0, right), "bl": (bottom, 0), "br": (bottom, right), "c": (cy, cx)}
            for c in _CORNERS:
                top, left = offs[c]
                patch = base[top : top + crop, left : left + crop]
                for r in range(4):
                    out[f"crop-{c}-rot{90 * r}"] = np.rot90(patch, r, axes=(0, 1))
    return out


# -------------------------------------------------------------------- datasets
def _to_tensor(arr: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


class TrainDataset:
    """Random training crops; indexed by ``(record index, sample seed)`` from :class:`BalancedSampler`.

    A file that fails to decode is replaced by the next record (up to 16 tries) and reported
    in the sample's ``bad`` field (``path\\treason`` lines) so the trainer can list it.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_index: dict[str, int],
        *,
        crop: int,
        manip_prob: float,
        d4_labels: set[str] | None,
        backend: str = "pil",
    ) -> None:
        self.records = list(records)
        self.class_index = class_index
        self.crop = crop
        self.manip_prob = manip_prob
        self.d4_labels = d4_labels
        self.backend = backend

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        import torch

        index, seed = key
        rng = np.random.default_rng(seed)
        bad: list[str] = []
        for attempt in range(16):
            rec = self.records[(index + attempt) % len(self.records)]
            try:
                arr = read_image(rec.path)
            except ImageReadError as exc:
                bad.append(f"{exc.path}\t{exc.reason}")
                continue
            d4 = self.d4_labels is None or rec.label in self.d4_labels
            out, manip, kind = train_crop(
                arr, size=self.crop, manip=rec.manip, manip_prob=self.manip_prob, d4=d4, rng=rng, backend=self.backend
            )
            return {
                "image": _to_tensor(out),
                "label": torch.tensor(self.class_index[rec.label], dtype=torch.long),  # type: ignore[index]
                "manip": torch.tensor(float(manip)),
                "bad": "\n".join(bad),
            }
        raise ImageDataError("16 consecutive images failed to decode:\n" + "\n".join(bad))


class EvalDataset:
    """Prediction/validation samples: item ``i`` is ``(record, manipulation)`` with all its views.

    Items whose file fails to decode come back with ``bad`` set and no views; callers drop them.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        items: Sequence[tuple[int, str]],
        *,
        size: int,
        crop: int,
        groups: Sequence[str],
        backend: str = "pil",
    ) -> None:
        self.records = list(records)
        self.items = list(items)
        self.size = size
        self.crop = crop
        self.groups = list(groups)
        self.backend = backend

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rec_i, kind = self.items[i]
        rec = self.records[rec_i]
        try:
            arr = read_image(rec.path)
        except ImageReadError as exc:
            return {"item": i, "views": None, "bad": f"{exc.path}\t{exc.reason}"}
        base = predict_base(arr, kind, self.size, self.backend)
        views = make_views(base, self.groups, self.crop)
        return {"item": i, "views": {k: _to_tensor(v) for k, v in views.items()}, "bad": ""}


def collate_eval(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack each view over the items that decoded; keep the failures' reasons."""
    import torch

    good = [b for b in batch if b["views"] is not None]
    views: dict[str, Any] = {}
    if good:
        for name in good[0]["views"]:
            views[name] = torch.stack([b["views"][name] for b in good])
    return {
        "item": torch.tensor([b["item"] for b in good], dtype=torch.long),
        "views": views,
        "bad": [b["bad"] for b in batch if b["bad"]],
    }


class BalancedSampler:
    """Yields ``(record index, sample seed)`` pairs; class-balanced draws with replacement.

    ``balanced=False`` draws a random permutation (repeated as needed).  The stream is a
    pure function of ``(seed, epoch)``, so a resumed run replays the same epochs.
    """

    def __init__(self, labels: Sequence[int], n_samples: int, *, seed: int = 0, balanced: bool = True) -> None:
        self.labels = np.asarray(labels)
        self.n_samples = int(n_samples)
        self.seed = int(seed)
        self.balanced = balanced
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n_samples

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch])
        n = len(self.labels)
        if self.balanced:
            classes, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
            weights = 1.0 / counts[inverse]
            return rng.choice(n, size=self.n_samples, replace=True, p=weights / weights.sum())
        reps = -(-self.n_samples // n)
        return np.concatenate([rng.permutation(n) for _ in range(reps)])[: self.n_samples]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        idx = self.indices()
        base = (self.seed * 1_000_003 + self.epoch) * 10_000_019
        for pos, i in enumerate(idx):
            yield int(i), base + pos

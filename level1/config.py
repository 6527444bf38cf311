"""The level-1 training and prediction configuration.

One flat dataclass, :class:`Level1Config`, loadable from TOML or YAML (a
``[level1]`` table / ``level1:`` mapping, or the top level) and overridable from
the command line.  :meth:`Level1Config.validate` checks every field and raises
:class:`stacker.errors.ConfigError` naming the field.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stacker.errors import ConfigError

__all__ = ["Level1Config", "VIEW_GROUPS", "SCHEDULES", "SMALL_IMAGE_RULES", "CHECKPOINT_CHOICES"]

#: TTA view groups: ``identity``; ``d4`` (the 8 flips/rotations, ``d4-0`` .. ``d4-7``,
#: ``d4-0`` being the identity); ``fivecrop`` (four corner and the centre crops of
#: ``crop`` pixels from the ``predict_size`` image, each rotated by 0/90/180/270 degrees).
VIEW_GROUPS = ("identity", "d4", "fivecrop")
SCHEDULES = ("plateau", "cosine")
#: Images smaller than the crop: ``reflect`` pads them by reflection up to the crop
#: (resampling would destroy the sensor noise the model looks at); ``skip`` drops them
#: and lists them in ``skipped.csv``.
SMALL_IMAGE_RULES = ("reflect", "skip")
CHECKPOINT_CHOICES = ("top", "best", "last")

# Fields that only change how a run executes, not what it learns: a resumed run may change them.
RUNTIME_FIELDS = frozenset({"device", "workers", "threads", "progress", "batch_size_predict"})


@dataclass
class Level1Config:
    """Everything a level-1 run needs.  See ``level1 train --help`` for the options.

    Data
    ----
    data : image folder (``root/<class>/*.jpg``) or manifest (CSV/parquet).
    path_col, label_col, fold_col, manip_col, kind_col : manifest column names
        (paths are relative to the manifest's folder).
    manip_pattern : regular expression; file names that match it are flagged as
        already manipulated (e.g. ``_manip`` for the challenge's test names).
    folds, fold : stratified K-fold split (or the manifest's fold column); the run
        validates on fold ``fold`` and trains on the others.
    holdout : file of image ids (one a line, or a CSV with an ``id``/``path`` column)
        used for validation instead of a fold.
    """

    # data
    data: str | None = None
    path_col: str = "path"
    label_col: str = "label"
    fold_col: str = "fold"
    manip_col: str = "manip"
    kind_col: str = "manip_kind"
    manip_pattern: str | None = None
    folds: int = 0
    fold: int | None = None
    holdout: str | None = None
    seed: int = 0
    # samples
    crop: int = 480
    manip_prob: float = 0.5
    manip_backend: str = "pil"
    d4: bool = True
    no_d4_classes: list[str] = field(default_factory=list)
    balanced: bool = True
    small_images: str = "reflect"
    # model
    model: str = "efficientnet_b0"
    weights: str | None = None
    drop_rate: float = 0.0
    # optimisation
    batch_size: int = 16
    epochs: int = 10
    steps_per_epoch: int | None = None
    schedule: str = "plateau"
    lr: float = 1e-4
    weight_decay: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    sgd_cycles: int = 0
    sgd_cycle_epochs: int = 3
    sgd_lr: float = 1e-3
    sgd_momentum: float = 0.9
    ema_decay: float | None = None
    amp: bool = True
    top_k: int = 3
    val_manip_weight: float = 0.3
    val_max_images: int | None = None
    # prediction
    views: list[str] = field(default_factory=lambda: ["identity"])
    manip_variants: list[str] = field(default_factory=list)
    predict_size: int | None = None
    checkpoints: str = "top"
    batch_size_predict: int | None = None
    # runtime
    device: str = "auto"
    workers: int = 0
    threads: int | None = None
    progress: bool = True

    # ------------------------------------------------------------------ loading
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str | None = None) -> Level1Config:
        """Build from a mapping; unknown keys are refused (a typo must not be ignored)."""
        names = set(cls.field_names())
        unknown = sorted(k for k in values if k not in names)
        if unknown:
            where = f"{source}: " if source else ""
            raise ConfigError(f"{where}unknown level1 option(s) {unknown}; known: {sorted(names)}")
        fields: dict[str, Any] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()}
        cfg = cls(**fields)
        return cfg.validate(source=source)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> Level1Config:
        """Read a TOML (``.toml``) or YAML (``.yaml``/``.yml``) file."""
        from stacker.config import CONFIG_SUFFIXES, load_config

        p = Path(path)
        if p.is_file() and p.suffix.lower() not in CONFIG_SUFFIXES:
            raise ConfigError(f"config file {str(p)!r}: expected .toml, .yaml or .yml")
        raw = load_config(p, "config file")
        if isinstance(raw.get("level1"), dict):
            raw = raw["level1"]
        return cls.from_dict(raw, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> Level1Config:
        """A copy with some fields changed (None values are ignored), validated."""
        changes = {k: v for k, v in changes.items() if v is not None}
        return Level1Config.from_dict({**self.to_dict(), **changes})

    # --------------------------------------------------------------- validation
    def validate(self, *, source: str | None = None) -> Level1Config:
        """Check every field; return ``self``."""
        where = f"{source}: " if source else ""

        def bad(name: str, why: str) -> ConfigError:
            return ConfigError(f"{where}option {name!r} {why} (got {getattr(self, name)!r})")

        def positive_int(name: str, *, allow_none: bool = False, minimum: int = 1) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise bad(name, f"must be an integer >= {minimum}" + (" or null" if allow_none else ""))

        def number(name: str, lo: float, hi: float, *, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (lo <= v <= hi):
                raise bad(name, f"must be a number in [{lo}, {hi}]")

        for name in ("crop", "batch_size", "epochs", "top_k", "sgd_cycle_epochs"):
            positive_int(name)
        for name in ("steps_per_epoch", "val_max_images", "predict_size", "batch_size_predict"):
            positive_int(name, allow_none=True)
        positive_int("workers", minimum=0)
        positive_int("threads", allow_none=True)
        positive_int("sgd_cycles", minimum=0)
        positive_int("plateau_patience", minimum=0)
        positive_int("seed", minimum=0)
        positive_int("folds", minimum=0)
        if self.folds == 1:
            raise bad("folds", "must be 0 (no split) or at least 2")
        if self.fold is not None:
            positive_int("fold", minimum=0)
            if self.folds < 2:
                raise bad("fold", "needs folds >= 2")
            if self.fold >= self.folds:
                raise bad("fold", f"must be below folds={self.folds}")
        if self.holdout is not None and self.fold is not None:
            raise bad("holdout", "and 'fold' are exclusive: validate on a holdout list or on a fold")
        if self.crop % 2:
            raise bad("crop", "must be even (crops keep the Bayer pattern aligned)")
        if self.predict_size is not None and self.predict_size % 2:
            raise bad("predict_size", "must be even")
        number("manip_prob", 0.0, 1.0)
        number("drop_rate", 0.0, 0.99)
        number("lr", 1e-12, 10.0)
        number("sgd_lr", 1e-12, 10.0)
        number("sgd_momentum", 0.0, 1.0)
        number("weight_decay", 0.0, 1.0)
        number("plateau_factor", 1e-6, 0.999)
        number("val_manip_weight", 0.0, 1.0)
        number("ema_decay", 0.0, 0.999999, allow_none=True)
        if self.schedule not in SCHEDULES:
            raise bad("schedule", f"must be one of {list(SCHEDULES)}")
        if self.small_images not in SMALL_IMAGE_RULES:
            raise bad("small_images", f"must be one of {list(SMALL_IMAGE_RULES)}")
        if self.checkpoints not in CHECKPOINT_CHOICES:
            raise bad("checkpoints", f"must be one of {list(CHECKPOINT_CHOICES)}")
        if self.device not in ("auto", "cpu", "cuda") and not str(self.device).startswith("cuda:"):
            raise bad("device", "must be auto, cpu, cuda or cuda:N")
        if self.manip_backend not in ("pil", "cv2"):
            raise bad("manip_backend", "must be 'pil' or 'cv2'")
        if not isinstance(self.model, str) or not self.model:
            raise bad("model", "must be a timm model name")
        for name in ("views", "manip_variants", "no_d4_classes"):
            v = getattr(self, name)
            if isinstance(v, str):
                setattr(self, name, [s.strip() for s in v.split(",") if s.strip()])
            elif not isinstance(v, list) or not all(isinstance(s, str) for s in v):
                raise bad(name, "must be a list of strings")
        if not self.views:
            raise bad("views", "must name at least one view group")
        unknown = [v for v in self.views if v not in VIEW_GROUPS]
        if unknown:
            raise bad("views", f"has unknown view groups {unknown}; known: {list(VIEW_GROUPS)}")
        if self.manip_variants == ["all"]:
            from holdout.manipulate import MANIPULATIONS

            self.manip_variants = list(MANIPULATIONS)
        if self.manip_variants:
            from holdout.manipulate import MANIPULATIONS

            unknown = [v for v in self.manip_variants if v not in MANIPULATIONS]
            if unknown:
                raise bad(
                    "manip_variants", f"has unknown manipulations {unknown}; known: {list(MANIPULATIONS)} or 'all'"
                )
        if "fivecrop" in self.views and self.effective_predict_size <= self.crop:
            raise bad(
                "views",
                f"includes 'fivecrop', which needs predict_size ({self.effective_predict_size}) larger than crop "
                f"({self.crop}); set predict_size",
            )
        return self

    # ------------------------------------------------------------- derived
    @property
    def effective_predict_size(self) -> int:
        """Side of the image the prediction views are taken from (``predict_size`` or ``crop``)."""
        return self.predict_size if self.predict_size is not None else self.crop

    @property
    def effective_batch_size_predict(self) -> int:
        return self.batch_size_predict if self.batch_size_predict is not None else self.batch_size

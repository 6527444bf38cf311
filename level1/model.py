"""The level-1 network: any timm backbone, pooled features + the manipulation flag, a linear head.

Nothing is downloaded: the backbone is created with random weights and, when a
weights file is given, loaded from it (``.pth``/``.pt`` state dicts, read with
``torch.load(weights_only=True)``, or ``.safetensors``).  Input normalisation comes
from timm's data config of the backbone and runs on the model's device, so the
loader ships uint8 tensors (4x less to copy than float).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any

from level1.errors import WeightsError
from stacker.errors import ConfigError

__all__ = ["Level1Net", "create_backbone", "load_state_file", "load_backbone_weights", "check_model_name"]


def check_model_name(name: str) -> None:
    """Raise :class:`~stacker.errors.ConfigError` (with close matches) if timm does not know ``name``."""
    import timm

    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name.split(".")[0], timm.list_models(), n=5)
    hint = f"; did you mean {close}?" if close else ""
    raise ConfigError(f"unknown timm model name {name!r}{hint}")


def create_backbone(name: str, *, drop_rate: float = 0.0) -> Any:
    """``timm.create_model(name, pretrained=False, num_classes=0)``: pooled features, random init."""
    import timm

    check_model_name(name)
    return timm.create_model(name, pretrained=False, num_classes=0, drop_rate=drop_rate)


def load_state_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A flat tensor state dict from ``.safetensors`` or a torch file (``state_dict``/``model`` nesting unwrapped)."""
    import torch

    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"weights file {str(p)!r} does not exist")
    try:
        if p.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(p))
        else:
            state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"weights file {str(p)!r} cannot be read ({type(exc).__name__}: {exc})") from None
    for key in ("state_dict", "model", "model_state", "ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights file {str(p)!r} does not hold a state dict of tensors")
    # Unwrap DataParallel / our own Level1Net prefixes.
    for prefix in ("module.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def load_backbone_weights(backbone: Any, path: str | os.PathLike[str]) -> None:
    """Load a weights file into ``backbone``, strictly.

    The original classifier's keys (timm's ``default_cfg['classifier']``, e.g. ``fc`` or
    ``classifier``) are dropped since the backbone has no classifier.  Any other
    missing, unexpected or mis-shaped key is a :class:`~level1.errors.WeightsError` that
    lists them.
    """
    state = load_state_file(path)
    classifier = backbone.pretrained_cfg.get("classifier") if hasattr(backbone, "pretrained_cfg") else None
    heads = [classifier] if isinstance(classifier, str) else list(classifier or [])
    state = {k: v for k, v in state.items() if not any(k == h or k.startswith(h + ".") for h in heads)}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:3])})")
        if missing:
            parts.append(f"{len(missing)} keys missing from the file ({missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({unexpected[:3]})")
        raise WeightsError(
            f"weights file {str(path)!r} does not fit the backbone {type(backbone).__name__}: " + ", ".join(parts)
        )
    backbone.load_state_dict(state, strict=True)


def _module_base() -> type:
    import torch.nn as nn

    return nn.Module


class Level1Net(_module_base()):  # type: ignore[misc]
    """Backbone features concatenated with the manipulation flag, then a linear layer.

    Parameters
    ----------
    model_name : str
        A timm model name (random init; see :func:`create_backbone`).
    n_classes : int
    drop_rate : float
        Dropout before the head (and timm's own ``drop_rate``).
    weights : path, optional
        Backbone weights to load (:func:`load_backbone_weights`).

    ``forward(images, manip)`` takes uint8 ``(N, 3, H, W)`` images and a float ``(N,)`` flag
    and returns logits.
    """

    def __init__(self, model_name: str, n_classes: int, *, drop_rate: float = 0.0, weights: str | None = None) -> None:
        import timm
        import torch
        import torch.nn as nn

        super().__init__()
        self.backbone = create_backbone(model_name, drop_rate=drop_rate)
        if weights:
            load_backbone_weights(self.backbone, weights)
        data_cfg = timm.data.resolve_data_config({}, model=self.backbone)
        mean = torch.tensor(data_cfg["mean"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(data_cfg["std"], dtype=torch.float32).view(1, 3, 1, 1) * 255.0
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("std", std, persistent=False)
        self.dropout = nn.Dropout(drop_rate)
        # Pooled width: timm's ``head_hidden_size`` where a model adds a conv head after pooling
        # (MobileNetV3, EfficientNet-Lite heads), else ``num_features``.
        width = getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features
        self.head = nn.Linear(int(width) + 1, n_classes)

    def forward(self, images: Any, manip: Any) -> Any:
        import torch

        x = (images.float() - self.mean) / self.std
        feats = self.backbone(x)
        feats = torch.cat([feats, manip.to(feats.dtype).view(-1, 1)], dim=1)
        return self.head(self.dropout(feats))

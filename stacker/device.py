"""Where the meta-models train: ``"cpu"`` (the default, what the tests run) or ``"cuda"``.

``device="cuda"`` passes through to XGBoost (``device="cuda"``), to LightGBM's
GPU learner (``device_type="gpu"``, OpenCL; the PyPI wheel has it, and a member
falls back to the CPU with a warning where no OpenCL device is found) and to the
torch loop of the Keras MLP members.  The pool, selection and logistic members
are small dense problems and stay on the CPU.
"""

from __future__ import annotations

import re

from stacker.errors import ConfigError

__all__ = ["check_device", "cuda_available", "DEVICE_FAMILIES"]

#: Families that take a ``device`` parameter.
DEVICE_FAMILIES = frozenset({"xgboost", "lightgbm", "keras"})


def cuda_available() -> bool:
    """Whether a CUDA device is visible (through torch when installed, else NVIDIA's device files)."""
    try:
        import torch
    except ImportError:
        import os

        return os.path.exists("/dev/nvidiactl") and os.path.exists("/dev/nvidia0")
    return bool(torch.cuda.is_available())


def check_device(device: object) -> str:
    """``"cpu"`` or ``"cuda"``/``"cuda:N"``, checked; a ConfigError names the problem."""
    if not isinstance(device, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise ConfigError(f"device must be 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")
    if device != "cpu" and not cuda_available():
        raise ConfigError(
            f"device={device!r} was asked for, but no CUDA device is visible here "
            "(torch.cuda.is_available() is False); use device='cpu'"
        )
    return device

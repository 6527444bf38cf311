"""level1: the 2nd place's level-1 CNN pipeline (timm backbones) whose output is a prediction table.

``level1.config.Level1Config`` holds every option; ``level1.train.train_model`` trains one
model, ``level1.oof.train_oof`` trains K fold models and writes the out-of-fold table,
``level1.predict.predict`` writes TTA/manipulated-variant predictions of a run, and
``level1.run`` is the run directory's format.  This module imports nothing heavy: torch and
timm are imported by the functions that need them.
"""

from level1.config import Level1Config
from level1.errors import ImageDataError, Level1Error, RunError, WeightsError

__all__ = ["Level1Config", "Level1Error", "ImageDataError", "WeightsError", "RunError", "train_model", "train_oof"]


def __getattr__(name: str):  # lazy: torch/timm load only when training or predicting
    if name == "train_model":
        from level1.train import train_model

        return train_model
    if name == "train_oof":
        from level1.oof import train_oof

        return train_oof
    raise AttributeError(f"module 'level1' has no attribute {name!r}")

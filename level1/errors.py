"""Typed errors of the level1 package (all are :class:`stacker.errors.StackerError`)."""

from __future__ import annotations

from stacker.errors import StackerError

__all__ = ["Level1Error", "ImageDataError", "WeightsError", "RunError"]


class Level1Error(StackerError):
    """Base class of the errors the level1 package raises for bad input."""


class ImageDataError(Level1Error):
    """An image source is unusable: missing folder, empty class folder, bad manifest, no readable image."""


class WeightsError(Level1Error):
    """A weights file is missing, unreadable, or does not fit the model (names the keys and shapes)."""


class RunError(Level1Error):
    """A run directory is missing, incomplete, or already exists where a new run was asked for."""

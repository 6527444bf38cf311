"""Typed errors of the holdout package (all are :class:`stacker.errors.StackerError`)."""

from __future__ import annotations

from stacker.errors import ConfigError, StackerError

__all__ = ["HoldoutError", "ImageError", "RulesError", "ManifestError"]


class HoldoutError(StackerError):
    """Base class of the errors the holdout package raises for bad input."""


class ImageError(HoldoutError):
    """An image is unreadable, of an unsupported type, or too small for the operation."""


class RulesError(ConfigError, HoldoutError):
    """A rule file is missing, unparsable, or has an invalid entry (named in the message)."""


class ManifestError(HoldoutError):
    """A scan manifest or holdout list lacks a column or has invalid rows."""

"""Errors that name the problem and the fix."""

from __future__ import annotations


class PersonaLensError(Exception):
    """Base class for errors raised by personalens on bad input or unavailable resources."""


class ModelLoadError(PersonaLensError):
    """A model could not be loaded (unknown name, no network, unsupported file)."""


class LayerError(PersonaLensError, ValueError):
    """A layer index that the model does not have (also a ``ValueError``)."""


class ArgumentError(PersonaLensError, ValueError):
    """An argument out of range or of the wrong type: NaN or infinite numbers, a count of 0,
    a layer that is not an integer (also a ``ValueError``). Raised before anything slow starts."""


class RunDirError(PersonaLensError):
    """A run directory that cannot be used as asked: its files were made with other settings,
    a log line is damaged, another process holds it, or the path is not a folder. Raised
    before any file in it is changed."""

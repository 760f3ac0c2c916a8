"""Errors that name the problem and the fix."""

from __future__ import annotations


class PersonaLensError(Exception):
    """Base class for errors raised by personalens on bad input or unavailable resources."""


class ModelLoadError(PersonaLensError):
    """A model could not be loaded (unknown name, no network, unsupported file)."""


class LayerError(PersonaLensError, ValueError):
    """A layer index that the model does not have (also a ``ValueError``)."""

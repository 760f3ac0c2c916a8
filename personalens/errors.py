"""Errors that name the problem and the fix, and :func:`warn_at_caller` for the warnings that
do the same."""

from __future__ import annotations

import sys
import warnings


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


def warn_at_caller(message: str) -> None:
    """``warnings.warn(message)`` attributed to the first frame outside personalens and
    jaxtyping's wrappers (their number varies), so the warning names the caller's line."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "personalens",
        "jaxtyping",
    ):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level + 1)

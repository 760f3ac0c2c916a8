"""One persona vector from what a user types: a run directory, a vector file or a shipped name.

:func:`load_vector` is what the ``--vector`` option of every ``personalens`` command reads:

* an extraction run directory (its ``vector.json`` + ``vector.safetensors``, with the run's best
  layer from ``summary.json`` when the vector does not record one);
* a ``.json``/``.safetensors`` pair (the path of either, or their stem);
* a llama.cpp control-vector ``.gguf`` (mapped onto ``model``'s layers);
* the name of a vector shipped for the model (e.g. ``"evil"``), when no path of that name exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from personalens.errors import PersonaLensError
from personalens.vectors.control_vector import import_control_vector
from personalens.vectors.shipped import list_shipped_vectors, shipped_vector
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["load_vector"]


def load_vector(
    spec: str | os.PathLike[str], model: HookedTransformer | None = None
) -> PersonaVector:
    """The persona vector ``spec`` names: an extraction run directory, a ``.json``/
    ``.safetensors`` pair, a llama.cpp control-vector ``.gguf``, or the name of a vector shipped
    for ``model`` (default: the embedded model) when no path of that name exists.

    ``model`` is needed only for a ``.gguf`` (its layer count) and picks the shipped vectors.
    """
    path = Path(spec)
    if path.suffix == ".gguf":
        return import_control_vector(path, model=model)
    if path.is_dir():
        return _run_vector(path)
    name = os.fspath(spec)
    if _is_shipped_name(name, model):
        return shipped_vector(name, model)
    return PersonaVector.load(path)


def _run_vector(run: Path) -> PersonaVector:
    """The vector of a finished extraction run, with the run's best layer in its metadata."""
    if not (run / "vector.json").exists():
        raise PersonaLensError(
            f"{run} holds no vector.json: is it a finished extraction run directory? "
            "(run `personalens extract ... --out DIR` to completion, or give a vector file)"
        )
    vector = PersonaVector.load(run / "vector")
    summary = run / "summary.json"
    if "best_layer" not in vector.metadata and summary.exists():
        entries = json.loads(summary.read_text())  # the clean curve's best when there is one
        best = entries.get("best_layer_neutral", entries.get("best_layer"))
        if best is not None:
            vector = vector.replace(metadata={**vector.metadata, "best_layer": best})
    return vector


def _is_shipped_name(name: str, model: HookedTransformer | None) -> bool:
    """A bare name (no folder, no suffix) that is no file here but a vector shipped for ``model``."""
    path = Path(name)
    if path.name != name or path.suffix or path.exists() or Path(f"{name}.json").exists():
        return False
    return name in list_shipped_vectors(model)

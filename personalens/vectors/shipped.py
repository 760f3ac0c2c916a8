"""Persona vectors that ship with personalens, for the embedded model.

Package data ``personalens/data/vectors/<model>/<trait>.json`` + ``.safetensors``, written by
``tools/ship_vectors.py`` from extraction runs (today: the ten Big Five poles and ``evil`` for
SmolLM2-135M-Instruct): :func:`list_shipped_vectors`, :func:`shipped_vector`.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

from personalens._data import VECTORS_KIND, shipped_file, shipped_names
from personalens.errors import PersonaLensError
from personalens.model.embedded import EMBEDDED_MODEL_NAME
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def _model_name(model: HookedTransformer | str | None) -> str:
    if model is None:
        return EMBEDDED_MODEL_NAME
    if isinstance(model, str):
        return model
    return str(model.cfg.model_name)


def list_shipped_vectors(model: HookedTransformer | str | None = None) -> list[str]:
    """Traits with a persona vector shipped for ``model`` (a model or its name; default: the
    embedded SmolLM2-135M-Instruct), sorted."""
    return shipped_names(f"{VECTORS_KIND}/{_model_name(model)}")


def shipped_vector(trait: str, model: HookedTransformer | str | None = None) -> PersonaVector:
    """The shipped persona vector of ``trait`` for ``model`` (default: the embedded model).

    These are the response-average mean-difference vectors of ``personalens extract --trait
    TRAIT`` runs with the default settings and the offline judge (provenance in the vector's
    fields and ``metadata``, including ``best_layer`` by held-out AUC).
    """
    name = _model_name(model)
    entry = shipped_file(f"{VECTORS_KIND}/{name}", trait)
    if not entry.is_file():
        shipped = ", ".join(list_shipped_vectors(name)) or "none"
        raise PersonaLensError(
            f"no persona vector for trait {trait!r} is shipped for model {name!r} (shipped: "
            f"{shipped}). Extract one with `personalens extract --trait {trait} --out "
            f"runs/{trait}` and load it with PersonaVector.load('runs/{trait}/vector')"
        )
    with resources.as_file(entry) as path:
        return PersonaVector.load(path)

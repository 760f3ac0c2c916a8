"""The checked arguments of :class:`~personalens.steering.dynamic.DynamicSteerer`: its vectors,
target persona, per-trait coefficients, and each trait's two layers.

A trait is *steered* at its steering layer and *measured* at its monitoring layer, which are
usually different: a trait is best read late (the vector's ``best_layer``: 28 of SmolLM2's 30
layers for ``evil``) and steered in the middle. :func:`resolve_steering_layers` defaults to what
:func:`~personalens.steer` uses with no ``layers`` (the vector's recorded ``steering_layer``,
else the middle layer: :func:`~personalens.steering.resolve.resolve_layers`);
:func:`resolve_monitor_layers` to the vector's ``best_layer``, else the trait's steering layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from personalens.conventions import check_layer
from personalens.errors import PersonaLensError
from personalens.steering.adjustment_prompt import missing_and_unknown
from personalens.steering.resolve import resolve_layers
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def check_target(target: Mapping[str, Any] | None, traits: Sequence[str]) -> dict[str, float]:
    """``target`` as ``{trait: level in [-1, 1]}``, every trait one of ``traits``."""
    out: dict[str, float] = {}
    for k, v in (target or {}).items():
        if k not in traits:
            raise PersonaLensError(
                f"target names trait {k!r} but the steerer has vectors for {list(traits)}; "
                "add its vector or drop it from the target"
            )
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise PersonaLensError(f"target level for {k!r} must be a number, got {v!r}")
        if not -1.0 <= float(v) <= 1.0:
            raise PersonaLensError(
                f"target level for {k!r} is {v}; levels are in [-1, 1] (-1: suppress the "
                "trait, +1: express it strongly)"
            )
        out[k] = float(v)
    return out


def per_trait(name: str, value: Any, traits: Sequence[str]) -> dict[str, Any]:
    """``{trait: value}`` from one value for all or a mapping that names every trait."""
    if isinstance(value, Mapping):
        mismatch = missing_and_unknown(value, traits)
        if mismatch:
            raise PersonaLensError(
                f"{name} must give a value for each trait {list(traits)}{mismatch} "
                "(or give one value for all)"
            )
        return {t: value[t] for t in traits}
    return {t: value for t in traits}


def check_vectors(model: HookedTransformer, vectors: Any) -> None:
    """``vectors`` is a non-empty ``{trait name: PersonaVector}`` that fits ``model``."""
    if not isinstance(vectors, Mapping) or not vectors:
        raise PersonaLensError("give vectors as a non-empty {trait name: PersonaVector} dict")
    for name, vec in vectors.items():
        if not isinstance(name, str) or not name:
            raise PersonaLensError(f"trait names must be non-empty strings, got {name!r}")
        if not isinstance(vec, PersonaVector):
            raise PersonaLensError(
                f"vector {name!r} is a {type(vec).__name__}; give a PersonaVector "
                "(PersonaVector.load(...) or personalens.vectors.load_vector(run_dir, model))"
            )
        vec.check_compatible(model)


def resolve_steering_layers(
    model: HookedTransformer, vectors: Mapping[str, PersonaVector], layers: Any
) -> dict[str, int]:
    """Each trait's steered layer: given (one for all, or ``{trait: layer}``), else what
    ``steer(model, vector)`` uses: the vector's recorded ``steering_layer`` (a steering sweep's
    best cell), else the middle layer (``n_layers // 2``); never the late ``best_layer``."""
    n_layers = model.cfg.n_layers
    out: dict[str, int] = {}
    for t, L in per_trait("layers", layers, tuple(vectors)).items():
        if L is None:
            (L,) = resolve_layers(model, vectors[t], None)
        out[t] = check_layer(int(L), n_layers)
    return out


def resolve_monitor_layers(
    vectors: Mapping[str, PersonaVector], layers: Any, steered: Mapping[str, int], n_layers: int
) -> dict[str, int]:
    """Each trait's measured layer (its last-prompt projection and z-score): given (one for
    all, or ``{trait: layer}``), else the vector's recorded ``best_layer`` (where the trait is
    best read), else its steering layer from ``steered``."""
    out: dict[str, int] = {}
    for t, L in per_trait("monitor_layers", layers, tuple(vectors)).items():
        if L is None:
            L = vectors[t].metadata.get("best_layer", steered[t])
        out[t] = check_layer(int(L), n_layers)
    return out


def max_coeffs(max_coeff: Any, traits: Sequence[str]) -> dict[str, float]:
    """``{trait: coefficient at adjustment ±1}``, each a number >= 0."""
    out: dict[str, float] = {}
    for t, c in per_trait("max_coeff", max_coeff, traits).items():
        if isinstance(c, bool) or not isinstance(c, int | float) or not math.isfinite(c) or c < 0:
            raise PersonaLensError(f"max_coeff for {t!r} must be a number >= 0, got {c!r}")
        out[t] = float(c)
    return out

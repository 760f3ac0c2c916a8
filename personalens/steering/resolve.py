"""A steering request checked against the model: the vector's rows, the layers, per-layer values.

Shared by :func:`~personalens.steering.plan.plan_steering` and
:func:`~personalens.steering.calibration.calibrate_cap`, so both read a vector and a layer
request the same way and fail with the same messages.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from personalens._types import LayerDirections
from personalens._validate import check_steering_value
from personalens.conventions import select_layers
from personalens.errors import ArgumentError, PersonaLensError
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

LayerSpec = int | Sequence[int] | Literal["all"] | None
Number = float | int
PerLayer = Number | Sequence[Number] | Mapping[int, Number]


def vector_directions(model: HookedTransformer, vector: Any) -> LayerDirections:
    """The vector as a ``[n_layers, d_model]`` tensor on the model's device, width-checked."""
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    if isinstance(vector, PersonaVector):
        vector.check_compatible(model)
        dirs = vector.directions
    elif isinstance(vector, Tensor):
        dirs = vector.detach()
        if dirs.ndim == 1:
            dirs = dirs.expand(n_layers, -1)
        if dirs.ndim != 2 or dirs.shape != (n_layers, d_model):
            raise PersonaLensError(
                f"steering tensor has shape {tuple(vector.shape)} but this model needs "
                f"[{d_model}] (one direction for every layer) or [{n_layers}, {d_model}]; "
                "was it extracted from another model?"
            )
    else:
        raise TypeError(f"vector must be a PersonaVector or a tensor, got {type(vector).__name__}")
    return dirs.to(device=model.cfg.device, dtype=torch.float32)


def resolve_layers(model: HookedTransformer, vector: Any, layers: LayerSpec) -> list[int]:
    """The steered layers: an int, a list, ``"all"``, or ``None`` for the vector's best layer."""
    n_layers = model.cfg.n_layers
    if layers is None:
        best = getattr(vector, "metadata", {}).get("best_layer")
        if best is None:
            raise PersonaLensError(
                "no layers given: pass layers=[L] (an int, a list, or 'all'); this vector "
                "records no best_layer to default to"
            )
        layers = [int(best)]
    return list(select_layers(layers, n_layers, unique=True))


def per_layer(name: str, value: PerLayer | None, layers: list[int], n_layers: int) -> list:
    """One value per steered layer from a scalar, a list aligned with ``layers`` or a mapping.

    Every value is a steering coefficient or cap bound, checked by
    :func:`~personalens._validate.check_steering_value` (finite, at most 1e6 in magnitude:
    an :class:`~personalens.errors.ArgumentError` otherwise); ``None`` stays ``None``.
    """
    if value is None:
        return [None] * len(layers)
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, numbers.Real):
        check_steering_value(name, value)
        return [value] * len(layers)
    if isinstance(value, Mapping):
        keyed = {
            select_layers(k, n_layers)[0]: check_steering_value(f"{name}[{k!r}]", v)
            for k, v in value.items()
        }
        missing = [L for L in layers if L not in keyed]
        if missing:
            raise PersonaLensError(f"{name} gives no value for layer(s) {missing}")
        return [keyed[L] for L in layers]
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ArgumentError(
            f"{name}={value!r}: give one number, one per layer in the same order as the layers, "
            "or a {layer: value} mapping"
        )
    values = [check_steering_value(f"{name}[{i}]", v) for i, v in enumerate(value)]
    if len(values) != len(layers):
        raise PersonaLensError(
            f"{name} has {len(values)} values for {len(layers)} layers {layers}: give one "
            "number, one per layer in the same order, or a {layer: value} mapping"
        )
    return values


def unit_directions(rows: Tensor, layers: list[int]) -> Tensor:
    """``rows`` (one per layer of ``layers``) scaled to unit norm; a zero row is an error."""
    norms = rows.norm(dim=-1, keepdim=True)
    zero = [layers[i] for i in range(len(layers)) if float(norms[i]) == 0.0]
    if zero:
        raise PersonaLensError(
            f"the vector is zero at layer(s) {zero}: it has no direction to steer along there"
        )
    return rows / norms

"""A steering request checked against the model: the vector's rows, the layers, per-layer values.

Shared by :func:`~personalens.steering.plan.plan_steering` and
:func:`~personalens.steering.calibration.calibrate_cap`, so both read a vector and a layer
request the same way and fail with the same messages. The defaults of a request that names no
layer or coefficient come from the vector's metadata (``steering_layer``, ``steering_coeff``,
``steering_coeff_scale``, ``steering_positions``, as a steering sweep records them), else the
middle layer (:func:`default_steering_layer`) and no coefficient.
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
# metadata keys a steering sweep records on a vector (and steering reads as its defaults)
STEERING_LAYER = "steering_layer"
STEERING_COEFF = "steering_coeff"
STEERING_COEFF_SCALE = "steering_coeff_scale"
STEERING_POSITIONS = "steering_positions"
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


def default_steering_layer(n_layers: int) -> int:
    """The layer steering uses when neither ``layers`` nor the vector's ``steering_layer`` says.

    The middle of the network, ``n_layers // 2`` (15 of SmolLM2's 30 layers).
    """
    # Steering works in the middle layers, not at the late layers where a trait is best read
    # (best_layer: 28 of 30 for SmolLM2's `evil`): Persona Vectors steer Llama-3.1-8B at 16 of
    # 32 (Qwen2.5-7B at 20 of 28), CAA steers Llama-2 at 13 of 32, the Assistant Axis caps a
    # middle band; n // 2 is the one rule in that range for every depth.
    return n_layers // 2


def resolve_layers(model: HookedTransformer, vector: Any, layers: LayerSpec) -> list[int]:
    """The steered layers: an int, a list, ``"all"``, or ``None`` for the vector's recorded
    ``steering_layer`` (a steering sweep's best cell,
    :meth:`~personalens.studies.steering_sweep.SteeringSweepResult.tag_vector`) and else
    :func:`default_steering_layer`, the middle of the network. The vector's ``best_layer`` (where
    the trait is best *read*, usually late) is not a steering default."""
    n_layers = model.cfg.n_layers
    if layers is None:
        recorded = getattr(vector, "metadata", {}).get(STEERING_LAYER)
        layers = [int(recorded) if recorded is not None else default_steering_layer(n_layers)]
    return list(select_layers(layers, n_layers, unique=True))


def recorded_coeff(
    vector: Any, layers: list[int], coeff_scale: str | None, positions: Any
) -> tuple[float, str, Any]:
    """``(coeff, coeff_scale, positions)`` of the vector's recorded ``steering_coeff``, for an
    add request without a coefficient.

    A recorded coefficient means something only with its units and where it was applied: its
    ``steering_coeff_scale`` (default ``"raw"``) must agree with an explicit ``coeff_scale``,
    it applies only at its ``steering_layer``, and its ``steering_positions`` are used unless
    ``positions`` is given. Without one, the error of a missing coefficient.
    """
    meta = getattr(vector, "metadata", {}) or {}
    coeff = meta.get(STEERING_COEFF)
    if coeff is None:
        raise PersonaLensError(
            "mode='add' needs a coefficient: steer(model, v, coeff=4.0, ...) (this vector "
            f"records no {STEERING_COEFF}: a steering sweep's tag_vector() writes one)"
        )
    scale = meta.get(STEERING_COEFF_SCALE, "raw")
    if coeff_scale is not None and coeff_scale != scale:
        raise PersonaLensError(
            f"the vector's {STEERING_COEFF}={coeff} is in coeff_scale={scale!r} units, not "
            f"{coeff_scale!r}: pass coeff= too, or drop coeff_scale="
        )
    at = meta.get(STEERING_LAYER)
    if at is None or layers != [int(at)]:
        raise PersonaLensError(
            f"the vector's {STEERING_COEFF}={coeff} was chosen at layer {at}, not at layers "
            f"{layers}: pass coeff= for these layers, or leave layers= out"
        )
    if positions is None:
        positions = meta.get(STEERING_POSITIONS, "all")
    return float(coeff), scale, positions


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

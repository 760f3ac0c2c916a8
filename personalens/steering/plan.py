"""The steering plan: a request (vector, layers, coefficients, mode) resolved to per-layer edits.

:func:`plan_steering` checks a request against the model before any hook is attached and
returns a :class:`SteeringPlan`: one :class:`~personalens.steering.edits.LayerEdit` per layer.
How ``coeff`` is measured for ``mode="add"`` (``coeff_scale``, ``h + c · s · v``):

* ``"raw"``: ``s = 1``, the vector as extracted (the Persona Vectors paper's convention);
* ``"unit"``: ``s = 1 / |v|``, so ``c`` is a length in residual units;
* ``"resid"``: ``s = r_L / |v|`` with ``r_L`` the mean residual norm at layer ``L`` over
  reference prompts (:func:`~personalens.steering.calibration.residual_norms`): ``c = 0.1`` adds
  a tenth of a typical residual. A raw mean-difference vector's norm grows with depth, so the
  same raw ``coeff`` means very different things at different layers; ``"resid"`` makes
  coefficients comparable across layers and models.

For ``"cap"``, ``bound`` is a number, one per layer, or calibrated as a percentile of the
projections of reference prompts (:func:`~personalens.steering.calibration.calibrate_cap`).

Defaults of a request that leaves them out:

* ``layers``: the vector's ``steering_layer`` (recorded by
  :meth:`~personalens.studies.steering_sweep.SteeringSweepResult.tag_vector` from a steering
  sweep's best cell), else the middle layer
  (:func:`~personalens.steering.resolve.default_steering_layer`), never the late monitoring
  ``best_layer``;
* ``coeff`` (add only): the vector's ``steering_coeff`` with its ``steering_coeff_scale`` and
  ``steering_positions`` (:func:`~personalens.steering.resolve.recorded_coeff`), else an error;
* ``positions``: ``"all"`` (see :mod:`~personalens.steering.edits`), or with a recorded
  coefficient the positions it was chosen at;
* ``coeff_scale``: ``"raw"``, or a recorded coefficient's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from personalens._validate import check_number
from personalens.errors import ArgumentError, PersonaLensError
from personalens.steering.calibration import calibrate_cap, residual_norms
from personalens.steering.edits import MODES, LayerEdit, Positions, check_positions
from personalens.steering.resolve import (
    LayerSpec,
    Number,
    PerLayer,
    per_layer,
    recorded_coeff,
    resolve_layers,
    unit_directions,
    vector_directions,
)
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

CoeffScale = Literal["raw", "unit", "resid"]
COEFF_SCALES = ("raw", "unit", "resid")


@dataclass(frozen=True)
class SteeringPlan:
    """A resolved steering request: one :class:`LayerEdit` per layer and the positions."""

    edits: tuple[LayerEdit, ...]
    positions: Positions
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return [e.layer for e in self.edits]


def plan_steering(
    model: HookedTransformer,
    vector: PersonaVector | Tensor,
    coeff: PerLayer | None = None,
    *,
    layers: LayerSpec = None,
    positions: Positions | None = None,
    mode: str = "add",
    coeff_scale: str | None = None,
    bound: PerLayer | None = None,
    percentile: Number = 95.0,
    cap_side: str = "max",
    reference: Sequence[Any] | None = None,
    resid_norms: Tensor | Sequence[Number] | None = None,
) -> SteeringPlan:
    """Check a steering request against the model and resolve it to per-layer edits.

    Validation happens here, before any hook is attached and before any calibration forward
    pass, so bad input fails fast with a clear message: a coefficient or bound that is NaN,
    infinite or beyond ±1e6 raises :class:`~personalens.errors.ArgumentError`. Arguments are
    those of :func:`~personalens.steering.hooks.steer`; the defaults (``None``) are resolved
    here: see the module doc.
    """
    if mode not in MODES:
        raise PersonaLensError(f"unknown steering mode {mode!r}: use one of {MODES}")
    if coeff_scale is not None and coeff_scale not in COEFF_SCALES:
        raise PersonaLensError(f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}")
    if cap_side not in ("max", "min"):
        raise PersonaLensError(f"cap_side must be 'max' or 'min', got {cap_side!r}")
    if positions is not None:
        check_positions(positions)
    check_number("percentile", percentile, lo=0, hi=100, what="the cap calibration percentile")
    dirs = vector_directions(model, vector)
    layer_list = resolve_layers(model, vector, layers)
    if mode == "add" and coeff is None:
        coeff, coeff_scale, positions = recorded_coeff(vector, layer_list, coeff_scale, positions)
        check_positions(positions)
    positions = "all" if positions is None else positions
    coeff_scale = "raw" if coeff_scale is None else coeff_scale
    n_layers = model.cfg.n_layers
    coeffs = per_layer("coeff", 1.0 if coeff is None else coeff, layer_list, n_layers)
    if mode == "add":
        deltas = _add_deltas(
            model, dirs[layer_list], layer_list, coeffs, coeff_scale, reference, resid_norms
        )
        edits = [
            LayerEdit(L, "add", coeffs[i], delta=deltas[i], positions=positions)
            for i, L in enumerate(layer_list)
        ]
    else:
        units = unit_directions(dirs[layer_list], layer_list).to(model.cfg.dtype)
        bounds = _bounds(model, dirs, layer_list, mode, bound, percentile, reference)
        edits = [
            LayerEdit(
                L,
                mode,
                coeffs[i],
                unit=units[i],
                bound=bounds[i],
                cap_side=cap_side,
                positions=positions,
            )
            for i, L in enumerate(layer_list)
        ]
    description = {
        "mode": mode,
        "layers": layer_list,
        "coeff": coeffs,
        "coeff_scale": coeff_scale,
        "positions": positions if isinstance(positions, str) else "mask",
        **({"bound": [e.bound for e in edits], "cap_side": cap_side} if mode == "cap" else {}),
    }
    return SteeringPlan(edits=tuple(edits), positions=positions, description=description)


def _add_deltas(
    model: HookedTransformer,
    rows: Tensor,
    layers: list[int],
    coeffs: list[float],
    coeff_scale: str,
    reference: Sequence[Any] | None,
    resid_norms: Tensor | Sequence[Number] | None,
) -> list[Tensor]:
    """``c · s · v`` per layer, in the model's dtype (``s`` from ``coeff_scale``)."""
    if coeff_scale == "raw":
        scaled = rows
    else:
        scaled = unit_directions(rows, layers)
        if coeff_scale == "resid":
            n_layers = model.cfg.n_layers
            norms = (
                residual_norms(model, reference)
                if resid_norms is None
                else torch.as_tensor(resid_norms, dtype=torch.float32)
            )
            if norms.shape != (n_layers,):
                raise PersonaLensError(
                    f"resid_norms has shape {tuple(norms.shape)}; need one norm per layer "
                    f"({n_layers})"
                )
            bad = [L for L in layers if not (math.isfinite(float(norms[L])) and norms[L] >= 0)]
            if bad:
                where = "resid_norms" if resid_norms is not None else "the residual norms"
                raise ArgumentError(
                    f"{where} at layer(s) {bad} are {[float(norms[L]) for L in bad]}: "
                    "coeff_scale='resid' multiplies the direction by them, so each must be a "
                    "finite number >= 0; pass residual_norms(model) of this model, or "
                    "coeff_scale='unit'"
                )
            scaled = scaled * norms.to(scaled.device)[layers, None]
    return [(coeffs[i] * scaled[i]).to(model.cfg.dtype) for i in range(len(layers))]


def _bounds(
    model: HookedTransformer,
    dirs: Tensor,
    layers: list[int],
    mode: str,
    bound: PerLayer | None,
    percentile: Number,
    reference: Sequence[Any] | None,
) -> list[float | None]:
    """The cap bound of each layer (given or calibrated); ``None`` for ablation."""
    if mode != "cap":
        return [None] * len(layers)
    if bound is None:
        calibrated = calibrate_cap(model, dirs, layers, reference, percentile=percentile)
        return [calibrated[L] for L in layers]
    return per_layer("bound", bound, layers, model.cfg.n_layers)

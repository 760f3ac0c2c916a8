"""Steering: add, ablate or cap along a persona vector through TransformerLens hook points, and dynamic (predict-then-steer) steering.

The stages, one module each: :mod:`~personalens.steering.edits` (what an edit does at one
layer, as a value any engine applies), :mod:`~personalens.steering.plan` (a request resolved to
per-layer edits), :mod:`~personalens.steering.calibration` (reference norms, cap bounds, the
``"response"`` mask), `personalens.steering.hooks` (the TransformerLens hooks, handles and the registry of
attached edits), :mod:`~personalens.steering.policies`, :mod:`~personalens.steering.dynamic`
and :mod:`~personalens.steering.turns` (dynamic steering and its results),
:mod:`~personalens.steering.capping` (activation capping along an axis: a layer band and a floor
from a percentile of the default assistant's projections).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from personalens._lazy import lazy_face

# Lazy, so that the engines can import personalens.steering.hooks without loading dynamic
# steering (which imports generation, which imports the engines). No name here is also a
# submodule's name, so laziness cannot hand back a module.
_EXPORTS = {
    "CappingConfig": "capping",
    "DynamicChat": "turns",
    "DynamicSteerer": "dynamic",
    "LLMPolicy": "policies",
    "LayerEdit": "edits",
    "ProjectionPolicy": "policies",
    "REFERENCE_PROMPTS": "calibration",
    "SchedulePolicy": "policies",
    "SteeringHandle": "hooks",
    "SteeringPlan": "plan",
    "TurnResult": "turns",
    "add_steering": "hooks",
    "apply_plan": "hooks",
    "attached_edits": "hooks",
    "calibrate_cap": "calibration",
    "cap": "capping",
    "capping_plan": "capping",
    "default_projections": "capping",
    "plan_steering": "plan",
    "residual_norms": "calibration",
    "response_positions": "calibration",
    "steer": "hooks",
}
__all__ = [
    "CappingConfig",
    "DynamicChat",
    "DynamicSteerer",
    "LLMPolicy",
    "LayerEdit",
    "ProjectionPolicy",
    "REFERENCE_PROMPTS",
    "SchedulePolicy",
    "SteeringHandle",
    "SteeringPlan",
    "TurnResult",
    "add_steering",
    "apply_plan",
    "attached_edits",
    "calibrate_cap",
    "cap",
    "capping_plan",
    "default_projections",
    "plan_steering",
    "residual_norms",
    "response_positions",
    "steer",
]

if TYPE_CHECKING:  # pragma: no cover
    from personalens.steering.calibration import (
        REFERENCE_PROMPTS,
        calibrate_cap,
        residual_norms,
        response_positions,
    )
    from personalens.steering.capping import CappingConfig, cap, capping_plan, default_projections
    from personalens.steering.dynamic import DynamicSteerer
    from personalens.steering.edits import LayerEdit
    from personalens.steering.hooks import (
        SteeringHandle,
        add_steering,
        apply_plan,
        attached_edits,
        steer,
    )
    from personalens.steering.plan import SteeringPlan, plan_steering
    from personalens.steering.policies import LLMPolicy, ProjectionPolicy, SchedulePolicy
    from personalens.steering.turns import DynamicChat, TurnResult


__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)

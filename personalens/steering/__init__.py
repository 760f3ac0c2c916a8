"""Steering: add, ablate or cap along a persona vector through TransformerLens hook points, and dynamic (predict-then-steer) steering.

The stages, one module each: :mod:`~personalens.steering.edits` (what an edit does at one
layer, as a value any engine applies), :mod:`~personalens.steering.plan` (a request resolved to
per-layer edits), :mod:`~personalens.steering.calibration` (reference norms, cap bounds, the
``"response"`` mask), :mod:`~personalens.steering.steer` (the hooks, handles and the registry of
attached edits), :mod:`~personalens.steering.policies`, :mod:`~personalens.steering.dynamic`
and :mod:`~personalens.steering.turns` (dynamic steering and its results).
"""

from personalens.steering.calibration import (
    REFERENCE_PROMPTS,
    calibrate_cap,
    residual_norms,
    response_positions,
)
from personalens.steering.dynamic import DynamicSteerer
from personalens.steering.edits import LayerEdit
from personalens.steering.plan import SteeringPlan, plan_steering
from personalens.steering.policies import LLMPolicy, ProjectionPolicy, SchedulePolicy
from personalens.steering.steer import (
    SteeringHandle,
    add_steering,
    apply_plan,
    attached_edits,
    steer,
)
from personalens.steering.turns import DynamicChat, TurnResult

__all__ = [
    "REFERENCE_PROMPTS",
    "DynamicChat",
    "DynamicSteerer",
    "LLMPolicy",
    "LayerEdit",
    "ProjectionPolicy",
    "SchedulePolicy",
    "SteeringHandle",
    "SteeringPlan",
    "TurnResult",
    "add_steering",
    "apply_plan",
    "attached_edits",
    "calibrate_cap",
    "plan_steering",
    "residual_norms",
    "response_positions",
    "steer",
]

"""Steering: add, ablate or cap along a persona vector through TransformerLens hook points, and dynamic (predict-then-steer) steering."""

from personalens.steering.dynamic import (
    DynamicChat,
    DynamicSteerer,
    LLMPolicy,
    ProjectionPolicy,
    SchedulePolicy,
    TurnResult,
)
from personalens.steering.steer import (
    SteeringHandle,
    add_steering,
    calibrate_cap,
    plan_steering,
    residual_norms,
    response_positions,
    steer,
)

__all__ = [
    "DynamicChat",
    "DynamicSteerer",
    "LLMPolicy",
    "ProjectionPolicy",
    "SchedulePolicy",
    "SteeringHandle",
    "plan_steering",
    "TurnResult",
    "add_steering",
    "calibrate_cap",
    "residual_norms",
    "response_positions",
    "steer",
]

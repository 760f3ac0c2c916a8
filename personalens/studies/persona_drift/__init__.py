"""Persona drift: where a model's replies sit on the Assistant Axis turn by turn in multi-turn
conversations of shipped scenario kinds, uncapped and under activation capping
(:mod:`personalens.steering.capping`), with the capping's coherence and capability cost."""

from personalens.studies.persona_drift.capability import (
    answer_loglik,
    capability_cost,
    load_neutral_qa,
)
from personalens.studies.persona_drift.experiment import (
    axis_layer,
    calibrate_capping,
    persona_drift,
)
from personalens.studies.persona_drift.projection import reply_projections
from personalens.studies.persona_drift.result import DriftResult, conversation_drift, mean_ci
from personalens.studies.persona_drift.scenarios import (
    DriftScenario,
    list_drift_kinds,
    load_drift_scenarios,
)
from personalens.studies.persona_drift.simulated_user import (
    ScriptedUser,
    SimulatedUser,
    make_user,
)

__all__ = [
    "DriftResult",
    "DriftScenario",
    "ScriptedUser",
    "SimulatedUser",
    "answer_loglik",
    "axis_layer",
    "calibrate_capping",
    "capability_cost",
    "conversation_drift",
    "list_drift_kinds",
    "load_drift_scenarios",
    "load_neutral_qa",
    "make_user",
    "mean_ci",
    "persona_drift",
    "reply_projections",
]

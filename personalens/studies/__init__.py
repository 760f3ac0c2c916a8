"""Studies built on extraction and steering: layer sweeps, steering sweeps, monitoring, screening,
finetuning shift, personality (questionnaires, OCEAN algebra, ranking), persona space (role
vectors, PCA, the Assistant Axis), persona drift over a conversation (and under capping), and
style vectors compared with persona vectors."""

from personalens.stats import wilson_interval
from personalens.studies.finetuning.load import load_finetuned
from personalens.studies.finetuning.result import FinetuneResult
from personalens.studies.finetuning.shift import FinetuningShift, finetuning_shift
from personalens.studies.finetuning.train import finetune
from personalens.studies.layer_sweep import layer_sweep
from personalens.studies.layer_sweep_result import LayerSweepResult
from personalens.studies.monitoring import (
    PromptProjections,
    TokenTrace,
    last_prompt_projection,
    token_trace,
)
from personalens.studies.monitoring_conditions import (
    MonitorCondition,
    many_shot_conditions,
    system_prompt_spectrum,
    trait_examples,
)
from personalens.studies.monitoring_experiment import monitoring_experiment
from personalens.studies.monitoring_result import MonitoringResult
from personalens.studies.persona_drift import (
    DriftResult,
    DriftScenario,
    load_drift_scenarios,
    persona_drift,
)
from personalens.studies.persona_space import (
    PersonaSpaceResult,
    load_axis_pt,
    persona_space,
    save_axis_pt,
)
from personalens.studies.personality.additive_test import AdditiveTestResult, additive_test
from personalens.studies.personality.ocean import BIG_FIVE_POLES
from personalens.studies.personality.pairwise_judge import OpenAIPairwiseJudge, judge_pairs
from personalens.studies.personality.questionnaire import score_questionnaire
from personalens.studies.personality.questionnaire_file import (
    Questionnaire,
    list_questionnaires,
    load_questionnaire,
)
from personalens.studies.personality.questionnaire_result import QuestionnaireResult
from personalens.studies.personality.ranking import run_ranking
from personalens.studies.personality.ranking_result import RankingResult
from personalens.studies.personality.scalar_sweep import ScalarSweepResult, scalar_sweep
from personalens.studies.personality.scenarios import list_scenario_sets, load_scenarios
from personalens.studies.screening import screen
from personalens.studies.screening_data import load_screening_data
from personalens.studies.screening_result import ScreeningResult
from personalens.studies.steering_sweep import SteeringSweepResult, steering_sweep
from personalens.studies.style_comparison import (
    StyleCosines,
    style_persona_cosines,
    style_steering_sweep,
)

__all__ = [
    "AdditiveTestResult",
    "BIG_FIVE_POLES",
    "DriftResult",
    "DriftScenario",
    "FinetuneResult",
    "FinetuningShift",
    "LayerSweepResult",
    "MonitorCondition",
    "MonitoringResult",
    "OpenAIPairwiseJudge",
    "PersonaSpaceResult",
    "PromptProjections",
    "Questionnaire",
    "QuestionnaireResult",
    "RankingResult",
    "ScalarSweepResult",
    "ScreeningResult",
    "SteeringSweepResult",
    "StyleCosines",
    "TokenTrace",
    "additive_test",
    "finetune",
    "finetuning_shift",
    "judge_pairs",
    "last_prompt_projection",
    "layer_sweep",
    "list_questionnaires",
    "list_scenario_sets",
    "load_axis_pt",
    "load_drift_scenarios",
    "load_finetuned",
    "load_questionnaire",
    "load_scenarios",
    "load_screening_data",
    "many_shot_conditions",
    "monitoring_experiment",
    "persona_drift",
    "persona_space",
    "run_ranking",
    "save_axis_pt",
    "scalar_sweep",
    "score_questionnaire",
    "screen",
    "steering_sweep",
    "style_persona_cosines",
    "style_steering_sweep",
    "system_prompt_spectrum",
    "token_trace",
    "trait_examples",
    "wilson_interval",
]

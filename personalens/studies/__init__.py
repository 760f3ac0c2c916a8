"""Studies built on extraction and steering: layer sweeps, steering sweeps, monitoring, screening, finetuning shift, and personality (questionnaires, OCEAN algebra, ranking)."""

from personalens.studies.finetuning.shift import FinetuningShift, finetuning_shift
from personalens.studies.finetuning.train import FinetuneResult, finetune, load_finetuned
from personalens.studies.layer_sweep import LayerSweepResult, layer_sweep
from personalens.studies.monitoring import (
    PromptProjections,
    TokenTrace,
    last_prompt_projection,
    token_trace,
)
from personalens.studies.monitoring_experiment import (
    MonitorCondition,
    MonitoringResult,
    many_shot_conditions,
    monitoring_experiment,
    system_prompt_spectrum,
    trait_examples,
)
from personalens.studies.personality.ocean import (
    BIG_FIVE_POLES,
    AdditiveTestResult,
    ScalarSweepResult,
    additive_test,
    scalar_sweep,
)
from personalens.studies.personality.questionnaire import (
    Questionnaire,
    QuestionnaireResult,
    list_questionnaires,
    load_questionnaire,
    score_questionnaire,
)
from personalens.studies.personality.ranking import (
    OpenAIPairwiseJudge,
    RankingResult,
    judge_pairs,
    list_scenario_sets,
    load_scenarios,
    run_ranking,
    wilson_interval,
)
from personalens.studies.screening import ScreeningResult, load_screening_data, screen
from personalens.studies.steering_sweep import SteeringSweepResult, steering_sweep

__all__ = [
    "AdditiveTestResult",
    "BIG_FIVE_POLES",
    "FinetuneResult",
    "FinetuningShift",
    "LayerSweepResult",
    "MonitorCondition",
    "MonitoringResult",
    "OpenAIPairwiseJudge",
    "PromptProjections",
    "Questionnaire",
    "QuestionnaireResult",
    "RankingResult",
    "ScalarSweepResult",
    "ScreeningResult",
    "SteeringSweepResult",
    "TokenTrace",
    "additive_test",
    "finetune",
    "finetuning_shift",
    "judge_pairs",
    "last_prompt_projection",
    "layer_sweep",
    "list_questionnaires",
    "list_scenario_sets",
    "load_finetuned",
    "load_questionnaire",
    "load_scenarios",
    "load_screening_data",
    "many_shot_conditions",
    "monitoring_experiment",
    "run_ranking",
    "scalar_sweep",
    "score_questionnaire",
    "screen",
    "steering_sweep",
    "system_prompt_spectrum",
    "token_trace",
    "trait_examples",
    "wilson_interval",
]

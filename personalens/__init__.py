"""personalens: persona vectors on TransformerLens.

Importing the package has no side effects and loads no heavy libraries; the public names below
are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "personalens.models",
    "model_info": "personalens.models",
    "EMBEDDED_MODEL_NAME": "personalens.models",
    "HOOK_TEMPLATE": "personalens.conventions",
    "hook_name": "personalens.conventions",
    "PersonaLensError": "personalens.errors",
    "ModelLoadError": "personalens.errors",
    "ChatBatch": "personalens.chat",
    "format_chat": "personalens.chat",
    "build_messages": "personalens.chat",
    "tokenize_prompts": "personalens.chat",
    "tokenize_pairs": "personalens.chat",
    "generate": "personalens.generation",
    "GenerationConfig": "personalens.generation",
    "GenerationResult": "personalens.generation",
    "generate_samples": "personalens.generation",
    "hf_view": "personalens.hf_backend",
    "Shard": "personalens.sharding",
    "PersonaVector": "personalens.vector",
    "normalize": "personalens.algebra",
    "project_out": "personalens.algebra",
    "gram_schmidt": "personalens.algebra",
    "cosine_matrix": "personalens.algebra",
    "cosine_by_layer": "personalens.algebra",
    "CosineMatrix": "personalens.algebra",
    "plot_cosine_matrix": "personalens.plotting",
    "plot_cosine_by_layer": "personalens.plotting",
    "save_html": "personalens.plotting",
    "Trait": "personalens.traits",
    "load_trait": "personalens.traits",
    "list_traits": "personalens.traits",
    "make_judge": "personalens.judge",
    "collect_activations": "personalens.activations",
    "ActivationSet": "personalens.activations",
    "ExtractionConfig": "personalens.extraction",
    "run_extraction": "personalens.extraction",
    "extract_persona_vector": "personalens.extraction",
    "export_control_vector": "personalens.control_vector",
    "import_control_vector": "personalens.control_vector",
    "steer": "personalens.steering",
    "add_steering": "personalens.steering",
    "SteeringHandle": "personalens.steering",
    "residual_norms": "personalens.steering",
    "calibrate_cap": "personalens.steering",
    "response_positions": "personalens.steering",
    "steering_sweep": "personalens.sweep",
    "SteeringSweepResult": "personalens.sweep",
    "plot_steering_sweep": "personalens.plotting",
    "plot_steering_heatmap": "personalens.plotting",
    # screening (ΔP)
    "screen": "personalens.screening",
    "ScreeningResult": "personalens.screening",
    "load_screening_data": "personalens.screening",
    "plot_screening_histogram": "personalens.plotting",
    # layer sweep
    "layer_sweep": "personalens.layerwise",
    "LayerSweepResult": "personalens.layerwise",
    "plot_layer_sweep": "personalens.plotting",
    "plot_layer_separation": "personalens.plotting",
    # questionnaires
    "Questionnaire": "personalens.questionnaire",
    "QuestionnaireResult": "personalens.questionnaire",
    "load_questionnaire": "personalens.questionnaire",
    "list_questionnaires": "personalens.questionnaire",
    "score_questionnaire": "personalens.questionnaire",
    # dynamic steering and multi-turn ranking
    "DynamicSteerer": "personalens.dynamic",
    "DynamicChat": "personalens.dynamic",
    "TurnResult": "personalens.dynamic",
    "ProjectionPolicy": "personalens.dynamic",
    "LLMPolicy": "personalens.dynamic",
    "SchedulePolicy": "personalens.dynamic",
    "load_scenarios": "personalens.ranking",
    "list_scenario_sets": "personalens.ranking",
    "run_ranking": "personalens.ranking",
    "judge_pairs": "personalens.ranking",
    "RankingResult": "personalens.ranking",
    "OpenAIPairwiseJudge": "personalens.ranking",
    "wilson_interval": "personalens.ranking",
    # monitoring
    "last_prompt_projection": "personalens.monitoring",
    "PromptProjections": "personalens.monitoring",
    "token_trace": "personalens.monitoring",
    "TokenTrace": "personalens.monitoring",
    "monitoring_experiment": "personalens.monitor_experiment",
    "MonitoringResult": "personalens.monitor_experiment",
    "MonitorCondition": "personalens.monitor_experiment",
    "system_prompt_spectrum": "personalens.monitor_experiment",
    "many_shot_conditions": "personalens.monitor_experiment",
    "trait_examples": "personalens.monitor_experiment",
    "plot_token_trace": "personalens.plotting",
    "plot_monitoring_scatter": "personalens.plotting",
    "plot_monitoring_r_by_layer": "personalens.plotting",
    # SAE decomposition
    "LayerSAE": "personalens.sae",
    "load_sae": "personalens.sae",
    "shipped_sae_layers": "personalens.sae",
    "decompose": "personalens.sae_decompose",
    "Decomposition": "personalens.sae_decompose",
    "feature_contexts": "personalens.sae_contexts",
    "FeatureContexts": "personalens.sae_contexts",
    "feature_vector": "personalens.sae_causal",
    "feature_steering_test": "personalens.sae_causal",
    "FeatureSteeringResult": "personalens.sae_causal",
    "plot_sae_cosines": "personalens.plotting",
    "plot_feature_steering": "personalens.plotting",
    # finetuning
    "finetune": "personalens.finetune",
    "FinetuneResult": "personalens.finetune",
    "load_finetuned": "personalens.finetune",
    "finetuning_shift": "personalens.shift",
    "FinetuningShift": "personalens.shift",
    "plot_finetuning_shift": "personalens.plotting",
    "plot_shift_by_layer": "personalens.plotting",
    # Big Five (OCEAN) control
    "BIG_FIVE_POLES": "personalens.ocean",
    "shipped_vector": "personalens.shipped_vectors",
    "list_shipped_vectors": "personalens.shipped_vectors",
    "scalar_sweep": "personalens.ocean",
    "ScalarSweepResult": "personalens.ocean",
    "additive_test": "personalens.ocean",
    "AdditiveTestResult": "personalens.ocean",
    "plot_scalar_sweep": "personalens.plotting",
    "plot_additive_test": "personalens.plotting",
}

__all__ = [
    "AdditiveTestResult",
    "BIG_FIVE_POLES",
    "ScalarSweepResult",
    "additive_test",
    "list_shipped_vectors",
    "plot_additive_test",
    "plot_scalar_sweep",
    "scalar_sweep",
    "shipped_vector",
    "FinetuneResult",
    "FinetuningShift",
    "finetune",
    "finetuning_shift",
    "load_finetuned",
    "plot_finetuning_shift",
    "plot_shift_by_layer",
    "Decomposition",
    "FeatureContexts",
    "FeatureSteeringResult",
    "LayerSAE",
    "decompose",
    "feature_contexts",
    "feature_steering_test",
    "feature_vector",
    "load_sae",
    "plot_feature_steering",
    "plot_sae_cosines",
    "shipped_sae_layers",
    "ActivationSet",
    "SteeringHandle",
    "SteeringSweepResult",
    "add_steering",
    "calibrate_cap",
    "plot_steering_heatmap",
    "plot_steering_sweep",
    "residual_norms",
    "response_positions",
    "steer",
    "steering_sweep",
    "ScreeningResult",
    "load_screening_data",
    "plot_screening_histogram",
    "screen",
    "LayerSweepResult",
    "layer_sweep",
    "plot_layer_separation",
    "plot_layer_sweep",
    "Questionnaire",
    "QuestionnaireResult",
    "list_questionnaires",
    "load_questionnaire",
    "score_questionnaire",
    "DynamicChat",
    "DynamicSteerer",
    "LLMPolicy",
    "OpenAIPairwiseJudge",
    "ProjectionPolicy",
    "RankingResult",
    "SchedulePolicy",
    "TurnResult",
    "judge_pairs",
    "list_scenario_sets",
    "load_scenarios",
    "run_ranking",
    "wilson_interval",
    "MonitorCondition",
    "MonitoringResult",
    "PromptProjections",
    "TokenTrace",
    "last_prompt_projection",
    "many_shot_conditions",
    "monitoring_experiment",
    "plot_monitoring_r_by_layer",
    "plot_monitoring_scatter",
    "plot_token_trace",
    "system_prompt_spectrum",
    "token_trace",
    "trait_examples",
    "CosineMatrix",
    "ExtractionConfig",
    "PersonaVector",
    "Trait",
    "collect_activations",
    "cosine_by_layer",
    "cosine_matrix",
    "export_control_vector",
    "extract_persona_vector",
    "generate_samples",
    "gram_schmidt",
    "hf_view",
    "Shard",
    "import_control_vector",
    "list_traits",
    "load_trait",
    "make_judge",
    "normalize",
    "plot_cosine_by_layer",
    "plot_cosine_matrix",
    "project_out",
    "run_extraction",
    "save_html",
    "EMBEDDED_MODEL_NAME",
    "HOOK_TEMPLATE",
    "ChatBatch",
    "GenerationConfig",
    "GenerationResult",
    "ModelLoadError",
    "PersonaLensError",
    "__version__",
    "build_messages",
    "format_chat",
    "generate",
    "hook_name",
    "load_model",
    "model_info",
    "tokenize_pairs",
    "tokenize_prompts",
]

if TYPE_CHECKING:  # pragma: no cover
    from .activations import ActivationSet, collect_activations
    from .algebra import (
        CosineMatrix,
        cosine_by_layer,
        cosine_matrix,
        gram_schmidt,
        normalize,
        project_out,
    )
    from .chat import ChatBatch, build_messages, format_chat, tokenize_pairs, tokenize_prompts
    from .control_vector import export_control_vector, import_control_vector
    from .conventions import HOOK_TEMPLATE, hook_name
    from .dynamic import (
        DynamicChat,
        DynamicSteerer,
        LLMPolicy,
        ProjectionPolicy,
        SchedulePolicy,
        TurnResult,
    )
    from .errors import ModelLoadError, PersonaLensError
    from .extraction import ExtractionConfig, extract_persona_vector, run_extraction
    from .finetune import FinetuneResult, finetune, load_finetuned
    from .generation import GenerationConfig, GenerationResult, generate, generate_samples
    from .hf_backend import hf_view
    from .judge import make_judge
    from .layerwise import LayerSweepResult, layer_sweep
    from .models import EMBEDDED_MODEL_NAME, load_model, model_info
    from .monitor_experiment import (
        MonitorCondition,
        MonitoringResult,
        many_shot_conditions,
        monitoring_experiment,
        system_prompt_spectrum,
        trait_examples,
    )
    from .monitoring import PromptProjections, TokenTrace, last_prompt_projection, token_trace
    from .ocean import (
        BIG_FIVE_POLES,
        AdditiveTestResult,
        ScalarSweepResult,
        additive_test,
        scalar_sweep,
    )
    from .plotting import (
        plot_additive_test,
        plot_cosine_by_layer,
        plot_cosine_matrix,
        plot_feature_steering,
        plot_finetuning_shift,
        plot_layer_separation,
        plot_layer_sweep,
        plot_monitoring_r_by_layer,
        plot_monitoring_scatter,
        plot_sae_cosines,
        plot_scalar_sweep,
        plot_screening_histogram,
        plot_shift_by_layer,
        plot_steering_heatmap,
        plot_steering_sweep,
        plot_token_trace,
        save_html,
    )
    from .questionnaire import (
        Questionnaire,
        QuestionnaireResult,
        list_questionnaires,
        load_questionnaire,
        score_questionnaire,
    )
    from .ranking import (
        OpenAIPairwiseJudge,
        RankingResult,
        judge_pairs,
        list_scenario_sets,
        load_scenarios,
        run_ranking,
        wilson_interval,
    )
    from .sae import LayerSAE, load_sae, shipped_sae_layers
    from .sae_causal import FeatureSteeringResult, feature_steering_test, feature_vector
    from .sae_contexts import FeatureContexts, feature_contexts
    from .sae_decompose import Decomposition, decompose
    from .screening import ScreeningResult, load_screening_data, screen
    from .sharding import Shard
    from .shift import FinetuningShift, finetuning_shift
    from .shipped_vectors import list_shipped_vectors, shipped_vector
    from .steering import (
        SteeringHandle,
        add_steering,
        calibrate_cap,
        residual_norms,
        response_positions,
        steer,
    )
    from .sweep import SteeringSweepResult, steering_sweep
    from .traits import Trait, list_traits, load_trait
    from .vector import PersonaVector


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personalens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

"""personalens: persona vectors on TransformerLens.

The names below are what a researcher needs first: load a model, generate, read activations,
extract a persona vector, steer with it, sweep layers and coefficients, decompose it into SAE
features. Everything else lives in namespaces, one per responsibility:

- ``pl.model``: loading (TransformerLens names, HF folders, GGUF), chat batches, generation,
  activations
- ``pl.engines``: the Hugging Face fast path that runs the same weights
- ``pl.runs``: resumable run directories and sharded workers
- ``pl.steering``: steering plans, handles, calibration, dynamic steering
- ``pl.vectors``: the PersonaVector value, its file formats, algebra, shipped vectors
- ``pl.judges``: the offline and OpenAI-compatible judges
- ``pl.extraction``: trait files and the extraction pipeline's stages
- ``pl.sae``: SAE loading, decomposition, contexts, causal tests
- ``pl.studies``: layer and steering sweeps, monitoring, screening, finetuning, personality
- ``pl.plot``: Plotly figures (the only place that imports plotly)
- ``pl.stats``: ROC-AUC, bootstrap and Pearson CIs, Wilson intervals

Layer ``L`` always means ``blocks.L.hook_resid_post`` (HF ``hidden_states[L+1]``); see
:mod:`personalens.conventions`. Importing the package has no side effects and loads no heavy
library: each name and namespace is imported on first use.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "personalens.model.load",
    "model_info": "personalens.model.load",
    "generate": "personalens.model.generation",
    "GenerationConfig": "personalens.model.generation",
    "collect_activations": "personalens.model.activations",
    "hook_name": "personalens.conventions",
    "PersonaLensError": "personalens.errors",
    "PersonaVector": "personalens.vectors.vector",
    "shipped_vector": "personalens.vectors.shipped",
    "load_trait": "personalens.extraction.traits",
    "list_traits": "personalens.extraction.traits",
    "make_judge": "personalens.judges.factory",
    "extract": "personalens.extraction.pipeline",
    "ExtractionConfig": "personalens.extraction.config",
    "steer": "personalens.steering.hooks",
    "add_steering": "personalens.steering.hooks",
    "steering_sweep": "personalens.studies.steering_sweep",
    "layer_sweep": "personalens.studies.layer_sweep",
    "screen": "personalens.studies.screening",
    "load_sae": "personalens.sae.load",
    "decompose": "personalens.sae.decompose",
}
_NAMESPACES = (
    "model",
    "engines",
    "runs",
    "steering",
    "vectors",
    "judges",
    "extraction",
    "sae",
    "studies",
    "plot",
    "stats",
)

# Names that were top-level before the subpackages: they still resolve (with a warning naming
# the new place) so old notebooks keep running; no example uses them.
_MOVED = {
    "ActivationSet": "model",
    "AdditiveTestResult": "studies",
    "BIG_FIVE_POLES": "studies",
    "ChatBatch": "model",
    "CosineMatrix": "vectors",
    "Decomposition": "sae",
    "DynamicChat": "steering",
    "DynamicSteerer": "steering",
    "EMBEDDED_MODEL_NAME": "model",
    "FeatureContexts": "sae",
    "FeatureSteeringResult": "sae",
    "FinetuneResult": "studies",
    "FinetuningShift": "studies",
    "GenerationResult": "model",
    "HOOK_TEMPLATE": "conventions",
    "LLMPolicy": "steering",
    "LayerSAE": "sae",
    "LayerSweepResult": "studies",
    "ModelLoadError": "errors",
    "MonitorCondition": "studies",
    "MonitoringResult": "studies",
    "OpenAIPairwiseJudge": "studies",
    "ProjectionPolicy": "steering",
    "PromptProjections": "studies",
    "Questionnaire": "studies",
    "QuestionnaireResult": "studies",
    "RankingResult": "studies",
    "ScalarSweepResult": "studies",
    "SchedulePolicy": "steering",
    "ScreeningResult": "studies",
    "Shard": "runs",
    "SteeringHandle": "steering",
    "SteeringSweepResult": "studies",
    "TokenTrace": "studies",
    "Trait": "extraction",
    "TurnResult": "steering",
    "additive_test": "studies",
    "build_messages": "model",
    "calibrate_cap": "steering",
    "cosine_by_layer": "vectors",
    "cosine_matrix": "vectors",
    "export_control_vector": "vectors",
    "extract_persona_vector": "extraction",
    "feature_contexts": "sae",
    "feature_steering_test": "sae",
    "feature_vector": "sae",
    "finetune": "studies",
    "finetuning_shift": "studies",
    "format_chat": "model",
    "generate_samples": "model",
    "gram_schmidt": "vectors",
    "hf_view": "engines",
    "import_control_vector": "vectors",
    "judge_pairs": "studies",
    "last_prompt_projection": "studies",
    "list_questionnaires": "studies",
    "list_scenario_sets": "studies",
    "list_shipped_vectors": "vectors",
    "load_finetuned": "studies",
    "load_questionnaire": "studies",
    "load_scenarios": "studies",
    "load_screening_data": "studies",
    "many_shot_conditions": "studies",
    "monitoring_experiment": "studies",
    "normalize": "vectors",
    "plot_additive_test": "plot",
    "plot_cosine_by_layer": "plot",
    "plot_cosine_matrix": "plot",
    "plot_feature_steering": "plot",
    "plot_finetuning_shift": "plot",
    "plot_layer_separation": "plot",
    "plot_layer_sweep": "plot",
    "plot_monitoring_r_by_layer": "plot",
    "plot_monitoring_scatter": "plot",
    "plot_sae_cosines": "plot",
    "plot_scalar_sweep": "plot",
    "plot_screening_histogram": "plot",
    "plot_shift_by_layer": "plot",
    "plot_steering_heatmap": "plot",
    "plot_steering_sweep": "plot",
    "plot_token_trace": "plot",
    "project_out": "vectors",
    "residual_norms": "steering",
    "response_positions": "steering",
    "run_extraction": "extract",
    "run_ranking": "studies",
    "save_html": "plot",
    "scalar_sweep": "studies",
    "score_questionnaire": "studies",
    "shipped_sae_layers": "sae",
    "system_prompt_spectrum": "studies",
    "token_trace": "studies",
    "tokenize_pairs": "model",
    "tokenize_prompts": "model",
    "trait_examples": "studies",
    "wilson_interval": "stats",
}

__all__ = [
    "add_steering",
    "collect_activations",
    "decompose",
    "engines",
    "extract",
    "extraction",
    "ExtractionConfig",
    "generate",
    "GenerationConfig",
    "hook_name",
    "judges",
    "layer_sweep",
    "list_traits",
    "load_model",
    "load_sae",
    "load_trait",
    "make_judge",
    "model",
    "model_info",
    "PersonaLensError",
    "PersonaVector",
    "plot",
    "runs",
    "sae",
    "screen",
    "shipped_vector",
    "stats",
    "steer",
    "steering",
    "steering_sweep",
    "studies",
    "vectors",
]

if TYPE_CHECKING:  # pragma: no cover
    from personalens import (
        engines,
        extraction,
        judges,
        model,
        plot,
        runs,
        sae,
        stats,
        steering,
        studies,
        vectors,
    )
    from personalens.conventions import hook_name
    from personalens.errors import PersonaLensError
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.pipeline import extract
    from personalens.extraction.traits import list_traits, load_trait
    from personalens.judges.factory import make_judge
    from personalens.model.activations import collect_activations
    from personalens.model.generation import GenerationConfig, generate
    from personalens.model.load import load_model, model_info
    from personalens.sae.decompose import decompose
    from personalens.sae.load import load_sae
    from personalens.steering.hooks import add_steering, steer
    from personalens.studies.layer_sweep import layer_sweep
    from personalens.studies.screening import screen
    from personalens.studies.steering_sweep import steering_sweep
    from personalens.vectors.shipped import shipped_vector
    from personalens.vectors.vector import PersonaVector


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    elif name in _NAMESPACES or name in ("conventions", "errors", "cli"):
        value = importlib.import_module(f"personalens.{name}")
    elif name in _MOVED:
        new = _MOVED[name]
        if new == "extract":
            where, value = "personalens.extract", __getattr__("extract")
        else:
            where = f"personalens.{new}.{name}"
            value = getattr(importlib.import_module(f"personalens.{new}"), name)
        warnings.warn(
            f"personalens.{name} moved to {where}; the old name will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return value  # not cached, so every use of an old name warns
    else:
        raise AttributeError(f"module 'personalens' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""From a trait file to a persona vector: trait files and the resumable extraction pipeline; and
style vectors from labelled texts (no contrastive system prompts).

``pl.extract`` runs every stage; each stage is callable on its own from a notebook.
"""

from personalens.extraction.config import ExtractionConfig
from personalens.extraction.heldout import heldout_layer_auc, measure_heldout
from personalens.extraction.jobs import build_jobs
from personalens.extraction.pipeline import ExtractionResult, extract, extract_persona_vector
from personalens.extraction.responses import filter_pairs, generate_responses, judge_responses
from personalens.extraction.run_activations import (
    collect_neutral_activations,
    collect_run_activations,
)
from personalens.extraction.style import StyleSet, list_style_sets, load_style_set, style_vector
from personalens.extraction.traits import Trait, list_traits, load_trait, parse_trait, save_trait

__all__ = [
    "ExtractionConfig",
    "ExtractionResult",
    "StyleSet",
    "Trait",
    "build_jobs",
    "collect_neutral_activations",
    "collect_run_activations",
    "extract",
    "extract_persona_vector",
    "filter_pairs",
    "generate_responses",
    "heldout_layer_auc",
    "judge_responses",
    "list_style_sets",
    "list_traits",
    "load_style_set",
    "load_trait",
    "measure_heldout",
    "parse_trait",
    "save_trait",
    "style_vector",
]

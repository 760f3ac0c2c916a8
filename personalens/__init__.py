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
    "PersonaVector": "personalens.vector",
    "Trait": "personalens.traits",
    "load_trait": "personalens.traits",
    "list_traits": "personalens.traits",
    "make_judge": "personalens.judge",
    "collect_activations": "personalens.activations",
    "ActivationSet": "personalens.activations",
    "ExtractionConfig": "personalens.extraction",
    "run_extraction": "personalens.extraction",
    "extract_persona_vector": "personalens.extraction",
}

__all__ = [
    "ActivationSet",
    "ExtractionConfig",
    "PersonaVector",
    "Trait",
    "collect_activations",
    "extract_persona_vector",
    "generate_samples",
    "list_traits",
    "load_trait",
    "make_judge",
    "run_extraction",
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
    from .chat import ChatBatch, build_messages, format_chat, tokenize_pairs, tokenize_prompts
    from .conventions import HOOK_TEMPLATE, hook_name
    from .errors import ModelLoadError, PersonaLensError
    from .extraction import ExtractionConfig, extract_persona_vector, run_extraction
    from .generation import GenerationConfig, GenerationResult, generate, generate_samples
    from .judge import make_judge
    from .models import EMBEDDED_MODEL_NAME, load_model, model_info
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

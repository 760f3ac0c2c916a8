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
}

__all__ = [
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
    from .chat import ChatBatch, build_messages, format_chat, tokenize_pairs, tokenize_prompts
    from .conventions import HOOK_TEMPLATE, hook_name
    from .errors import ModelLoadError, PersonaLensError
    from .generation import GenerationConfig, GenerationResult, generate
    from .models import EMBEDDED_MODEL_NAME, load_model, model_info


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'personalens' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

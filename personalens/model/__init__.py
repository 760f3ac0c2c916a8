"""Model loading and running: load any model as a HookedTransformer, chat templates and batches,
batched generation, residual-stream activations.

Lazy like the top-level package: ``personalens.model.chat`` can be imported by the engines and
steering without loading generation (which imports them back); each name below is imported on
first use. (No name here is also a submodule's name, so laziness cannot hand back a module.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from personalens._lazy import lazy_face

_EXPORTS = {
    "ActivationSet": "activations",
    "collect_activations": "activations",
    "ChatBatch": "chat",
    "build_messages": "chat",
    "format_chat": "chat",
    "tokenize_pairs": "chat",
    "tokenize_prompts": "chat",
    "EMBEDDED_MODEL_NAME": "embedded",
    "GenerationConfig": "generation",
    "GenerationResult": "generation",
    "generate": "generation",
    "generate_samples": "generation",
    "load_model": "load",
    "model_info": "load",
}
__all__ = [
    "ActivationSet",
    "ChatBatch",
    "EMBEDDED_MODEL_NAME",
    "GenerationConfig",
    "GenerationResult",
    "build_messages",
    "collect_activations",
    "format_chat",
    "generate",
    "generate_samples",
    "load_model",
    "model_info",
    "tokenize_pairs",
    "tokenize_prompts",
]

if TYPE_CHECKING:  # pragma: no cover
    from personalens.model.activations import ActivationSet, collect_activations
    from personalens.model.chat import (
        ChatBatch,
        build_messages,
        format_chat,
        tokenize_pairs,
        tokenize_prompts,
    )
    from personalens.model.embedded import EMBEDDED_MODEL_NAME
    from personalens.model.generation import (
        GenerationConfig,
        GenerationResult,
        generate,
        generate_samples,
    )
    from personalens.model.load import load_model, model_info


__getattr__, __dir__ = lazy_face(__name__, _EXPORTS)

"""Model loading and running: load any model as a HookedTransformer, chat templates and batches, batched generation, residual-stream activations."""

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

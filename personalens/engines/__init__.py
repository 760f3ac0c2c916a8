"""Engines other than TransformerLens hooks that run a HookedTransformer's weights (the Hugging Face fast path)."""

from personalens.engines.hf import BACKENDS, auto_backend_blockers, hf_view, resolve_backend
from personalens.engines.hf_model import drop_hf_view

__all__ = ["BACKENDS", "auto_backend_blockers", "drop_hf_view", "hf_view", "resolve_backend"]

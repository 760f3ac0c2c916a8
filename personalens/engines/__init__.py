"""Engines other than TransformerLens hooks that run a HookedTransformer's weights (the Hugging Face fast path)."""

from personalens.engines.hf import hf_view

__all__ = ["hf_view"]

"""Tensor shape aliases shared across personalens (checked at run time under pytest)."""

from __future__ import annotations

from jaxtyping import Bool, Float, Int
from torch import Tensor

Tokens = Int[Tensor, "batch pos"]
Mask = Bool[Tensor, "batch pos"]
Logits = Float[Tensor, "batch pos d_vocab"]
Resid = Float[Tensor, "batch pos d_model"]
LayerDirections = Float[Tensor, "n_layers d_model"]

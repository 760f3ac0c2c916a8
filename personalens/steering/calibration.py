"""Calibrating steering on neutral reference prompts, and the ``"response"`` positions as a mask.

* :func:`residual_norms`: the mean residual norm per layer, which ``coeff_scale="resid"``
  multiplies the unit direction by.
* :func:`calibrate_cap`: cap bounds as a percentile of the reference projections.
* :func:`response_positions`: the positions ``positions="response"`` steers during generation,
  as a mask for one teacher-forced forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._types import Mask
from personalens.conventions import resid_hook
from personalens.errors import PersonaLensError
from personalens.model.chat import ChatBatch, tokenize_prompts
from personalens.steering.resolve import (
    LayerSpec,
    Number,
    resolve_layers,
    unit_directions,
    vector_directions,
)
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# Neutral prompts used to calibrate "resid" coefficients and cap bounds when none are given.
REFERENCE_PROMPTS = (
    "What is the capital of France?",
    "Can you explain how photosynthesis works?",
    "Write a short poem about the ocean.",
    "How do I make a cup of tea?",
    "What are some tips for learning a new language?",
    "Summarise the plot of Romeo and Juliet in two sentences.",
    "What is the difference between a virus and a bacterium?",
    "Give me three ideas for a weekend trip.",
    "How does a bicycle stay upright?",
    "What should I consider when buying a laptop?",
    "Explain what a prime number is.",
    "Why is the sky blue?",
    "How can I improve my sleep?",
    "What is a good way to start a presentation?",
    "Describe the water cycle.",
    "What are the benefits of regular exercise?",
)


def response_positions(batch: ChatBatch) -> Mask:
    """Mask of the positions :func:`~personalens.steering.hooks.steer` calls ``"response"`` in a
    teacher-forced batch.

    That is the last prompt token and every response token but the last (the positions whose
    outputs predict response tokens), i.e. what generation with ``positions="response"`` steered.
    """
    mask = batch.response_mask.clone()
    rows = torch.arange(mask.shape[0], device=mask.device)
    mask[rows, batch.last_prompt_index] = True
    last_resp = torch.where(
        batch.response_mask, torch.arange(mask.shape[1], device=mask.device), -1
    ).amax(dim=1)
    has = last_resp >= 0
    mask[rows[has], last_resp[has]] = False
    return mask


def _reference_batch(model: HookedTransformer, reference: Sequence[Any] | None) -> ChatBatch:
    if model.tokenizer is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    prompts = list(reference) if reference is not None else list(REFERENCE_PROMPTS)
    if not prompts:
        raise PersonaLensError("reference prompts are empty: give at least one prompt")
    return tokenize_prompts(model.tokenizer, prompts, device=model.cfg.device)


def _reference_resid(
    model: HookedTransformer, layers: list[int], reference: Sequence[Any] | None
) -> dict[int, Float[Tensor, "n d_model"]]:
    """Residuals at ``layers`` of the reference prompts' real tokens, first token excluded."""
    batch = _reference_batch(model, reference)
    keep = batch.attention_mask.clone()
    first = batch.attention_mask.long().argmax(dim=1)  # first real token: a massive-norm sink
    keep[torch.arange(keep.shape[0]), first] = False
    out: dict[int, Tensor] = {}
    names = {resid_hook(model, L): L for L in layers}

    def grab(resid: Tensor, hook: Any) -> None:
        out[names[hook.name]] = resid[keep].float()

    with torch.inference_mode(), model.hooks(fwd_hooks=[(n, grab) for n in names]):
        model(
            batch.tokens,
            attention_mask=batch.attention_mask.long(),
            stop_at_layer=max(layers) + 1,
        )
    return out


def residual_norms(
    model: HookedTransformer, reference: Sequence[Any] | None = None
) -> Float[Tensor, " n_layers"]:
    """Mean residual-stream norm at every layer over the reference prompts' tokens.

    The first token of each prompt (an attention sink whose norm can be 100x the rest) and
    padding are excluded. Used by ``coeff_scale="resid"``.
    """
    layers = list(range(model.cfg.n_layers))
    resid = _reference_resid(model, layers, reference)
    return torch.stack([resid[L].norm(dim=-1).mean() for L in layers]).cpu()


def calibrate_cap(
    model: HookedTransformer,
    vector: PersonaVector | Tensor,
    layers: LayerSpec,
    reference: Sequence[Any] | None = None,
    *,
    percentile: Number = 95.0,
) -> dict[int, float]:
    """Cap bounds: the ``percentile`` of projections on ``v̂`` of reference prompt tokens."""
    if not 0 <= percentile <= 100:
        raise PersonaLensError(f"percentile must be in [0, 100], got {percentile}")
    dirs = vector_directions(model, vector)
    layer_list = resolve_layers(model, vector, layers)
    units = unit_directions(dirs[layer_list], layer_list)
    resid = _reference_resid(model, layer_list, reference)
    return {
        L: float(torch.quantile(resid[L] @ units[i].float(), percentile / 100.0))
        for i, L in enumerate(layer_list)
    }

"""Store TransformerLens weights in the memory layout its forward pass asks for.

TransformerLens 3.x rebuilds several weights on *every* forward: ``F.linear(x, W.T.contiguous())``
in the gated MLP and the unembedding, ``rearrange(W_Q, "h m d -> (h d) m")`` in attention, and
``rearrange(W_O, "h d m -> m (h d)").contiguous()``. Each is a full copy of the weight, which
dominates decoding time (one token per step).

:func:`fast_weight_layout` keeps every parameter's shape and values but stores it so that
those expressions are views: the copy disappears and the matmul sees the very same contiguous
weight it saw before, so outputs are bitwise identical. Only parameter *strides* change; code
that reads the weights (``model.W_Q``, ``FactoredMatrix``, state dicts) sees the same values.
(``safetensors.torch.save_file`` needs contiguous tensors: call ``.contiguous()`` on a state
dict's values before saving one with it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# (module class name, parameter name) -> the permutation that forward applies before reshaping
_PERMUTES: dict[tuple[str, str], tuple[int, ...]] = {
    **{
        (cls, name): (0, 2, 1)
        for cls in ("Attention", "GroupedQueryAttention")
        for name in ("W_Q", "W_K", "W_V", "_W_K", "_W_V")
    },
    ("Attention", "W_O"): (2, 0, 1),
    ("GroupedQueryAttention", "W_O"): (2, 0, 1),
    ("GatedMLP", "W_in"): (1, 0),
    ("GatedMLP", "W_gate"): (1, 0),
    ("GatedMLP", "W_out"): (1, 0),
    ("Unembed", "W_U"): (1, 0),
}


def _inverse(perm: tuple[int, ...]) -> tuple[int, ...]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return tuple(inv)


def _uses_plain_projections(module: nn.Module) -> bool:
    cfg = getattr(module, "cfg", None)
    if cfg is None:
        return False
    return not (
        getattr(cfg, "use_split_qkv_input", False)
        or getattr(cfg, "use_attn_in", False)
        or getattr(cfg, "load_in_4bit", False)
    )


@torch.no_grad()
def fast_weight_layout(model: HookedTransformer) -> int:
    """Re-store the weights that TL copies on every forward; returns how many were changed."""
    changed = 0
    for module in model.modules():
        cls = type(module).__name__
        if not _uses_plain_projections(module):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            perm = _PERMUTES.get((cls, name))
            if perm is None or param.ndim != len(perm):
                continue
            if param.permute(perm).is_contiguous():
                continue
            stored = param.permute(perm).contiguous()
            param.data = stored.permute(_inverse(perm))
            changed += 1
    return changed

"""Where a reply sits on the axis: the mean projection of its tokens' activations on the unit axis.

One teacher-forced forward of (conversation so far, reply) per reply; the residual at layer
``L`` (``blocks.L.hook_resid_post``) of every reply token is projected on ``v̂ = v_L / |v_L|`` and
averaged over the reply's tokens (the ``response_avg`` summary of
:func:`~personalens.model.activations.collect_activations`). Steering attached to the model
(e.g. activation capping) applies, so a capped run measures its capped activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from personalens.conventions import check_layer
from personalens.model.chat import Message
from personalens.steering.capping import response_projections

if TYPE_CHECKING:
    from torch import Tensor
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["reply_projections"]


def reply_projections(
    model: HookedTransformer,
    axis: PersonaVector | Tensor,
    conversations: Sequence[Sequence[Message]],
    replies: Sequence[str | Sequence[int]],
    layer: int,
    *,
    batch_size: int = 8,
) -> list[float]:
    """Mean projection on the unit axis at ``layer`` of each reply's tokens, given the
    conversation before it (ending with the user's turn); NaN for an empty reply."""
    layer = check_layer(layer, model.cfg.n_layers)
    keep = [i for i, r in enumerate(replies) if len(r) > 0]
    out = [math.nan] * len(replies)
    if not keep:
        return out
    values = response_projections(
        model,
        axis,
        [list(conversations[i]) for i in keep],
        [replies[i] for i in keep],
        [layer],
        batch_size=batch_size,
    )[:, 0].tolist()
    for i, v in zip(keep, values):
        out[i] = float(v)
    return out

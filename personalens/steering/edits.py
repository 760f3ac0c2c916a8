"""What steering does at one layer: :class:`LayerEdit`, a value any engine applies.

An edit acts on the residual stream ``h`` at layer ``L`` (``blocks.L.hook_resid_post``, see
:mod:`personalens.conventions`). ``v`` is the vector's row at that layer and ``v̂ = v / |v|``:

* ``"add"``: ``h + delta`` with ``delta = c · s · v`` resolved by
  :func:`~personalens.steering.plan.plan_steering` (``c`` the coefficient, ``s`` from its
  ``coeff_scale``).
* ``"ablate"``: ``h - c · (h·v̂) v̂`` (``c`` defaults to 1: directional ablation, the projection
  on ``v̂`` becomes zero).
* ``"cap"``: clamp the projection ``h·v̂`` to at most ``bound`` (``cap_side="max"``; at least
  for ``"min"``), as activation capping along the Assistant Axis does.

Positions (``LayerEdit.positions``; the one place their meaning is stated):

* ``"all"`` (the default of :func:`~personalens.steering.hooks.steer`,
  :func:`~personalens.steering.hooks.add_steering` and
  :func:`~personalens.steering.plan.plan_steering`): every non-padding position of every
  forward, as a TransformerLens hook, llama.cpp control vectors, repeng and steering-vectors
  do. Around a plain ``model(tokens)`` or ``run_with_cache`` every position changes; during
  generation the prompt (prefill) and every decode step are steered.
* ``"prompt"``: the positions of a forward pass without a KV cache (a prompt, or a prefill);
  decode steps of generation are not steered.
* ``"response"``: the positions whose output predicts a response token: the last prompt token
  of a prefill and every decode step. This is what the Persona Vectors ``ActivationSteerer``
  steers (the last position of every forward), and it keeps generation with a KV cache equal to
  generation without one. It is an explicit choice: the paper reproductions pass it
  (:func:`~personalens.studies.steering_sweep.steering_sweep` defaults to it, since it
  reproduces the paper's steering figure). A forward without a KV cache is treated as a prompt
  about to be answered (only each row's last token is steered); to steer a teacher-forced
  prompt + response, pass an explicit mask, e.g.
  :func:`~personalens.steering.calibration.response_positions` of a ``ChatBatch``.
* a boolean tensor ``[batch, pos]``: exactly those positions, for forwards of that shape.

Padding is never steered. An engine records what each forward looks like in a
:class:`ForwardContext` (the padding mask of the new positions and the KV-cache length) and
applies an edit with :func:`apply_edit`: the TransformerLens hooks of
:mod:`personalens.steering.hooks` and the Hugging Face engine (:mod:`personalens.engines.hf`)
both call it, so they compute exactly the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from personalens._types import Mask, Resid
from personalens.errors import PersonaLensError

Mode = Literal["add", "ablate", "cap"]
PositionName = Literal["all", "prompt", "response"]
Positions = str | Mask  # a PositionName or a mask

MODES = ("add", "ablate", "cap")
POSITIONS = ("all", "prompt", "response")


@dataclass(frozen=True)
class LayerEdit:
    """What happens at one layer: ``delta`` for add; ``unit`` (+ ``coeff``/``bound``) otherwise;
    ``positions`` says where (see the module doc)."""

    layer: int
    mode: Mode
    coeff: float
    delta: Float[Tensor, " d_model"] | None = None
    unit: Float[Tensor, " d_model"] | None = None
    bound: float | None = None
    cap_side: Literal["max", "min"] = "max"
    positions: Positions = "all"


def check_positions(positions: Any) -> None:
    """Raise :class:`PersonaLensError` unless ``positions`` is a position name or a
    boolean ``[batch, pos]`` mask."""
    if isinstance(positions, str):
        if positions not in POSITIONS:
            raise PersonaLensError(
                f"unknown positions {positions!r}: use one of {POSITIONS} or a boolean "
                "[batch, pos] mask"
            )
    elif isinstance(positions, Tensor):
        if positions.dtype != torch.bool or positions.ndim != 2:
            raise PersonaLensError(
                "a positions mask must be a boolean tensor [batch, pos], got "
                f"{positions.dtype} with shape {tuple(positions.shape)}"
            )
    else:
        raise PersonaLensError(f"positions must be a string or a boolean mask, got {positions!r}")


class ForwardContext:
    """What the current forward pass looks like, as the engine running it records it.

    One per attached steering (no globals): ``pad_mask`` marks the real tokens among the new
    positions (``None``: all are real) and ``past_len`` counts the positions the KV cache
    already held.
    """

    def __init__(self) -> None:
        self.pad_mask: Mask | None = None  # True = real token, for the new positions
        self.past_len = 0

    def mask_for(self, positions: str | Tensor, resid: Resid) -> Bool[Tensor, "batch pos"] | None:
        """Positions of ``resid`` to edit; ``None`` means all of them.

        (``positions`` is not annotated as a ``[batch, pos]`` mask of ``resid``'s shape: a mask of
        another shape, e.g. during a decode step, is reported below as a PersonaLensError.)
        """
        b, p = resid.shape[:2]
        pad = self.pad_mask
        if pad is not None and pad.shape != (b, p):
            pad = None  # a forward the engine did not record (e.g. a block called directly)
        if isinstance(positions, Tensor):
            if self.past_len or positions.shape != (b, p):
                raise PersonaLensError(
                    f"positions mask has shape {tuple(positions.shape)} but the forward pass has "
                    f"[{b}, {p}] new positions{' after a KV cache' if self.past_len else ''}; "
                    "explicit masks are for single forwards over whole sequences"
                )
            mask = positions.to(resid.device)
            return mask if pad is None else mask & pad.to(resid.device)
        if positions == "all" or (positions == "response" and self.past_len):
            return pad
        if positions == "prompt":
            if self.past_len:
                return torch.zeros((b, p), dtype=torch.bool, device=resid.device)
            return pad
        # "response" in a forward without cache: each row's last real token
        mask = torch.zeros((b, p), dtype=torch.bool, device=resid.device)
        if pad is None:
            mask[:, -1] = True
        else:
            idx = torch.arange(p, device=resid.device)
            last = torch.where(pad.to(resid.device), idx, -1).amax(dim=1)
            rows = torch.nonzero(last >= 0).flatten()
            mask[rows, last[rows]] = True
        return mask


def edit_resid(edit: LayerEdit, resid: Resid) -> Resid:
    """``edit`` applied to every position of ``resid`` (see the module doc for the modes)."""
    if edit.mode == "add":
        return resid + edit.delta.to(resid.device, resid.dtype)
    unit = edit.unit.to(resid.device, resid.dtype)
    proj = resid @ unit  # [batch, pos]
    if edit.mode == "ablate":
        return resid - (edit.coeff * proj)[..., None] * unit
    if edit.cap_side == "max":
        excess = (proj - edit.bound).clamp(min=0)
        return resid - excess[..., None] * unit
    shortfall = (edit.bound - proj).clamp(min=0)
    return resid + shortfall[..., None] * unit


def apply_edit(edit: LayerEdit, resid: Resid, context: ForwardContext) -> Resid:
    """``resid`` with ``edit`` applied at its positions of the forward ``context`` describes."""
    mask = context.mask_for(edit.positions, resid)
    edited = edit_resid(edit, resid)
    if mask is None:
        return edited
    return torch.where(mask[..., None], edited, resid)

"""Activation capping along an axis: keep the projection above a floor at a band of layers.

The Assistant Axis paper (Lu et al., 2026) stabilises the default persona by capping: at every
layer ``L`` of a band, the residual stream's projection on the unit axis ``v̂`` is clamped to at
least a floor ``τ_L`` (``h + max(τ_L - h·v̂, 0) v̂``), where ``τ_L`` is a low percentile of the
projections the default assistant itself produces. Values above the floor are left exactly as
they are. This is ``mode="cap"`` with ``cap_side="min"`` of :mod:`personalens.steering.edits`.

A :class:`CappingConfig` names the band and the percentile and, once calibrated, carries the
per-layer floors::

    config = CappingConfig.parse("layers_12:16-p0.25")         # upstream's experiment ids
    config = config.calibrate(model, axis, default_replies)     # floors from the default's replies
    with cap(model, axis, config):
        result = generate(model, prompts)

The upstream id ``"layers_46:54-p0.25"`` is layers 46..53 (a half-open range, as upstream caps
eight layers of Qwen3-32B) at the 25th percentile (``p`` is a fraction). The floors are the
percentile, over the default assistant's replies, of each reply's mean projection on ``v̂``
over its tokens (:func:`default_projections`), one floor per layer.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from personalens._validate import check_number
from personalens.conventions import select_layers
from personalens.errors import ArgumentError, PersonaLensError
from personalens.model.activations import collect_activations
from personalens.steering.hooks import apply_plan
from personalens.steering.plan import SteeringPlan, plan_steering
from personalens.steering.resolve import unit_directions, vector_directions

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = [
    "CappingConfig",
    "cap",
    "capping_plan",
    "default_projections",
    "response_projections",
]

# the prompt a bare default reply (a string without its prompt) is teacher-forced under
NEUTRAL_PROMPT = "Hello! What can you help me with?"
_ID = re.compile(r"^layers_(-?\d+):(-?\d+)-p(\d*\.?\d+)$")


@dataclass(frozen=True)
class CappingConfig:
    """A band of layers, a percentile (a fraction in ``[0, 1]``) and, once calibrated, one
    floor per layer (``floors``; ``None`` before :meth:`calibrate`)."""

    layers: tuple[int, ...]
    percentile: float = 0.25
    floors: dict[int, float] | None = field(default=None)

    def __post_init__(self) -> None:
        layers = tuple(int(L) for L in self.layers)
        if not layers:
            raise ArgumentError("CappingConfig needs at least one layer to cap")
        object.__setattr__(self, "layers", layers)
        check_number("percentile", self.percentile, lo=0, hi=1, what="a fraction, 0.25 = p25")
        if self.floors is not None:
            floors = {int(k): float(v) for k, v in self.floors.items()}
            missing = [L for L in layers if L not in floors]
            if missing:
                raise ArgumentError(
                    f"CappingConfig.floors gives no floor for layer(s) {missing}: give one floor "
                    "per capped layer, or leave floors out and call calibrate()"
                )
            object.__setattr__(self, "floors", {L: floors[L] for L in layers})

    @classmethod
    def parse(cls, spec: str, n_layers: int | None = None) -> CappingConfig:
        """A config from an upstream experiment id ``"layers_A:B-pP"`` (layers ``A..B-1``,
        percentile ``P`` as a fraction); ``n_layers`` checks the band against a model."""
        m = _ID.match(spec.strip()) if isinstance(spec, str) else None
        if m is None:
            raise ArgumentError(
                f"capping spec {spec!r} is not of the form 'layers_A:B-pP' (e.g. "
                "'layers_12:16-p0.25': layers 12..15, floor at the 25th percentile of the "
                "default assistant's projections)"
            )
        start, stop, pct = int(m.group(1)), int(m.group(2)), float(m.group(3))
        if stop <= start:
            raise ArgumentError(f"capping spec {spec!r}: the band A:B needs B > A")
        if n_layers is not None:
            layers = tuple(select_layers(list(range(start, stop)), n_layers, unique=True))
        else:
            layers = tuple(range(start, stop))
        return cls(layers=layers, percentile=pct)

    def spec(self) -> str:
        """The upstream-style id: ``"layers_A:B-pP"`` for a contiguous band."""
        lo, hi = min(self.layers), max(self.layers)
        if list(self.layers) != list(range(lo, hi + 1)):
            return f"layers_{','.join(map(str, self.layers))}-p{self.percentile:g}"
        return f"layers_{lo}:{hi + 1}-p{self.percentile:g}"

    def with_floors(self, floors: Mapping[int, float]) -> CappingConfig:
        """A copy with the given per-layer floors."""
        return replace(self, floors=dict(floors))

    def calibrate(
        self,
        model: HookedTransformer,
        axis: PersonaVector | Tensor,
        default_texts: Sequence[Any],
        *,
        batch_size: int = 8,
    ) -> CappingConfig:
        """A copy whose floors are the ``percentile`` of :func:`default_projections` of
        ``default_texts`` (default-assistant replies) at each capped layer."""
        proj = default_projections(model, axis, default_texts, self.layers, batch_size=batch_size)
        q = torch.quantile(proj, self.percentile, dim=0)
        return self.with_floors({L: float(q[i]) for i, L in enumerate(self.layers)})

    def to_dict(self) -> dict[str, Any]:
        return {
            "spec": self.spec(),
            "layers": list(self.layers),
            "percentile": self.percentile,
            "floors": None if self.floors is None else {str(k): v for k, v in self.floors.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CappingConfig:
        floors = data.get("floors")
        return cls(
            layers=tuple(data["layers"]),
            percentile=float(data.get("percentile", 0.25)),
            floors=None if floors is None else {int(k): float(v) for k, v in floors.items()},
        )


def _pairs(default_texts: Sequence[Any]) -> tuple[list[Any], list[str]]:
    """(prompts, replies) of default-assistant texts: strings (teacher-forced under
    :data:`NEUTRAL_PROMPT`), ``(prompt, reply)`` pairs or dicts with ``prompt``/``reply``."""
    prompts, replies = [], []
    for i, item in enumerate(default_texts):
        if isinstance(item, str):
            prompt, reply = NEUTRAL_PROMPT, item
        elif isinstance(item, Mapping):
            prompt = item.get("prompt", NEUTRAL_PROMPT)
            reply = item.get("reply", item.get("response", item.get("text")))
        elif isinstance(item, Sequence) and len(item) == 2:
            prompt, reply = item
        else:
            reply = None
        if not isinstance(reply, str) or not reply.strip():
            raise PersonaLensError(
                f"default text {i} ({item!r:.80}) is not a reply: give strings, (prompt, reply) "
                "pairs or dicts with 'prompt' and 'reply' (non-empty replies)"
            )
        prompts.append(prompt)
        replies.append(reply)
    if not replies:
        raise PersonaLensError("no default-assistant replies to calibrate capping floors on")
    return prompts, replies


def default_projections(
    model: HookedTransformer,
    axis: PersonaVector | Tensor,
    default_texts: Sequence[Any],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
) -> Tensor:
    """``[n_replies, len(layers)]``: each reply's mean projection on the unit axis over its
    tokens (teacher-forced, ``response_avg``), at each layer. Any steering attached to the model
    applies, so call it on the plain model."""
    layers = list(select_layers(list(layers), model.cfg.n_layers, unique=True))
    prompts, replies = _pairs(default_texts)
    return response_projections(model, axis, prompts, replies, layers, batch_size=batch_size)


def response_projections(
    model: HookedTransformer,
    axis: PersonaVector | Tensor,
    prompts: Sequence[Any],
    replies: Sequence[Any],
    layers: Sequence[int],
    *,
    batch_size: int = 8,
) -> Tensor:
    """``[n_replies, len(layers)]``: the mean projection of each reply's tokens on the unit
    axis (teacher-forced after its prompt or conversation, ``response_avg``) at each of
    ``layers`` (checked by the caller); what capping floors and drift both read."""
    units = unit_directions(vector_directions(model, axis)[list(layers)], list(layers)).cpu()
    acts = collect_activations(
        model, prompts, replies, layers=list(layers), batch_size=batch_size, progress=False
    )
    return torch.einsum("nld,ld->nl", acts.response_avg, units)


def capping_plan(
    model: HookedTransformer,
    axis: PersonaVector | Tensor,
    config: CappingConfig,
    *,
    positions: str = "all",
) -> SteeringPlan:
    """The steering plan of a calibrated ``config``: ``mode="cap"``, ``cap_side="min"`` at its
    layers with its floors (every position by default, as upstream caps)."""
    if config.floors is None:
        raise PersonaLensError(
            f"the capping config {config.spec()} has no floors yet: call "
            "config.calibrate(model, axis, default_replies) or config.with_floors({...}) first"
        )
    return plan_steering(
        model,
        axis,
        layers=list(config.layers),
        mode="cap",
        cap_side="min",
        bound={L: config.floors[L] for L in config.layers},
        positions=positions,
    )


@contextlib.contextmanager
def cap(
    model: HookedTransformer,
    axis: PersonaVector | Tensor,
    config: CappingConfig,
    *,
    positions: str = "all",
) -> Iterator[SteeringPlan]:
    """Cap ``model`` along ``axis`` with ``config`` for the ``with`` block."""
    with apply_plan(model, capping_plan(model, axis, config, positions=positions)) as plan:
        yield plan

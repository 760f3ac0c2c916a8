"""Steering through TransformerLens hook points: add, ablate or cap along a persona vector.

::

    with steer(model, vector, coeff=4.0, layers=[12], positions="response"):
        result = generate(model, prompts)          # or model(...), model.run_with_cache(...)

Layer ``L`` is ``blocks.L.hook_resid_post`` (see :mod:`personalens.conventions`); the hook
edits the residual stream there, so every later layer sees the edit and earlier ones do not.

Modes (``h`` is the residual at a steered position, ``v`` the vector's row at that layer,
``v̂ = v / |v|``):

* ``"add"``: ``h + c · s · v`` where ``c`` is ``coeff`` and ``s`` comes from ``coeff_scale``:
  ``"raw"`` (``s = 1``, the vector as extracted; the Persona Vectors paper's convention),
  ``"unit"`` (``s = 1 / |v|``: ``c`` is a length in residual units), or ``"resid"``
  (``s = r_L / |v|`` with ``r_L`` the mean residual norm at layer ``L`` over reference prompts:
  ``c = 0.1`` adds a tenth of a typical residual). A raw mean-difference vector's norm grows with
  depth, so the same raw ``coeff`` means very different things at different layers; ``"resid"``
  makes coefficients comparable across layers and models.
* ``"ablate"``: ``h - c · (h·v̂) v̂`` (``c`` defaults to 1: directional ablation, the projection
  on ``v̂`` becomes zero).
* ``"cap"``: clamp the projection ``h·v̂`` to at most ``bound`` (``cap_side="max"``; at least
  for ``"min"``), as activation capping along the Assistant Axis does. ``bound`` is a number,
  one per layer, or calibrated as a percentile of the projections of reference prompts
  (:func:`calibrate_cap`).

Positions:

* ``"all"``: every non-padding position.
* ``"prompt"``: the positions of a forward pass without a KV cache (a prompt, or a prefill);
  decode steps of generation are not steered.
* ``"response"``: the positions whose output predicts a response token: the last prompt token
  of a prefill and every decode step. This is what the Persona Vectors ``ActivationSteerer``
  steers (the last position of every forward), and it keeps generation with a KV cache equal to
  generation without one. A forward without a KV cache is treated as a prompt about to be
  answered (only each row's last token is steered); to steer a teacher-forced
  prompt + response, pass an explicit mask, e.g. :func:`response_positions` of a ``ChatBatch``.
* a boolean tensor ``[batch, pos]``: exactly those positions, for forwards of that shape.

Padding (as given by ``attention_mask`` or TransformerLens's own left-padding mask) is never
steered. Hooks live only inside the ``with`` block (or until ``handle.remove()`` for
:func:`add_steering`), even on exceptions; hooks the user added are never touched.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from personalens._types import LayerDirections, Mask, Resid
from personalens.conventions import check_layer, hook_name
from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.model.chat import ChatBatch
    from personalens.vectors.vector import PersonaVector

Mode = Literal["add", "ablate", "cap"]
PositionName = Literal["all", "prompt", "response"]
Positions = str | Mask  # a PositionName or a mask
CoeffScale = Literal["raw", "unit", "resid"]
LayerSpec = int | Sequence[int] | Literal["all"] | None
Number = float | int
PerLayer = Number | Sequence[Number] | Mapping[int, Number]

MODES = ("add", "ablate", "cap")
POSITIONS = ("all", "prompt", "response")
COEFF_SCALES = ("raw", "unit", "resid")

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


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class LayerEdit:
    """What happens at one layer: ``delta`` for add; ``unit`` (+ ``coeff``/``bound``) otherwise."""

    layer: int
    mode: Mode
    coeff: float
    delta: Float[Tensor, " d_model"] | None = None
    unit: Float[Tensor, " d_model"] | None = None
    bound: float | None = None
    cap_side: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class SteeringPlan:
    """A resolved steering request: one :class:`LayerEdit` per layer and the positions."""

    edits: tuple[LayerEdit, ...]
    positions: Positions
    description: dict[str, Any] = field(default_factory=dict)

    @property
    def layers(self) -> list[int]:
        return [e.layer for e in self.edits]


def _directions(model: HookedTransformer, vector: Any) -> LayerDirections:
    """The vector as a ``[n_layers, d_model]`` tensor on the model's device, width-checked."""
    from personalens.vectors.vector import PersonaVector

    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    if isinstance(vector, PersonaVector):
        vector.check_compatible(model)
        dirs = vector.directions
    elif isinstance(vector, Tensor):
        dirs = vector.detach()
        if dirs.ndim == 1:
            dirs = dirs.expand(n_layers, -1)
        if dirs.ndim != 2 or dirs.shape != (n_layers, d_model):
            raise PersonaLensError(
                f"steering tensor has shape {tuple(vector.shape)} but this model needs "
                f"[{d_model}] (one direction for every layer) or [{n_layers}, {d_model}]; "
                "was it extracted from another model?"
            )
    else:
        raise TypeError(f"vector must be a PersonaVector or a tensor, got {type(vector).__name__}")
    return dirs.to(device=model.cfg.device, dtype=torch.float32)


def resolve_layers(model: HookedTransformer, vector: Any, layers: LayerSpec) -> list[int]:
    n_layers = model.cfg.n_layers
    if layers is None:
        best = getattr(vector, "metadata", {}).get("best_layer")
        if best is None:
            raise PersonaLensError(
                "no layers given: pass layers=[L] (an int, a list, or 'all'); this vector "
                "records no best_layer to default to"
            )
        layers = [int(best)]
    if isinstance(layers, str):
        if layers != "all":
            raise PersonaLensError(f"layers={layers!r}: use an int, a list of ints, or 'all'")
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    resolved = [check_layer(int(L) if isinstance(L, Tensor) else L, n_layers) for L in layers]
    if not resolved:
        raise PersonaLensError("layers is empty: give at least one layer")
    if len(set(resolved)) != len(resolved):
        raise PersonaLensError(f"layers {list(layers)} name a layer twice")
    return resolved


def _per_layer(name: str, value: PerLayer | None, layers: list[int], n_layers: int) -> list:
    """One value per steered layer from a scalar, a list aligned with ``layers`` or a mapping."""
    if value is None or isinstance(value, int | float):
        return [value] * len(layers)
    if isinstance(value, Tensor):
        value = value.tolist()
    if isinstance(value, Mapping):
        keyed = {check_layer(int(k), n_layers): float(v) for k, v in value.items()}
        missing = [L for L in layers if L not in keyed]
        if missing:
            raise PersonaLensError(f"{name} gives no value for layer(s) {missing}")
        return [keyed[L] for L in layers]
    values = [float(v) for v in value]
    if len(values) != len(layers):
        raise PersonaLensError(
            f"{name} has {len(values)} values for {len(layers)} layers {layers}: give one "
            "number, one per layer in the same order, or a {layer: value} mapping"
        )
    return values


def _unit_rows(rows: Tensor, layers: list[int]) -> Tensor:
    norms = rows.norm(dim=-1, keepdim=True)
    zero = [layers[i] for i in range(len(layers)) if float(norms[i]) == 0.0]
    if zero:
        raise PersonaLensError(
            f"the vector is zero at layer(s) {zero}: it has no direction to steer along there"
        )
    return rows / norms


def plan_steering(
    model: HookedTransformer,
    vector: PersonaVector | Tensor,
    coeff: PerLayer | None = None,
    *,
    layers: LayerSpec = None,
    positions: Positions = "response",
    mode: str = "add",
    coeff_scale: str = "raw",
    bound: PerLayer | None = None,
    percentile: Number = 95.0,
    cap_side: str = "max",
    reference: Sequence[Any] | None = None,
    resid_norms: Tensor | Sequence[Number] | None = None,
) -> SteeringPlan:
    """Check a steering request against the model and resolve it to per-layer edits.

    Validation happens here, before any hook is attached, so bad input fails fast with a clear
    message. Arguments are those of :func:`steer`.
    """
    if mode not in MODES:
        raise PersonaLensError(f"unknown steering mode {mode!r}: use one of {MODES}")
    if coeff_scale not in COEFF_SCALES:
        raise PersonaLensError(f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}")
    if cap_side not in ("max", "min"):
        raise PersonaLensError(f"cap_side must be 'max' or 'min', got {cap_side!r}")
    _check_positions(positions)
    dirs = _directions(model, vector)
    n_layers = model.cfg.n_layers
    layer_list = resolve_layers(model, vector, layers)
    if mode == "add" and coeff is None:
        raise PersonaLensError("mode='add' needs a coefficient: steer(model, v, coeff=4.0, ...)")
    coeffs = _per_layer("coeff", 1.0 if coeff is None else coeff, layer_list, n_layers)
    rows = dirs[layer_list]
    dtype = model.cfg.dtype
    edits: list[LayerEdit] = []
    if mode == "add":
        if coeff_scale == "raw":
            scaled = rows
        else:
            scaled = _unit_rows(rows, layer_list)
            if coeff_scale == "resid":
                norms = (
                    residual_norms(model, reference)
                    if resid_norms is None
                    else torch.as_tensor(resid_norms, dtype=torch.float32)
                )
                if norms.shape != (n_layers,):
                    raise PersonaLensError(
                        f"resid_norms has shape {tuple(norms.shape)}; need one norm per layer "
                        f"({n_layers})"
                    )
                scaled = scaled * norms.to(scaled.device)[layer_list, None]
        for i, L in enumerate(layer_list):
            delta = (coeffs[i] * scaled[i]).to(dtype)
            edits.append(LayerEdit(L, "add", coeffs[i], delta=delta))
    else:
        units = _unit_rows(rows, layer_list)
        bounds: list[float | None] = [None] * len(layer_list)
        if mode == "cap":
            if bound is None:
                calibrated = calibrate_cap(
                    model, dirs, layer_list, reference, percentile=percentile
                )
                bounds = [calibrated[L] for L in layer_list]
            else:
                bounds = _per_layer("bound", bound, layer_list, n_layers)
        for i, L in enumerate(layer_list):
            edits.append(
                LayerEdit(
                    L,
                    mode,
                    coeffs[i],
                    unit=units[i].to(dtype),
                    bound=bounds[i],
                    cap_side=cap_side,
                )
            )
    description = {
        "mode": mode,
        "layers": layer_list,
        "coeff": coeffs,
        "coeff_scale": coeff_scale,
        "positions": positions if isinstance(positions, str) else "mask",
        **({"bound": [e.bound for e in edits], "cap_side": cap_side} if mode == "cap" else {}),
    }
    return SteeringPlan(edits=tuple(edits), positions=positions, description=description)


def _check_positions(positions: Any) -> None:
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


# ----------------------------------------------------------------------------- hooks


class ForwardContext:
    """What the current forward pass looks like, recorded by a pre-hook on the model.

    One per steering handle (no globals): the padding mask of the new positions and how many
    positions the KV cache already held.
    """

    def __init__(self, model: HookedTransformer) -> None:
        self.model = model
        self.pad_mask: Mask | None = None  # True = real token, for the new positions
        self.past_len = 0

    def pre_hook(self, module: Any, args: tuple, kwargs: dict) -> None:
        from transformer_lens.utilities.tokenize_utils import get_attention_mask

        model = self.model
        inp = args[0] if args else kwargs.get("input")
        cache = kwargs.get("past_kv_cache")
        self.past_len = 0 if cache is None else int(cache.previous_attention_mask.shape[1])
        mask = kwargs.get("attention_mask")
        if mask is not None:
            self.pad_mask = mask.bool()
            return
        tokens = kwargs.get("tokens")
        if isinstance(inp, Tensor) and not inp.is_floating_point():
            tokens = inp
        elif isinstance(inp, str | list):
            tokens = model.to_tokens(
                inp, prepend_bos=kwargs.get("prepend_bos", model.cfg.default_prepend_bos)
            )
        if tokens is None or model.tokenizer is None:
            self.pad_mask = None
            return
        if tokens.ndim == 1:
            tokens = tokens[None]
        if model.tokenizer.padding_side == "left" or cache is not None:
            prepend = kwargs.get("prepend_bos", model.cfg.default_prepend_bos)
            if not isinstance(prepend, bool):
                prepend = model.cfg.default_prepend_bos
            self.pad_mask = get_attention_mask(model.tokenizer, tokens, prepend).bool()
        else:
            self.pad_mask = None

    def mask_for(self, positions: str | Tensor, resid: Resid) -> Bool[Tensor, "batch pos"] | None:
        """Positions of ``resid`` to edit; ``None`` means all of them.

        (``positions`` is not annotated as a ``[batch, pos]`` mask of ``resid``'s shape: a mask of
        another shape, e.g. during a decode step, is reported below as a PersonaLensError.)
        """
        b, p = resid.shape[:2]
        pad = self.pad_mask
        if pad is not None and pad.shape != (b, p):
            pad = None  # a forward the pre-hook did not see (e.g. a block called directly)
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


def _edit(edit: LayerEdit, resid: Resid) -> Resid:
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


def make_steering_hook(
    edit: LayerEdit, positions: Positions, context: ForwardContext
) -> Callable[[Tensor, Any], Tensor]:
    """A TransformerLens hook applying ``edit`` at ``positions``; it captures its parameters."""

    def steering_hook(resid: Tensor, hook: Any) -> Tensor:
        mask = context.mask_for(positions, resid)
        edited = _edit(edit, resid)
        if mask is None:
            return edited
        return torch.where(mask[..., None], edited, resid)

    steering_hook.__name__ = f"personalens_steer_{edit.mode}_L{edit.layer}"
    # what this hook does, so other backends can apply exactly the attached steering
    # (personalens.engines.hf reads it from the hook points: the hooks are the source of truth)
    steering_hook.personalens_edit = (edit, positions)
    return steering_hook


def _hooks(model: HookedTransformer, plan: SteeringPlan, context: ForwardContext):
    return [
        (hook_name(e.layer), make_steering_hook(e, plan.positions, context)) for e in plan.edits
    ]


@contextlib.contextmanager
def steer(
    model: HookedTransformer,
    vector: PersonaVector | Tensor,
    coeff: PerLayer | None = None,
    *,
    layers: LayerSpec = None,
    positions: Positions = "response",
    mode: str = "add",
    coeff_scale: str = "raw",
    bound: PerLayer | None = None,
    percentile: Number = 95.0,
    cap_side: str = "max",
    reference: Sequence[Any] | None = None,
    resid_norms: Tensor | Sequence[Number] | None = None,
) -> Iterator[SteeringPlan]:
    """Steer every forward pass of ``model`` inside the ``with`` block (see the module doc).

    Args:
        vector: a :class:`~personalens.PersonaVector`, a ``[n_layers, d_model]`` tensor, or one
            ``[d_model]`` direction used at every steered layer.
        coeff: one number, one per layer (aligned with ``layers``), or ``{layer: coeff}``.
            Required for ``"add"``; for ``"ablate"`` the fraction removed (default 1).
        layers: an int, a list, ``"all"``, or ``None`` for the vector's recorded best layer.
        positions: ``"response"`` (default), ``"prompt"``, ``"all"`` or a boolean mask.
        mode: ``"add"``, ``"ablate"`` or ``"cap"``.
        coeff_scale: ``"raw"``, ``"unit"`` or ``"resid"`` (how ``coeff`` is measured; add only).
        bound: cap bound(s); ``None`` calibrates them at ``percentile`` of the projections of
            ``reference`` prompts (default: :data:`REFERENCE_PROMPTS`).
        resid_norms: precomputed :func:`residual_norms` for ``coeff_scale="resid"``.

    Yields the resolved :class:`SteeringPlan` (its ``description`` is handy for logging).
    """
    plan = plan_steering(
        model,
        vector,
        coeff,
        layers=layers,
        positions=positions,
        mode=mode,
        coeff_scale=coeff_scale,
        bound=bound,
        percentile=percentile,
        cap_side=cap_side,
        reference=reference,
        resid_norms=resid_norms,
    )
    with apply_plan(model, plan):
        yield plan


@contextlib.contextmanager
def apply_plan(model: HookedTransformer, plan: SteeringPlan) -> Iterator[SteeringPlan]:
    """Attach an already resolved plan for the duration of a ``with`` block."""
    context = ForwardContext(model)
    pre = model.register_forward_pre_hook(context.pre_hook, with_kwargs=True)
    try:
        with model.hooks(fwd_hooks=_hooks(model, plan, context)):
            yield plan
    finally:
        pre.remove()


class SteeringHandle:
    """Persistent steering from :func:`add_steering`; ``remove()`` detaches exactly its hooks."""

    def __init__(self, model: HookedTransformer, plan: SteeringPlan) -> None:
        self.model = model
        self.plan = plan
        context = ForwardContext(model)
        self._pre = model.register_forward_pre_hook(context.pre_hook, with_kwargs=True)
        self._handles: list[tuple[Any, Any]] = []
        for name, fn in _hooks(model, plan, context):
            point = model.mod_dict[name]
            point.add_hook(fn, dir="fwd")
            self._handles.append((point, point.fwd_hooks[-1]))

    @property
    def active(self) -> bool:
        return any(h in point.fwd_hooks for point, h in self._handles) if self._handles else False

    def remove(self) -> None:
        """Detach this steering (idempotent); other hooks on the model stay."""
        for point, handle in self._handles:
            if any(h is handle for h in point.fwd_hooks):
                handle.hook.remove()
                point.fwd_hooks = [h for h in point.fwd_hooks if h is not handle]
        self._handles = []
        self._pre.remove()

    def __enter__(self) -> SteeringHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"SteeringHandle({self.plan.description}, {state})"


def add_steering(
    model: HookedTransformer, vector: PersonaVector | Tensor, coeff: PerLayer | None = None, **kw
) -> SteeringHandle:
    """Like :func:`steer` but stays until ``handle.remove()`` (for long interactive sessions).

    The hooks are ordinary non-permanent TransformerLens hooks: clearing the model's hooks by
    hand also removes them. personalens itself never clears hooks; ``handle.remove()`` takes off
    exactly this handle's own and leaves the user's alone.
    """
    return SteeringHandle(model, plan_steering(model, vector, coeff, **kw))


# ----------------------------------------------------------------------------- calibration


def response_positions(batch: ChatBatch) -> Mask:
    """Mask of the positions :func:`steer` calls ``"response"`` in a teacher-forced batch.

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
    from personalens.model.chat import tokenize_prompts

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

    def grab(resid: Tensor, hook: Any) -> None:
        out[int(hook.name.split(".")[1])] = resid[keep].float()

    with torch.inference_mode(), model.hooks(fwd_hooks=[(hook_name(L), grab) for L in layers]):
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
    dirs = _directions(model, vector)
    layer_list = resolve_layers(model, vector, layers)
    units = _unit_rows(dirs[layer_list], layer_list)
    resid = _reference_resid(model, layer_list, reference)
    return {
        L: float(torch.quantile(resid[L] @ units[i].float(), percentile / 100.0))
        for i, L in enumerate(layer_list)
    }

"""A fast backend: a Hugging Face model that shares the TransformerLens weights and steers exactly.

TransformerLens hook names stay the interface (``steer(...)`` attaches hooks on
``blocks.L.hook_resid_post``); ``backend="hf"`` in :func:`personalens.generate` and
:func:`personalens.collect_activations` only swaps the engine that runs the forward passes.

Design:

* **The weights are views.** personalens builds HookedTransformers without basis-moving weight
  processing and stores their weights in Hugging Face's linear layout
  (:func:`personalens.model.layout.fast_weight_layout`), so :func:`hf_view` builds a
  ``LlamaForCausalLM`` (on the meta device, then filled in) whose every parameter is a view of a
  TransformerLens parameter: no weight is copied and no extra weight memory is used. Biases
  (Qwen2's q/k/v), the untied unembedding (and its bias when non-zero), every RMSNorm weight and
  eps, the attention scale and the rotary table come from the TransformerLens model itself; the
  rotary table is TransformerLens's own (its rotary scaling variants included), and positions
  under left padding are TransformerLens's (real tokens counted from each row's first). The view
  is cached on the model object (attribute ``_personalens_hf_view``, not a submodule) and
  rebuilt when any parameter's storage changes (``model.to(...)``, a dtype change, replaced
  weights); in-place weight edits show in the view at once. (A HookedTransformer built by hand
  first gets :func:`~personalens.model.layout.fast_weight_layout`, which keeps its values bitwise.)
* **Mapped models**: those whose TransformerLens config describes a Llama-style decoder (Llama,
  Qwen2, Mistral without a sliding window, and hand-built configs of that shape): RMSNorm,
  rotary over whole heads in NeoX halves, gated SiLU MLP without biases, GQA, global causal
  attention. Anything else (Gemma, GPT-2, a sliding window, soft-capping, qk-norm, ...) raises a
  :class:`PersonaLensError` naming the architecture and what does not map: use
  ``backend="tl"``.
* **Engine**: ``transformers``' own Llama layers with SDPA attention. Generation keeps
  personalens's decode loop (seeded per-sample sampling, stop tokens, left padding, finish
  reasons) and swaps only the forward and the KV cache (a preallocated ``StaticCache``).
  Activation collection stops after the deepest layer it needs, like ``stop_at_layer``.
* **Steering is translated, not reimplemented.** The backend reads the
  :class:`~personalens.steering.edits.LayerEdit` values attached to the TransformerLens model
  (:func:`~personalens.steering.hooks.attached_edits`: only those whose hook is still on its hook
  point, in execution order) and registers a forward hook on HF decoder layer ``L`` (whose
  output *is* ``blocks.L.hook_resid_post``) running the same hook function as TransformerLens
  (:func:`~personalens.steering.hooks.make_steering_hook`, which applies the edit with
  :func:`~personalens.steering.edits.apply_edit`), fed by a
  :class:`~personalens.steering.edits.ForwardContext` holding the same padding mask and KV-cache
  length the TransformerLens pre-hook records. Modes, positions (``"prompt"``, ``"response"``,
  ``"all"``, masks), padding and hook order are therefore those of the TransformerLens path.
* **Refused**: any other hook on the TransformerLens model (a user's ``model.hooks(...)``,
  backward hooks, plain torch hooks on its modules). The HF model cannot run TransformerLens
  hooks and ignoring them would silently change results, so the backend raises instead.
* **``backend="auto"``** (the command line's default) takes ``"hf"`` exactly when nothing above
  would refuse it and the model holds only TransformerLens modules (an SAE or adapter spliced
  into a hook point, or a subclass such as ``HookedSAETransformer``, would be skipped by the HF
  view); otherwise ``"tl"``. :func:`auto_backend_blockers` says why.
* **GPU option** ``compile=True`` (generation only; meant for CUDA and not measured yet): the
  decode step compiled with ``torch.compile(mode="reduce-overhead")`` (CUDA graphs) over a
  static cache; the prefill stays eager. See :class:`HFDecoder`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from transformers import StaticCache

from personalens.engines.hf_model import (
    SUPPORTED_ARCHITECTURES,
    _view,
    drop_hf_view,
    hf_view,
    unsupported_reasons,
)
from personalens.errors import PersonaLensError
from personalens.steering.edits import ForwardContext
from personalens.steering.hooks import attached_edits, foreign_hooks, make_steering_hook

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

BACKENDS = ("tl", "hf", "auto")
_STATIC_BUCKET = 256  # StaticCache lengths are rounded up to this, so few shapes get compiled
_KEEP_STATIC = 2  # compile=True caches kept on the view (a full batch and a last, smaller one)

LayerHook = Callable[[Tensor, Any], Tensor | None]  # a TransformerLens-style fn(resid, hook)

__all__ = [
    "BACKENDS",
    "SUPPORTED_ARCHITECTURES",
    "HFDecoder",
    "attached_steering",
    "auto_backend_blockers",
    "check_backend",
    "drop_hf_view",
    "hf_view",
    "resolve_backend",
    "run_with_layer_hooks",
    "unsupported_reasons",
]


def check_backend(backend: str) -> str:
    """Validate a ``backend`` argument."""
    if backend not in BACKENDS:
        raise PersonaLensError(
            f"unknown backend {backend!r}: use 'tl' (TransformerLens, runs any hook), 'hf' "
            "(a Hugging Face model sharing the weights; applies personalens steering only) or "
            "'auto' ('hf' when that is exact for this model, else 'tl')"
        )
    return backend


def auto_backend_blockers(model: HookedTransformer) -> list[str]:
    """Why ``backend="auto"`` runs ``model`` on TransformerLens (empty: it runs on HF).

    ``"hf"`` is chosen only when it computes what TransformerLens would: a mapped (Llama-style)
    architecture on one device, nothing but TransformerLens modules (no SAE spliced into a hook
    point, no adapter layers, not a subclass such as ``HookedSAETransformer``), and no hooks
    other than personalens steering.
    """
    reasons = [f"lacks {need}" for need in unsupported_reasons(model)]
    foreign = sorted(
        {
            f"{type(m).__module__}.{type(m).__name__}"
            for m in model.modules()
            if not type(m).__module__.startswith("transformer_lens.")
        }
    )
    if foreign:
        reasons.append(f"has modules TransformerLens did not build: {', '.join(foreign[:3])}")
    devices = {p.device for p in model.parameters()}
    if len(devices) > 1:
        reasons.append(f"is spread over {len(devices)} devices")

    foreign = foreign_hooks(model)
    if foreign:
        reasons.append(_not_steering(foreign))
    return reasons


def resolve_backend(model: HookedTransformer, backend: str) -> str:
    """The engine a call runs on: ``backend`` itself, or for ``"auto"`` ``"hf"`` when
    :func:`auto_backend_blockers` finds nothing and ``"tl"`` otherwise."""
    if check_backend(backend) != "auto":
        return backend
    return "tl" if auto_backend_blockers(model) else "hf"


# ----------------------------------------------------------------------------- steering


def _not_steering(foreign: list[str]) -> str:
    shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
    return f"has hooks that are not personalens steering: {shown}"


def attached_steering(model: HookedTransformer) -> list[tuple[Any, Any]]:
    """``(LayerEdit, positions)`` of each personalens steering hook on ``model``, in run order.

    Raises :class:`PersonaLensError` when ``model`` has any other hook (a user's
    ``model.hooks(...)``, backward hooks, torch hooks on its modules): the HF backend cannot run
    them and will not ignore them.
    """

    foreign = foreign_hooks(model)
    if foreign:
        raise PersonaLensError(
            f"the model {_not_steering(foreign)}. The Hugging Face backend applies only "
            "personalens steering (steer/add_steering) and cannot run other hooks; use "
            "backend='tl' to run them, or remove them."
        )
    return [(edit, edit.positions) for edit in attached_edits(model)]


class _Stop(Exception):
    """Raised by the last needed layer hook to end a forward early (like ``stop_at_layer``)."""


def _as_hf_hook(fn: LayerHook) -> Callable:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        resid = output[0] if isinstance(output, tuple) else output
        new = fn(resid, None)
        if new is None:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new

    return hook


class _Hooks:
    """Steering (then ``extra``) hooks on the HF decoder layers for the duration of a ``with``."""

    def __init__(
        self, model: HookedTransformer, hf: nn.Module, extra: Sequence[tuple[int, LayerHook]] = ()
    ) -> None:

        self.ctx = ForwardContext()
        self.edits = [edit for edit, _ in attached_steering(model)]
        fns = [(e.layer, make_steering_hook(e, self.ctx)) for e in self.edits]
        self.fns = [(layer, _as_hf_hook(fn)) for layer, fn in [*fns, *extra]]
        self.layers = hf.model.layers
        self.handles: list[Any] = []

    def __enter__(self) -> _Hooks:
        try:
            for layer, fn in self.fns:
                self.handles.append(self.layers[layer].register_forward_hook(fn))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def _positions(seen_before: Tensor, mask: Tensor) -> Tensor:
    """TransformerLens's position ids: real tokens counted from each row's first (pads get 0)."""
    return (seen_before[:, None] + mask.long().cumsum(1) - 1).clamp(min=0)


# ----------------------------------------------------------------------------- forward passes


@torch.inference_mode()
def run_with_layer_hooks(
    model: HookedTransformer,
    tokens: Tensor,
    attention_mask: Tensor,
    hooks: Sequence[tuple[int, LayerHook]],
) -> None:
    """One forward of ``tokens`` (no KV cache) through the HF view, for its layer hooks.

    ``hooks`` are ``(layer, fn)`` with ``fn(resid, hook)`` TransformerLens-style functions that
    see ``blocks.L.hook_resid_post`` (the output of HF layer ``L``) after any personalens
    steering attached to ``model``; the forward stops after the deepest hooked layer.
    """
    if not hooks:
        raise PersonaLensError("no layer hooks given: nothing to run")
    view = _view(model)
    last = max(layer for layer, _ in hooks)

    def stop(resid: Tensor, hook: Any) -> None:
        raise _Stop

    extra = [*hooks, (last, stop)] if last < model.cfg.n_layers - 1 else list(hooks)
    ctx_hooks = _Hooks(model, view.hf, extra)
    ctx_hooks.ctx.pad_mask = attention_mask.bool()
    ctx_hooks.ctx.past_len = 0
    pos = _positions(torch.zeros_like(tokens[:, 0]), attention_mask)
    with ctx_hooks:
        try:
            view.hf.model(
                input_ids=tokens,
                attention_mask=attention_mask.long(),
                position_ids=pos,
                use_cache=False,
            )
        except _Stop:
            pass


class HFDecoder:
    """The forward + KV cache of one generation batch on the HF view (use as a context manager).

    ``decoder(tokens, attention_mask)`` runs the new positions (the whole left-padded prompt
    first, then one token per row per step), updates the cache and returns the last position's
    logits ``[batch, d_vocab]``, exactly like the TransformerLens path in
    :mod:`personalens.model.generation`, with the personalens steering attached to ``model`` applied.

    The KV cache is a ``StaticCache`` of ``max_len`` positions. ``compile=True`` (for CUDA;
    GPU-oriented and not yet measured) rounds ``max_len`` up to a multiple of 256, keeps the
    caches of the last two (batch size, length) shapes on the view for later batches
    (:func:`drop_hf_view` frees them), and runs decode steps through
    ``torch.compile(mode="reduce-overhead")`` (CUDA graphs); the prefill stays eager. The
    steering hooks are traced into the graph with torch's module-hook guards switched on, so a
    different steering structure (layers, modes, positions, or a changed float such as a cap
    bound) recompiles instead of replaying a stale graph, while new ``add`` vectors or
    coefficients are graph inputs and reuse it (checked with dynamo on CPU). Compiling pays off
    for long jobs, not for many short calls; explicit position masks are refused.
    """

    def __init__(
        self, model: HookedTransformer, batch_size: int, max_len: int, *, compile: bool = False
    ) -> None:
        view = _view(model)
        self.hf = view.hf
        self.compile = compile
        device = model.embed.W_E.device
        self.count = torch.zeros(batch_size, dtype=torch.long, device=device)
        self.past = 0
        self.hooks = _Hooks(model, self.hf)
        if not compile:
            # a preallocated cache: no per-step concatenation of every layer's keys and values
            self.cache = StaticCache(config=self.hf.config, max_cache_len=max_len)
            self.mask = torch.zeros((batch_size, max_len), dtype=torch.long, device=device)
            return
        if any(isinstance(edit.positions, Tensor) for edit in self.hooks.edits):
            raise PersonaLensError(
                "compile=True cannot steer with an explicit positions mask (masks are for single "
                "forwards over whole sequences); use positions='prompt'/'response'/'all'"
            )
        length = -(-max_len // _STATIC_BUCKET) * _STATIC_BUCKET
        key = (batch_size, length, str(device))
        if view.step is None:
            view.step = torch.compile(_decode_step, mode="reduce-overhead", dynamic=False)
        if key not in view.static:
            while len(view.static) >= _KEEP_STATIC:  # bound the memory held by old caches
                view.static.pop(next(iter(view.static)))
            cache = StaticCache(config=self.hf.config, max_cache_len=length)
            mask = torch.zeros((batch_size, length), dtype=torch.long, device=device)
            view.static[key] = (cache, mask)
        self.step = view.step
        self.cache, self.mask = view.static[key]
        self.cache.reset()
        self.mask.zero_()

    def __enter__(self) -> HFDecoder:
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.hooks.__exit__()

    def __call__(self, tokens: Tensor, attention_mask: Tensor) -> Tensor:
        new = tokens.shape[1]
        pos = _positions(self.count, attention_mask)
        ctx = self.hooks.ctx
        ctx.pad_mask, ctx.past_len = attention_mask.bool(), self.past
        self.mask[:, self.past : self.past + new] = attention_mask.long()
        if self.compile and self.past:
            # compiled decode step: the steering context is frozen so the graph does not
            # depend on the step. Same edits: every decode position is real (pad_mask None
            # means "all real") and mask_for only asks whether a cache precedes (past_len).
            ctx.pad_mask, ctx.past_len = None, 1
            # torch skips guarding module hooks by default (unsafe): make a changed hook set
            # recompile instead of silently replaying the old one
            with torch._dynamo.config.patch(skip_nnmodule_hook_guards=False):
                logits = self.step(self.hf, tokens, pos, self.mask, self.cache).clone()
        else:
            logits = _decode_step(self.hf, tokens, pos, self.mask, self.cache)
        self.count += attention_mask.long().sum(1)
        self.past += new
        return logits


def _decode_step(hf: nn.Module, tokens: Tensor, pos: Tensor, mask: Tensor, cache: Any) -> Tensor:
    out = hf(
        input_ids=tokens,
        attention_mask=mask,
        position_ids=pos,
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    return out.logits[:, -1, :]

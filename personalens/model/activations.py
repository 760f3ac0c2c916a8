"""Residual-stream summaries of (prompt, response) pairs at every layer, reduced on the fly.

One batched forward per batch; a hook on each ``blocks.L.hook_resid_post`` immediately reduces
the ``[batch, pos, d_model]`` activation to three per-sample vectors and drops it, so memory is
O(batch x pos x d_model) for the pass plus O(n_layers x d_model) per sample kept, never a full
all-layer cache. The unembedding is skipped (``stop_at_layer``). ``backend="hf"`` runs the same
hooks on a Hugging Face model sharing the weights (:mod:`personalens.engines.hf`; faster, SDPA
attention), with any personalens steering applied exactly as on TransformerLens.

Variants (all exclude the sequence's first token, whose residual norm is an outlier by orders
of magnitude in many models, e.g. ~25,000 vs ~100-600 in SmolLM2):

* ``response_avg``: mean over response tokens;
* ``prompt_avg``: mean over prompt tokens (system + user turns + the assistant header);
* ``last_prompt_token``: the last prompt token, the position that predicts the first reply token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from personalens.conventions import check_layer, resid_hook
from personalens.engines.hf import resolve_backend, run_with_layer_hooks
from personalens.errors import PersonaLensError
from personalens.model.chat import (
    ChatBatch,
    Message,
    as_conversation,
    batch_from_ids,
    encode_chat,
    encode_response,
    pad_id,
)

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

VARIANTS = ("response_avg", "prompt_avg", "last_prompt_token")
BATCH_FIELDS = tuple(f.name for f in fields(ChatBatch))  # tokens and the three masks
Summary = Float[Tensor, "n n_layers d_model"]


@dataclass(frozen=True)
class ActivationSet:
    """Per-sample summaries ``[n_samples, n_layers, d_model]`` for each variant (float32, CPU)."""

    response_avg: Summary
    prompt_avg: Summary
    last_prompt_token: Summary
    layers: tuple[int, ...]

    def __len__(self) -> int:
        return self.response_avg.shape[0]

    def variant(self, name: str) -> Summary:
        if name not in VARIANTS:
            raise ValueError(f"unknown variant {name!r}; use one of {VARIANTS}")
        return getattr(self, name)

    def select(self, index: Sequence[int] | Tensor) -> ActivationSet:
        idx = torch.as_tensor(index, dtype=torch.long)
        return ActivationSet(
            self.response_avg[idx], self.prompt_avg[idx], self.last_prompt_token[idx], self.layers
        )

    @staticmethod
    def concat(parts: Sequence[ActivationSet]) -> ActivationSet:
        if not parts:
            raise PersonaLensError("no activations to concatenate")
        return ActivationSet(
            *(torch.cat([p.variant(v) for p in parts]) for v in VARIANTS), layers=parts[0].layers
        )

    def to_tensors(self) -> dict[str, Tensor]:
        return {v: self.variant(v).contiguous() for v in VARIANTS}

    @staticmethod
    def from_tensors(tensors: dict[str, Tensor], layers: Sequence[int]) -> ActivationSet:
        return ActivationSet(*(tensors[v] for v in VARIANTS), layers=tuple(layers))


def _reduce_hook(layer_slot: int, store: dict, masks: dict):
    """A hook factory: writes this layer's three summaries into ``store`` and keeps nothing else."""

    def hook(resid: Float[Tensor, "batch pos d_model"], hook) -> None:
        r = resid.float()
        for variant in ("response_avg", "prompt_avg"):
            w = masks[variant]  # [batch, pos, 1]
            store[variant][:, layer_slot] = (r * w).sum(1) / w.sum(1).clamp(min=1.0)
        store["last_prompt_token"][:, layer_slot] = r[masks["rows"], masks["last"]]

    return hook


@torch.inference_mode()
def summarize_batch(
    model: HookedTransformer,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    layers: Sequence[int],
    *,
    backend: str = "auto",
) -> ActivationSet:
    """Summaries for one batch of tokenised (prompt, response) pairs (``backend``: "tl", "hf"
    or "auto", as in :func:`collect_activations`)."""
    batch = batch_from_ids(prompt_ids, response_ids, pad_id(model.tokenizer), model.cfg.device)
    return summarize_chat_batch(model, batch, layers, backend=backend)


@torch.inference_mode()
def summarize_chat_batch(
    model: HookedTransformer, batch: ChatBatch, layers: Sequence[int], *, backend: str = "auto"
) -> ActivationSet:
    """Summaries for one :class:`~personalens.model.chat.ChatBatch` (left or right padded; each
    row's prompt tokens before its response tokens, as :func:`check_token_batch` ensures)."""
    backend = resolve_backend(model, backend)
    device = model.cfg.device
    batch = batch.to(device)
    n = batch.tokens.shape[0]
    rows = torch.arange(n, device=device)
    first = torch.zeros_like(batch.attention_mask)
    first[rows, batch.attention_mask.long().argmax(dim=1)] = True  # each row's first real token
    masks = {
        "response_avg": batch.response_mask.unsqueeze(-1).float(),
        "prompt_avg": (batch.prompt_mask & ~first).unsqueeze(-1).float(),
        "rows": rows,
        "last": batch.last_prompt_index,
    }
    d = model.cfg.d_model
    store = {v: torch.zeros((n, len(layers), d), device=device) for v in VARIANTS}
    hooks = [(L, _reduce_hook(i, store, masks)) for i, L in enumerate(layers)]
    if backend == "hf":
        run_with_layer_hooks(model, batch.tokens, batch.attention_mask, hooks)
    else:
        with model.hooks(fwd_hooks=[(resid_hook(model, L), fn) for L, fn in hooks]):
            model(
                batch.tokens,
                attention_mask=batch.attention_mask.long(),
                stop_at_layer=max(layers) + 1,
            )
    return ActivationSet(*(store[v].cpu() for v in VARIANTS), layers=tuple(layers))


def check_token_batch(
    tokens: Tensor | ChatBatch,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
) -> ChatBatch:
    """Token ids ``[batch, pos]`` with an ``attention_mask`` (1/True = real token; default: all
    real) and a ``response_mask`` (True = response token), checked, as a
    :class:`~personalens.model.chat.ChatBatch` (prompt = real and not response). A ``ChatBatch``
    (e.g. from :func:`~personalens.model.chat.tokenize_pairs`) is taken as it is, without masks.

    Each row needs a response token and, before its first response token, a prompt token (the
    last of them is ``last_prompt_token``); padding may be on either side.
    """
    if isinstance(tokens, ChatBatch):
        if attention_mask is not None or response_mask is not None:
            raise PersonaLensError("a ChatBatch carries its own masks: pass it without masks")
        batch = tokens
    else:
        if not isinstance(tokens, Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise PersonaLensError(
                "tokens must be integer token ids [batch, pos] (or a ChatBatch), got "
                f"{type(tokens).__name__} {tuple(getattr(tokens, 'shape', ()))}"
            )
        if response_mask is None:
            raise PersonaLensError(
                "tokens= needs response_mask= (a boolean [batch, pos] tensor, True on response "
                "tokens): the summaries average the response and the prompt separately"
            )
        attn = (
            torch.ones_like(tokens, dtype=torch.bool) if attention_mask is None else attention_mask
        )
        for name, m in (("attention_mask", attn), ("response_mask", response_mask)):
            if not isinstance(m, Tensor) or m.shape != tokens.shape:
                raise PersonaLensError(
                    f"{name} must be a [batch, pos] tensor of the tokens' shape "
                    f"{tuple(tokens.shape)}, got {tuple(getattr(m, 'shape', ()))}"
                )
        attn, resp = attn.bool(), response_mask.bool() & attn.bool()
        batch = ChatBatch(tokens.long(), attn, attn & ~resp, resp)
    pos = torch.arange(batch.tokens.shape[1], device=batch.tokens.device)
    first_resp = torch.where(batch.response_mask, pos, batch.tokens.shape[1]).amin(dim=1)
    bad = torch.nonzero(
        (batch.response_mask.sum(1) == 0)
        | (batch.last_prompt_index < 0)
        | (batch.last_prompt_index > first_resp)
    ).flatten()
    if len(bad):
        raise PersonaLensError(
            f"{len(bad)} row(s) (first: {int(bad[0])}) lack a response token, or a prompt token "
            "before the response, or have prompt tokens after it: each row must be real prompt "
            "tokens, then real response tokens (padding on either side)"
        )
    return batch


def collect_activations(
    model: HookedTransformer,
    prompts: Sequence[str | Sequence[Message]] | None = None,
    responses: Sequence[str | Sequence[int]] | None = None,
    *,
    tokens: Tensor | ChatBatch | None = None,
    attention_mask: Tensor | None = None,
    response_mask: Tensor | None = None,
    system: str | None = None,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    progress: bool | None = None,
    backend: str = "auto",
) -> ActivationSet:
    """Residual summaries at every layer (or ``layers``) for each (prompt, response) pair.

    Either ``prompts`` and ``responses`` (chat-formatted with the model's tokenizer):
    ``responses`` may be text or token ids (ids are used verbatim, so generated tokens are
    not re-tokenised). Or, for a model without a tokenizer or a batch you built yourself,
    ``tokens`` ``[batch, pos]`` with ``attention_mask`` (default: no padding) and
    ``response_mask`` (a ``ChatBatch`` needs neither): see :func:`check_token_batch`.

    ``backend="hf"`` runs the forwards on a Hugging Face model sharing the weights (see
    :mod:`personalens.engines.hf`); ``"auto"`` does so when that is exact for this model and its
    hooks, else uses TransformerLens. Returns an :class:`ActivationSet` in input order.
    """
    backend = resolve_backend(model, backend)  # once, not per batch
    n_layers = model.cfg.n_layers
    layers = (
        tuple(range(n_layers))
        if layers is None
        else tuple(check_layer(L, n_layers) for L in layers)
    )
    if tokens is not None:
        if prompts is not None or responses is not None:
            raise PersonaLensError("give prompts and responses, or tokens=, not both")
        batch = check_token_batch(tokens, attention_mask, response_mask)
        n = batch.tokens.shape[0]
        chunks = [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]

        def run(chunk: list[int]) -> ActivationSet:
            idx = torch.tensor(chunk, device=batch.tokens.device)
            part = ChatBatch(*(getattr(batch, f)[idx] for f in BATCH_FIELDS))
            return summarize_chat_batch(model, part, layers, backend=backend)

        return _collect(chunks, run, progress)
    if prompts is None or responses is None:
        raise PersonaLensError("give prompts and responses (or tokens= with masks)")
    if model.tokenizer is None:
        raise PersonaLensError(
            "this model has no tokenizer: pass tokens= with attention_mask= and "
            "response_mask= ([batch, pos] tensors), or load the model with its tokenizer"
        )
    return _collect_text(model, prompts, responses, system, layers, batch_size, progress, backend)


def _collect_text(
    model: HookedTransformer,
    prompts: Sequence[str | Sequence[Message]],
    responses: Sequence[str | Sequence[int]],
    system: str | None,
    layers: tuple[int, ...],
    batch_size: int,
    progress: bool | None,
    backend: str,
) -> ActivationSet:
    """:func:`collect_activations` of chat-formatted (prompt, response) pairs."""
    if len(prompts) != len(responses):
        raise PersonaLensError(
            f"{len(prompts)} prompts but {len(responses)} responses: pass one response per prompt"
        )
    if not prompts:
        raise PersonaLensError("no (prompt, response) pairs given: nothing to collect")
    tok = model.tokenizer
    p_ids = [encode_chat(tok, as_conversation(p, system)) for p in prompts]
    r_ids = [encode_response(tok, r) for r in responses]
    empty = [i for i, r in enumerate(r_ids) if not r]
    if empty:
        raise PersonaLensError(
            f"{len(empty)} empty response(s) (first at index {empty[0]}): a response average needs "
            "at least one token; drop empty responses before collecting activations"
        )
    order = sorted(range(len(p_ids)), key=lambda i: -(len(p_ids[i]) + len(r_ids[i])))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def run(chunk: list[int]) -> ActivationSet:
        return summarize_batch(
            model, [p_ids[i] for i in chunk], [r_ids[i] for i in chunk], layers, backend=backend
        )

    return _collect(chunks, run, progress)


def _collect(
    chunks: list[list[int]], run: Callable[[list[int]], ActivationSet], progress: bool | None
) -> ActivationSet:
    """``run`` over ``chunks`` of sample indices, merged back into index order."""
    show = progress if progress is not None else len(chunks) > 1
    parts, positions = [], []
    total = sum(len(c) for c in chunks)
    with tqdm(total=total, desc="activations", unit="sample", disable=not show) as bar:
        for chunk in chunks:
            parts.append(run(chunk))
            positions.extend(chunk)
            bar.update(len(chunk))
    merged = ActivationSet.concat(parts)
    inverse = torch.empty(len(positions), dtype=torch.long)
    inverse[torch.tensor(positions)] = torch.arange(len(positions))
    return merged.select(inverse)

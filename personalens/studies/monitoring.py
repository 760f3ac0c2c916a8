"""Monitoring by projection: where a prompt puts the model before it answers, token by token.

Two measurements, both scalar projections onto the unit persona vector ``v̂_L`` at personalens
layer ``L`` (``blocks.L.hook_resid_post``):

* :func:`last_prompt_projection` -- ``<h_L(last prompt token), v̂_L>`` for each prompt, at every
  layer (or the layers asked for). The last prompt token is the one that predicts the first
  reply token (the ``\\n`` after ``<|im_start|>assistant`` in ChatML), so its projection is read
  *before any token is generated*: the Persona Vectors paper's monitoring signal.
* :func:`token_trace` -- the projection of every token of a conversation (prompt and, when
  given or generated, the assistant's reply), with each token tagged by the part of the
  conversation it belongs to. A :class:`TokenTrace` renders in Jupyter as the conversation's
  tokens coloured by projection (red: further along the trait than the trace's median, blue:
  less); :func:`personalens.plot.monitoring.plot_token_trace` draws it as a Plotly figure.

Both read the model's ordinary forward pass, so they measure whatever steering is active
(``with steer(...): token_trace(...)``). The experiment that relates last-prompt projections to
judged behaviour lives in :mod:`personalens.studies.monitoring_experiment`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import resid_hook, select_layers
from personalens.errors import PersonaLensError
from personalens.model.activations import summarize_batch
from personalens.model.chat import (
    Message,
    as_conversation,
    encode_chat,
    encode_response,
    format_chat,
)
from personalens.model.generation import generate as _generate
from personalens.results import Result
from personalens.studies.layer_selection import vector_layer

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["PromptProjections", "TokenTrace", "last_prompt_projection", "token_trace"]

ProjectionTable = Float[Tensor, "n_prompts n_selected_layers"]


@dataclass(frozen=True)
class PromptProjections(Result):
    """Last-prompt-token projections: ``values[i, j]`` = prompt ``i`` at layer ``layers[j]``."""

    prompts: list[list[Message]]
    layers: tuple[int, ...]
    values: ProjectionTable
    n_prompt_tokens: list[int]
    trait: str

    def __len__(self) -> int:
        return len(self.prompts)

    def at(self, layer: int) -> Float[Tensor, " n_prompts"]:
        """The projections of every prompt at one layer."""
        if layer not in self.layers:
            raise PersonaLensError(
                f"layer {layer} was not measured; these projections cover layers {list(self.layers)}"
            )
        return self.values[:, self.layers.index(layer)]

    def frame_records(self) -> list[dict[str, Any]]:
        """One row per prompt: its last user message, token count and one column per layer."""
        rows = []
        for i, conv in enumerate(self.prompts):
            user = next((m["content"] for m in reversed(conv) if m["role"] == "user"), "")
            row: dict[str, Any] = {"prompt": user, "n_prompt_tokens": self.n_prompt_tokens[i]}
            row.update({f"layer_{L}": float(v) for L, v in zip(self.layers, self.values[i])})
            rows.append(row)
        return rows


@torch.inference_mode()
def last_prompt_projection(
    model: HookedTransformer,
    vector: PersonaVector,
    prompts: Sequence[str | Sequence[Message]],
    *,
    layers: int | Sequence[int] | str | None = None,
    system: str | None = None,
    batch_size: int = 8,
    max_batch_tokens: int = 16384,
) -> PromptProjections:
    """Projection of each prompt's last token onto the unit vector, before any generation.

    Args:
        prompts: user strings (with ``system`` prepended when given) or full conversations,
            e.g. many-shot histories; each is rendered with the chat template and the
            assistant's generation prompt, exactly as :func:`personalens.generate` would.
        layers: an int, a list, ``"all"`` or ``None`` (every layer; one forward either way).
        batch_size, max_batch_tokens: batches hold at most ``batch_size`` prompts and about
            ``max_batch_tokens`` padded tokens, so long many-shot prompts run a few at a time.

    Returns a :class:`PromptProjections` in input order.
    """
    vector.check_compatible(model)
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise PersonaLensError("no prompts given: nothing to project")
    if batch_size < 1 or max_batch_tokens < 1:
        raise PersonaLensError("batch_size and max_batch_tokens must be >= 1")
    layer_ids = select_layers(layers, model.cfg.n_layers)
    tok = model.tokenizer
    conversations = [as_conversation(p, system) for p in prompts]
    ids = [encode_chat(tok, c) for c in conversations]
    units = torch.stack([vector.unit(L) for L in layer_ids])  # [n_sel, d_model]
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    out = torch.empty((len(ids), len(layer_ids)), dtype=torch.float32)
    i = 0
    while i < len(order):
        width = len(ids[order[i]])  # longest first: the first row sets the padded width
        size = max(1, min(batch_size, max_batch_tokens // max(width, 1)))
        chunk = order[i : i + size]
        acts = summarize_batch(model, [ids[j] for j in chunk], [[] for _ in chunk], layer_ids)
        last = acts.variant("last_prompt_token")  # [n, n_sel, d_model]
        out[torch.tensor(chunk)] = torch.einsum("nld,ld->nl", last.float(), units)
        i += size
    return PromptProjections(
        prompts=conversations,
        layers=layer_ids,
        values=out,
        n_prompt_tokens=[len(x) for x in ids],
        trait=vector.trait,
    )


# ----------------------------------------------------------------------------- token traces


@dataclass(frozen=True)
class TokenTrace(Result):
    """Projection of every token of one conversation at one layer.

    ``segments[t]`` says where token ``t`` comes from: ``"system"``, ``"user"`` or
    ``"assistant"`` (the content of a prompt message), ``"template"`` (chat-template scaffolding
    such as ``<|im_start|>user``), or ``"response"`` (the traced reply). ``n_prompt_tokens`` is
    the length of the prompt; the reply follows it.
    """

    tokens: list[str]
    token_ids: list[int]
    segments: list[str]
    projections: Float[Tensor, " pos"]
    layer: int
    trait: str
    n_prompt_tokens: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def response(self) -> Float[Tensor, " n_response"]:
        return self.projections[self.n_prompt_tokens :]

    @property
    def last_prompt(self) -> float:
        """The projection of the last prompt token (the monitoring signal)."""
        return float(self.projections[self.n_prompt_tokens - 1])

    def response_mean(self) -> float:
        """Mean projection over the reply tokens (the response average); NaN without a reply."""
        r = self.response
        return float(r.mean()) if len(r) else math.nan

    def frame_records(self) -> list[dict[str, Any]]:
        """One row per token: ``position, token, token_id, segment, projection``."""
        columns = (self.tokens, self.token_ids, self.segments, self.projections.tolist())
        return [
            {"position": t, "token": tok, "token_id": i, "segment": seg, "projection": p}
            for t, (tok, i, seg, p) in enumerate(zip(*columns))
        ]

    def color_scale(self) -> tuple[float, float]:
        """(center, half-width) of the colour scale: median and max deviation over tokens 1:.

        Token 0 is left out: the first position of a transformer carries a huge, content-free
        residual norm (the attention sink) that would wash out every other colour.
        """
        body = self.projections[1:] if len(self) > 1 else self.projections
        center = float(body.median())
        half = float((body - center).abs().max()) if len(body) else 1.0
        return center, half if half > 0 else 1.0

    def to_html(self, *, center: float | None = None, half_width: float | None = None) -> str:
        """The tokens as HTML spans coloured by projection (hover for the value)."""
        c0, h0 = self.color_scale()
        center = c0 if center is None else center
        half = h0 if half_width is None else half_width
        spans = []
        for t, (tok, seg, p) in enumerate(zip(self.tokens, self.segments, self.projections)):
            x = max(-1.0, min(1.0, (float(p) - center) / half))
            rgb = (220, 50, 47) if x > 0 else (38, 110, 200)
            style = f"background-color: rgba({rgb[0]},{rgb[1]},{rgb[2]},{abs(x):.2f})"
            if t == self.n_prompt_tokens:
                spans.append('<span style="border-left: 2px solid #444; margin-left: 2px"></span>')
            text = html.escape(tok).replace("\n", "↵<br>")
            title = html.escape(f"#{t} {seg}: {float(p):.2f}")
            spans.append(f'<span style="{style}" title="{title}">{text}</span>')
        head = html.escape(
            f"{self.trait} projection at layer {self.layer}: red above {center:.1f}, blue below "
            f"(full colour at ±{half:.1f}); last prompt token {self.last_prompt:.2f}"
            + (f", reply mean {self.response_mean():.2f}" if len(self.response) else "")
        )
        return (
            '<div style="font-family: monospace; white-space: pre-wrap; line-height: 1.6">'
            f'<div style="font-family: sans-serif; color: #555">{head}</div>'
            + "".join(spans)
            + "</div>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()


def _segments(tokenizer: Any, messages: list[Message], ids: list[int]) -> list[str]:
    """Which message (by role) each prompt token belongs to; scaffolding is "template"."""
    text = format_chat(tokenizer, messages)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return ["prompt"] * len(ids)
    if list(enc["input_ids"]) != list(ids):
        return ["prompt"] * len(ids)
    spans, cursor = [], 0
    for m in messages:
        start = text.find(m["content"], cursor) if m["content"] else -1
        if start < 0:
            continue
        spans.append((start, start + len(m["content"]), m["role"]))
        cursor = start + len(m["content"])
    out = []
    for s, e in enc["offset_mapping"]:
        role = next((r for a, b, r in spans if a <= s < b and e > s), "template")
        out.append(role)
    return out


@torch.inference_mode()
def token_trace(
    model: HookedTransformer,
    vector: PersonaVector,
    conversation: str | Sequence[Message],
    *,
    response: str | Sequence[int] | None = None,
    generate: int | None = None,
    layer: int | None = None,
    system: str | None = None,
) -> TokenTrace:
    """Per-token projection onto the unit vector at ``layer`` over a whole conversation.

    Args:
        conversation: a user string or a message list. If it ends with an assistant message and
            no ``response`` is given, that message is traced as the reply.
        response: the reply to trace (text, or token ids used verbatim).
        generate: instead of a given reply, generate this many tokens greedily from the model
            (under any steering that is active) and trace them.
        layer: personalens layer; default the vector's ``best_layer``.
    """
    vector.check_compatible(model)
    L = vector_layer(vector, model.cfg.n_layers, layer)
    messages = as_conversation(conversation, system)
    if response is not None and generate is not None:
        raise PersonaLensError("give either response= or generate=, not both")
    if response is None and generate is None and messages[-1]["role"] == "assistant":
        response = messages[-1]["content"]
        messages = messages[:-1]
    if messages[-1]["role"] == "assistant":
        raise PersonaLensError(
            "the prompt ends with an assistant message and a reply was also given: pass the "
            "conversation up to the last user message"
        )
    tok = model.tokenizer
    prompt_ids = encode_chat(tok, messages)
    if generate is not None:
        res = _generate(model, [messages], max_new_tokens=int(generate), progress=False)
        response_ids = res.response_tokens[0]
    else:
        response_ids = encode_response(tok, response) if response is not None else []
    ids = prompt_ids + list(response_ids)
    if not ids:
        raise PersonaLensError("the conversation tokenised to nothing")
    store: dict[str, Tensor] = {}

    def keep(resid: Float[Tensor, "batch pos d_model"], hook) -> None:
        store["resid"] = resid[0].float()

    tokens = torch.tensor([ids], dtype=torch.long, device=model.cfg.device)
    with model.hooks(fwd_hooks=[(resid_hook(model, L), keep)]):
        model(tokens, stop_at_layer=L + 1)
    proj = (store["resid"].cpu() @ vector.unit(L)).float()
    segments = _segments(tok, messages, prompt_ids) + ["response"] * len(response_ids)
    return TokenTrace(
        tokens=[tok.decode([i]) for i in ids],
        token_ids=[int(i) for i in ids],
        segments=segments,
        projections=proj,
        layer=L,
        trait=vector.trait,
        n_prompt_tokens=len(prompt_ids),
    )

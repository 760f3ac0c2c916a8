"""Top-activating contexts of SAE features over a local corpus (offline feature interpretation).

One batched forward up to the SAE's layer per chunk of text; features are encoded on the fly and
only the top ``n`` activations per feature are kept, so memory stays bounded. This module never
imports sae_lens itself (SAEs come from :func:`personalens.sae.load.load_sae`).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from personalens.conventions import hook_name, resid_input_hook
from personalens.errors import PersonaLensError
from personalens.model.chat import batch_from_ids, pad_id
from personalens.results import Result
from personalens.sae.corpus import TokenSequence, corpus_sequences
from personalens.sae.decompose import Decomposition
from personalens.sae.layer_sae import LayerSAE, _one_sae

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# ----------------------------------------------------------------------------- contexts


@dataclass(frozen=True, eq=False)
class FeatureContexts(Result):
    """The top-activating tokens of some features over a corpus, with their context.

    ``examples`` holds one dict per (feature, rank): ``activation``, the ``token``,
    ``left``/``right`` context text, ``source`` (which text, with ``@start`` for a piece of a
    long text, or which run sample) and ``position`` (the token's index in the tokenised text,
    or in the prompt + reply sequence of a run sample),
    plus the window's ``tokens`` and their ``acts`` (this feature's activation on each, NaN
    where not encoded) for highlighting. ``frequency[f]`` is the fraction of scored tokens on
    which feature ``f`` is active (> 0). Only positive activations are listed, so a feature
    that fires on fewer than ``n`` tokens has fewer rows.
    """

    layer: int
    features: tuple[int, ...]
    examples: tuple[dict[str, Any], ...]
    frequency: dict[int, float]
    n_tokens: int
    n_sequences: int
    window: tuple[int, int]
    source: str = ""

    def to_frame(self) -> pd.DataFrame:
        """feature, rank, activation, token, left, right, source, position, frequency."""
        cols = ["feature", "rank", "activation", "token", "left", "right", "source", "position"]
        df = pd.DataFrame.from_records(
            [{c: e[c] for c in cols} for e in self.examples], columns=cols
        )
        df["frequency"] = [self.frequency[f] for f in df["feature"]]
        return df

    def to_html(self, *, max_examples: int | None = None) -> str:
        """Each feature's examples as token strips, coloured by that feature's activation
        (relative to its top activation; hover a token for its value). HTML-escaped."""
        parts = [
            '<div style="font-family: sans-serif">',
            f'<div style="color:#555">{html.escape(_context_heading(self))}</div>',
        ]
        for f in self.features:
            ex = [e for e in self.examples if e["feature"] == f]
            if max_examples is not None:
                ex = ex[:max_examples]
            top = max((e["activation"] for e in ex), default=0.0)
            parts.append(
                f'<div style="margin-top:0.8em"><b>feature {f}</b> '
                f'<span style="color:#777">max {top:.3g}, active on '
                f"{100 * self.frequency.get(f, 0.0):.2f}% of tokens</span></div>"
            )
            if not ex:
                parts.append('<div style="color:#a00">never active on this corpus</div>')
                continue
            parts.append('<table style="border-collapse:collapse; font-size:90%">')
            for e in ex:
                spans = []
                for j, (tok, a) in enumerate(zip(e["tokens"], e["acts"])):
                    alpha = 0.0 if not (a == a and top > 0) else max(0.0, min(1.0, a / top))
                    style = f"background-color: rgba(220,50,47,{alpha:.2f})"
                    if j == e["center"]:
                        style += "; outline: 1px solid #000; font-weight: bold"
                    text = html.escape(tok).replace("\n", "↵")
                    value = "not encoded" if a != a else f"{a:.3g}"
                    title = html.escape(f"{tok!r}: {value}")
                    spans.append(f'<span style="{style}" title="{title}">{text}</span>')
                parts.append(
                    "<tr>"
                    f'<td style="padding:2px 8px; text-align:right; color:#555">{e["activation"]:.3g}</td>'
                    '<td style="padding:2px 8px; font-family:monospace; white-space:pre">'
                    + "".join(spans)
                    + "</td>"
                    f'<td style="padding:2px 8px; color:#999">{html.escape(str(e["source"]))}</td>'
                    "</tr>"
                )
            parts.append("</table>")
        parts.append("</div>")
        return "\n".join(parts)

    def _repr_html_(self) -> str:
        return self.to_html()


def _context_heading(ctx: FeatureContexts) -> str:
    return (
        f"Top-activating tokens at layer {ctx.layer} ({hook_name(ctx.layer)}) over "
        f"{ctx.n_sequences} sequences / {ctx.n_tokens} scored tokens"
        + (f" of {ctx.source}" if ctx.source else "")
        + "; boxed: the token itself, red: the feature's activation."
    )


def feature_contexts(
    model: HookedTransformer,
    sae: Any,
    layer: int | None,
    features: Sequence[int] | Tensor | Decomposition,
    corpus: Any,
    *,
    n: int = 10,
    window: int | tuple[int, int] = (12, 4),
    batch_size: int = 16,
    max_length: int = 256,
    progress: bool = True,
) -> FeatureContexts:
    """The ``n`` tokens of ``corpus`` on which each feature is most active, with context.

    Args:
        sae: a :class:`LayerSAE`, a sae-lens SAE, or ``{layer: sae}`` (then ``layer`` picks).
        layer: the SAE's layer (checked), or None to use it.
        features: feature ids, or a :class:`Decomposition` (its features at this layer).
        corpus: a list of strings (texts), a text file, an extraction run directory (its
            responses: only reply tokens are candidates, the prompt is context), an
            ExtractionResult, or a list mixing texts (``str``) and files/run directories
            (``pathlib.Path``). Texts are cut into ``max_length``-token pieces (at most the
            model's context) that overlap by one token; the first token of every sequence is
            never a candidate (an attention sink with a huge residual norm).
        window: context tokens shown ``(left, right)`` of the token (an int: left only, 4 right).

    One batched forward per ``batch_size`` sequences up to ``layer`` (``stop_at_layer``); the
    residuals are encoded on the fly and only the running top ``n`` per feature are kept, so
    memory does not grow with the corpus.
    """
    s = _one_sae(sae, layer, model)
    layer = s.layer
    feats = _check_features(features, layer, s)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PersonaLensError(f"n must be a positive int, got {n!r}")
    left, right = (window, 4) if isinstance(window, int) else (int(window[0]), int(window[1]))
    if left < 0 or right < 0:
        raise PersonaLensError(f"window sizes must be >= 0, got {(left, right)}")
    seqs, where = corpus_sequences(model, corpus, max_length)
    top = _top_activations(model, s, feats, seqs, n, left, right, batch_size, progress)
    total = max(top.n_scored, 1)
    return FeatureContexts(
        layer=layer,
        features=tuple(feats),
        examples=tuple(_examples(model.tokenizer, feats, top, seqs, left)),
        frequency={f: float(top.n_active[j]) / total for j, f in enumerate(feats)},
        n_tokens=top.n_scored,
        n_sequences=len(seqs),
        window=(left, right),
        source=where,
    )


def _check_features(
    features: Sequence[int] | Tensor | Decomposition, layer: int, sae: LayerSAE
) -> list[int]:
    """The feature ids (a Decomposition's at ``layer``): distinct, in range, not empty."""
    if isinstance(features, Decomposition):
        feats = features.features(layer)
    else:
        feats = [int(f) for f in features]
    if not feats:
        raise PersonaLensError("no features given")
    if len(set(feats)) != len(feats):
        raise PersonaLensError(f"features {feats} name a feature twice")
    bad = [f for f in feats if not 0 <= f < sae.d_sae]
    if bad:
        raise PersonaLensError(
            f"feature id(s) {bad} out of range: the SAE has {sae.d_sae} features"
        )
    return feats


def _examples(
    tok: Any, feats: list[int], top: _TopTokens, seqs: list[TokenSequence], left: int
) -> list[dict[str, Any]]:
    """One record per (feature, rank) with a positive activation, best first (see
    :class:`FeatureContexts`); the window keeps only real (unpadded) tokens."""
    examples = []
    for j, f in enumerate(feats):
        rank = 0
        for r in range(top.values.shape[0]):
            a = float(top.values[r, j])
            if not a > 0:
                continue
            rank += 1
            ids = top.window_ids[r, j].tolist()
            real = top.window_real[r, j].tolist()
            acts = top.window_acts[r, j].tolist()
            keep = [i for i in range(len(ids)) if real[i]]
            center = keep.index(left)
            ids_k = [ids[i] for i in keep]
            examples.append(
                {
                    "feature": f,
                    "rank": rank,
                    "activation": a,
                    "token": tok.decode([ids[left]]),
                    "left": tok.decode(ids_k[:center]),
                    "right": tok.decode(ids_k[center + 1 :]),
                    "source": seqs[int(top.sequence[r, j])].source,
                    "position": int(top.position[r, j]),
                    "tokens": [tok.decode([i]) for i in ids_k],
                    "acts": [acts[i] for i in keep],
                    "center": center,
                }
            )
    return examples


# ----------------------------------------------------------------------------- the running top n


@dataclass
class _TopTokens:
    """The running top ``n`` tokens per feature: ``[n, F]`` activation, sequence and position,
    ``[n, F, W]`` window token ids, activations and real-token flags; and the counts of scored
    tokens and of tokens each feature is active on."""

    values: Tensor
    sequence: Tensor
    position: Tensor
    window_ids: Tensor
    window_acts: Tensor
    window_real: Tensor
    n_active: Tensor
    n_scored: int = 0

    @classmethod
    def empty(cls, n_features: int, width: int) -> _TopTokens:
        F, W = n_features, width
        return cls(
            values=torch.full((0, F), -math.inf),
            sequence=torch.zeros((0, F), dtype=torch.long),
            position=torch.zeros((0, F), dtype=torch.long),
            window_ids=torch.zeros((0, F, W), dtype=torch.long),
            window_acts=torch.zeros((0, F, W)),
            window_real=torch.zeros((0, F, W), dtype=torch.bool),
            n_active=torch.zeros(F, dtype=torch.long),
        )

    def merge(self, other: _TopTokens, n: int) -> None:
        """Add ``other``'s candidates and counts; keep the top ``n`` per feature."""
        W = self.window_ids.shape[-1]
        values = torch.cat([self.values, other.values])
        keep = min(n, values.shape[0])
        self.values, sel = values.topk(keep, dim=0)
        self.sequence = torch.cat([self.sequence, other.sequence]).gather(0, sel)
        self.position = torch.cat([self.position, other.position]).gather(0, sel)
        sel_w = sel[..., None].expand(-1, -1, W)
        self.window_ids = torch.cat([self.window_ids, other.window_ids]).gather(0, sel_w)
        self.window_acts = torch.cat([self.window_acts, other.window_acts]).gather(0, sel_w)
        self.window_real = torch.cat([self.window_real, other.window_real]).gather(0, sel_w)
        self.n_active += other.n_active
        self.n_scored += other.n_scored


@torch.inference_mode()
def _top_activations(
    model: Any,
    sae: LayerSAE,
    feats: list[int],
    seqs: list[TokenSequence],
    n: int,
    left: int,
    right: int,
    batch_size: int,
    progress: bool,
) -> _TopTokens:
    """The top ``n`` scored tokens per feature over ``seqs``, one batched forward per chunk of
    ``batch_size`` sequences (longest first)."""
    top = _TopTokens.empty(len(feats), left + right + 1)
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    show = progress and len(chunks) > 1
    with tqdm(total=len(seqs), desc="feature contexts", unit="seq", disable=not show) as bar:
        for chunk in chunks:
            top.merge(_chunk_top(model, sae, feats, seqs, chunk, n, left, right), n)
            bar.update(len(chunk))
    return top


def _chunk_top(
    model: Any,
    sae: LayerSAE,
    feats: list[int],
    seqs: list[TokenSequence],
    chunk: list[int],
    n: int,
    left: int,
    right: int,
) -> _TopTokens:
    """One chunk's top ``n`` candidate tokens per feature, with their windows and counts."""
    F = len(feats)
    pad = pad_id(model.tokenizer)
    prompt = [seqs[i].ids[: seqs[i].score_from] for i in chunk]
    rest = [seqs[i].ids[seqs[i].score_from :] for i in chunk]
    batch = batch_from_ids(prompt, rest, pad, model.cfg.device)
    b, p = batch.tokens.shape
    real = batch.attention_mask.cpu()
    first = real.long().argmax(dim=1)
    encoded = real.clone()
    encoded[torch.arange(b), first] = False  # the first token: an attention sink
    acts = _encoded_activations(model, sae, feats, batch, encoded)
    scored = batch.response_mask.cpu() & encoded
    cand = torch.where(scored[..., None], acts.nan_to_num(nan=-math.inf), -math.inf)
    m = min(n, b * p)
    vals_top, idx = cand.reshape(b * p, F).topk(m, dim=0)  # [m, F]
    bi, pi = idx // p, idx % p
    wpos = pi[..., None] + torch.arange(-left, right + 1)  # [m, F, W]
    inside = (wpos >= 0) & (wpos < p)
    wpos_c = wpos.clamp(0, p - 1)
    bi_w = bi[..., None].expand_as(wpos_c)
    fi_w = torch.arange(F)[None, :, None].expand_as(wpos_c)
    tokens = batch.tokens.cpu()
    real_w = inside & real[bi_w, wpos_c]
    # position in the source text: minus the left padding, plus the piece's offset
    shift = torch.tensor([seqs[i].offset - (p - len(seqs[i].ids)) for i in chunk])
    return _TopTokens(
        values=vals_top,
        sequence=torch.tensor(chunk)[bi],
        position=pi + shift[bi],
        window_ids=torch.where(inside, tokens[bi_w, wpos_c], pad),
        window_acts=torch.where(real_w, acts[bi_w, wpos_c, fi_w], math.nan),
        window_real=real_w,
        n_active=(acts[scored] > 0).sum(0),
        n_scored=int(scored.sum()),
    )


def _encoded_activations(
    model: Any, sae: LayerSAE, feats: list[int], batch: Any, encoded: Tensor
) -> Tensor:
    """``[b, p, F]`` activations of ``feats`` at the ``encoded`` positions (NaN elsewhere): one
    forward up to the SAE's layer (read where :func:`~personalens.conventions.resid_input_hook` says), its residuals encoded
    in blocks of 2048."""
    b, p = batch.tokens.shape
    store: dict[str, Tensor] = {}

    def grab(resid: Tensor, hook: Any) -> None:
        store["resid"] = resid.detach()

    with model.hooks(fwd_hooks=[(resid_input_hook(model, sae.layer), grab)]):
        model(
            batch.tokens,
            attention_mask=batch.attention_mask.long(),
            stop_at_layer=sae.layer + 1,
        )
    feat_idx = torch.tensor(feats, device=sae.device)
    acts = torch.full((b, p, len(feats)), math.nan)
    rows = store["resid"][encoded.to(store["resid"].device)]
    vals = []
    for i in range(0, rows.shape[0], 2048):
        vals.append(sae.encode(rows[i : i + 2048]).index_select(-1, feat_idx).cpu())
    acts[encoded] = torch.cat(vals) if vals else torch.zeros((0, len(feats)))
    return acts

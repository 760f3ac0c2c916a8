"""Top-activating contexts of SAE features over a local corpus (offline feature interpretation).

One batched forward up to the SAE's layer per chunk of text; features are encoded on the fly and
only the top ``n`` activations per feature are kept, so memory stays bounded. This module never
imports sae_lens itself (SAEs come from :func:`personalens.sae.load.load_sae`).
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from personalens.conventions import hook_name
from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer


from personalens.sae.decompose import Decomposition
from personalens.sae.load import LayerSAE, _one_sae

# ----------------------------------------------------------------------------- contexts


@dataclass(frozen=True)
class _Sequence:
    ids: list[int]
    score_from: int  # positions >= this are candidates (earlier ones are context only)
    source: str
    offset: int = 0  # position of ids[0] in the text it was cut from


@dataclass(frozen=True, eq=False)
class FeatureContexts:
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
        import pandas as pd

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


def _corpus_sequences(
    model: HookedTransformer, corpus: Any, max_length: int
) -> tuple[list[_Sequence], str]:
    from personalens.extraction.pipeline import ExtractionResult

    tok = model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    max_length = min(max_length, int(model.cfg.n_ctx))
    if isinstance(corpus, ExtractionResult):
        return _record_sequences(tok, corpus.records, "ExtractionResult"), "an ExtractionResult"
    if isinstance(corpus, str | os.PathLike):
        path = Path(corpus)
        if not path.exists():
            raise PersonaLensError(
                f"corpus {str(corpus)[:80]!r} is not an existing file or directory; to pass "
                "texts, give a list of strings"
            )
        items: list[Any] = [path]
    elif isinstance(corpus, Sequence):
        items = list(corpus)
    else:
        raise PersonaLensError(
            "corpus must be a list of strings, a text file, an extraction run directory, an "
            f"ExtractionResult, or a list mixing texts and paths; got {type(corpus).__name__}"
        )
    if not items:
        raise PersonaLensError("the corpus is empty: give at least one text")
    seqs: list[_Sequence] = []
    described = []
    n_texts = 0
    for i, item in enumerate(items):
        if isinstance(item, os.PathLike):
            path = Path(item)
            if path.is_dir():
                seqs += _run_sequences(tok, path)
                described.append(f"run {path}")
            elif path.is_file():
                text = path.read_text(encoding="utf-8", errors="replace")
                seqs += _text_sequences(model, text, max_length, str(path.name))
                described.append(str(path))
            else:
                raise PersonaLensError(f"corpus entry {path} does not exist")
        elif isinstance(item, str):
            seqs += _text_sequences(model, item, max_length, f"text {i}")
            n_texts += 1
        else:
            raise PersonaLensError(
                f"corpus entry {i} is a {type(item).__name__}; use strings (texts) or paths"
            )
    if n_texts:
        described.append(f"{n_texts} texts")
    if not seqs:
        raise PersonaLensError("the corpus has no tokens to score")
    too_long = [q.source for q in seqs if len(q.ids) > model.cfg.n_ctx]
    if too_long:
        raise PersonaLensError(
            f"{len(too_long)} run sample(s) (first {too_long[0]!r}) are longer than the model's "
            f"context ({model.cfg.n_ctx} tokens)"
        )
    return seqs, ", ".join(described)


def _text_sequences(model: Any, text: str, max_length: int, source: str) -> list[_Sequence]:
    tok = model.tokenizer
    ids = list(tok.encode(text, add_special_tokens=False))
    if model.cfg.default_prepend_bos and tok.bos_token_id is not None:
        ids = [int(tok.bos_token_id)] + ids
    if len(ids) < 2:
        return []
    # chunks overlap by one token: a chunk's first position is never scored (attention sink),
    # and it is the previous chunk's last scored token, so no token is lost
    out, start, step = [], 0, max(2, max_length) - 1
    while start < len(ids) - 1:
        chunk = ids[start : start + step + 1]
        suffix = f" @{start}" if start or len(ids) > step + 1 else ""
        out.append(_Sequence(chunk, 1, source + suffix, offset=start))
        start += step
    return out


def _run_sequences(tok: Any, run: Path) -> list[_Sequence]:
    from personalens.runs.sharding import log_files, read_run_log

    path = run / "responses.jsonl"
    if not any(p.is_file() for p in log_files(path)):
        raise PersonaLensError(
            f"{run} is not an extraction run directory (no responses.jsonl): give the --out "
            "directory of `personalens extract`, a text file, or texts"
        )
    return _record_sequences(tok, read_run_log(path), str(run))


def _record_sequences(
    tok: Any, records: Sequence[Mapping[str, Any]], where: str
) -> list[_Sequence]:
    from personalens.model.chat import as_conversation, encode_chat

    seqs = []
    for r in records:
        if not all(k in r for k in ("question", "response_tokens")):
            raise PersonaLensError(f"{where}: records need 'question' and 'response_tokens'")
        if not r["response_tokens"]:
            continue
        p_ids = encode_chat(tok, as_conversation(r["question"], r.get("system")))
        seqs.append(
            _Sequence(
                p_ids + [int(t) for t in r["response_tokens"]], len(p_ids), str(r.get("key", ""))
            )
        )
    return seqs


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
    if isinstance(features, Decomposition):
        feats = features.features(layer)
    else:
        feats = [int(f) for f in features]
    if not feats:
        raise PersonaLensError("no features given")
    if len(set(feats)) != len(feats):
        raise PersonaLensError(f"features {feats} name a feature twice")
    bad = [f for f in feats if not 0 <= f < s.d_sae]
    if bad:
        raise PersonaLensError(f"feature id(s) {bad} out of range: the SAE has {s.d_sae} features")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise PersonaLensError(f"n must be a positive int, got {n!r}")
    left, right = (window, 4) if isinstance(window, int) else (int(window[0]), int(window[1]))
    if left < 0 or right < 0:
        raise PersonaLensError(f"window sizes must be >= 0, got {(left, right)}")
    seqs, where = _corpus_sequences(model, corpus, max_length)
    top = _top_activations(model, s, feats, seqs, n, left, right, batch_size, progress)
    best_val, best_seq, best_pos, win_ids, win_acts, win_real, n_active, n_scored = top
    tok = model.tokenizer
    examples = []
    for j, f in enumerate(feats):
        rank = 0
        for r in range(best_val.shape[0]):
            a = float(best_val[r, j])
            if not a > 0:
                continue
            rank += 1
            ids = win_ids[r, j].tolist()
            real = win_real[r, j].tolist()
            acts = win_acts[r, j].tolist()
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
                    "source": seqs[int(best_seq[r, j])].source,
                    "position": int(best_pos[r, j]),
                    "tokens": [tok.decode([i]) for i in ids_k],
                    "acts": [acts[i] for i in keep],
                    "center": center,
                }
            )
    total = max(n_scored, 1)
    return FeatureContexts(
        layer=layer,
        features=tuple(feats),
        examples=tuple(examples),
        frequency={f: float(n_active[j]) / total for j, f in enumerate(feats)},
        n_tokens=n_scored,
        n_sequences=len(seqs),
        window=(left, right),
        source=where,
    )


@torch.inference_mode()
def _top_activations(
    model: Any,
    sae: LayerSAE,
    feats: list[int],
    seqs: list[_Sequence],
    n: int,
    left: int,
    right: int,
    batch_size: int,
    progress: bool,
) -> tuple:
    from personalens.model.chat import batch_from_ids, pad_id

    device = model.cfg.device
    F, W = len(feats), left + right + 1
    feat_idx = torch.tensor(feats, device=sae.device)
    best_val = torch.full((0, F), -math.inf)
    best_seq = torch.zeros((0, F), dtype=torch.long)
    best_pos = torch.zeros((0, F), dtype=torch.long)
    win_ids = torch.zeros((0, F, W), dtype=torch.long)
    win_acts = torch.zeros((0, F, W))
    win_real = torch.zeros((0, F, W), dtype=torch.bool)
    n_active = torch.zeros(F, dtype=torch.long)
    n_scored = 0
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i].ids))
    chunks = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    bar = None
    if progress and len(chunks) > 1:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(seqs), desc="feature contexts", unit="seq")
    hook = hook_name(sae.layer)
    pad = pad_id(model.tokenizer)
    offsets = torch.arange(-left, right + 1)
    try:
        for chunk in chunks:
            prompt = [seqs[i].ids[: seqs[i].score_from] for i in chunk]
            rest = [seqs[i].ids[seqs[i].score_from :] for i in chunk]
            batch = batch_from_ids(prompt, rest, pad, device)
            b, p = batch.tokens.shape
            store: dict[str, Tensor] = {}

            def grab(resid: Tensor, hook: Any, store: dict = store) -> None:
                store["resid"] = resid.detach()

            with model.hooks(fwd_hooks=[(hook, grab)]):
                model(
                    batch.tokens,
                    attention_mask=batch.attention_mask.long(),
                    stop_at_layer=sae.layer + 1,
                )
            real = batch.attention_mask.cpu()
            first = real.long().argmax(dim=1)
            encoded = real.clone()
            encoded[torch.arange(b), first] = False  # the first token: an attention sink
            acts = torch.full((b, p, F), math.nan)
            rows = store["resid"][encoded.to(store["resid"].device)]
            vals = []
            for i in range(0, rows.shape[0], 2048):
                vals.append(sae.encode(rows[i : i + 2048]).index_select(-1, feat_idx).cpu())
            acts[encoded] = torch.cat(vals) if vals else torch.zeros((0, F))
            scored = batch.response_mask.cpu() & encoded
            n_scored += int(scored.sum())
            n_active += (acts[scored] > 0).sum(0)
            cand = torch.where(scored[..., None], acts.nan_to_num(nan=-math.inf), -math.inf)
            m = min(n, b * p)
            vals_top, idx = cand.reshape(b * p, F).topk(m, dim=0)  # [m, F]
            bi, pi = idx // p, idx % p
            wpos = pi[..., None] + offsets  # [m, F, W]
            inside = (wpos >= 0) & (wpos < p)
            wpos_c = wpos.clamp(0, p - 1)
            bi_w = bi[..., None].expand_as(wpos_c)
            fi_w = torch.arange(F)[None, :, None].expand_as(wpos_c)
            tokens = batch.tokens.cpu()
            ids_w = torch.where(inside, tokens[bi_w, wpos_c], pad)
            real_w = inside & real[bi_w, wpos_c]
            acts_w = torch.where(real_w, acts[bi_w, wpos_c, fi_w], math.nan)
            seq_global = torch.tensor(chunk)[bi]
            # merge with the running best and keep the top n per feature
            best_val = torch.cat([best_val, vals_top])
            best_seq = torch.cat([best_seq, seq_global])
            # position in the source text: minus the left padding, plus the piece's offset
            shift = torch.tensor([seqs[i].offset - (p - len(seqs[i].ids)) for i in chunk])
            best_pos = torch.cat([best_pos, pi + shift[bi]])
            win_ids = torch.cat([win_ids, ids_w])
            win_acts = torch.cat([win_acts, acts_w])
            win_real = torch.cat([win_real, real_w])
            keep = min(n, best_val.shape[0])
            best_val, sel = best_val.topk(keep, dim=0)
            best_seq = best_seq.gather(0, sel)
            best_pos = best_pos.gather(0, sel)
            sel_w = sel[..., None].expand(-1, -1, W)
            win_ids = win_ids.gather(0, sel_w)
            win_acts = win_acts.gather(0, sel_w)
            win_real = win_real.gather(0, sel_w)
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    return best_val, best_seq, best_pos, win_ids, win_acts, win_real, n_active, n_scored

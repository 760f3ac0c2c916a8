"""The corpus :func:`~personalens.sae.contexts.feature_contexts` scores: texts, text files and
extraction runs as token sequences.

Texts are cut into ``max_length``-token pieces that overlap by one token (a piece's first
position, an attention sink, is never scored); a run sample is its chat prompt (context only)
followed by its reply tokens (scored).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens.errors import PersonaLensError
from personalens.extraction.pipeline import ExtractionResult
from personalens.model.chat import as_conversation, encode_chat
from personalens.runs.sharding import log_files, read_run_log

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


@dataclass(frozen=True)
class TokenSequence:
    """A tokenised text or run sample whose positions from ``score_from`` on are scored."""

    ids: list[int]
    score_from: int  # positions >= this are candidates (earlier ones are context only)
    source: str
    offset: int = 0  # position of ids[0] in the text it was cut from


def corpus_sequences(
    model: HookedTransformer, corpus: Any, max_length: int
) -> tuple[list[TokenSequence], str]:
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
    seqs: list[TokenSequence] = []
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


def _text_sequences(model: Any, text: str, max_length: int, source: str) -> list[TokenSequence]:
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
        out.append(TokenSequence(chunk, 1, source + suffix, offset=start))
        start += step
    return out


def _run_sequences(tok: Any, run: Path) -> list[TokenSequence]:
    path = run / "responses.jsonl"
    if not any(p.is_file() for p in log_files(path)):
        raise PersonaLensError(
            f"{run} is not an extraction run directory (no responses.jsonl): give the --out "
            "directory of `personalens extract`, a text file, or texts"
        )
    return _record_sequences(tok, read_run_log(path), str(run))


def _record_sequences(
    tok: Any, records: Sequence[Mapping[str, Any]], where: str
) -> list[TokenSequence]:
    seqs = []
    for r in records:
        if not all(k in r for k in ("question", "response_tokens")):
            raise PersonaLensError(f"{where}: records need 'question' and 'response_tokens'")
        if not r["response_tokens"]:
            continue
        p_ids = encode_chat(tok, as_conversation(r["question"], r.get("system")))
        seqs.append(
            TokenSequence(
                p_ids + [int(t) for t in r["response_tokens"]], len(p_ids), str(r.get("key", ""))
            )
        )
    return seqs

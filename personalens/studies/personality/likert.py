"""Likert answers: reading a scale point from the model, for the ``"logprob"``, ``"generate"``
and ``"judge"`` methods of
:func:`personalens.studies.personality.questionnaire.score_questionnaire`.

* ``"logprob"`` (:func:`score_logprob`): the next-token distribution at the end of the item
  prompt, summed over each scale point's answer tokens (:func:`answer_token_ids`),
  renormalised over the points (:func:`answer_distribution`); the item's score is its
  expectation (:func:`expected_scores`).
* ``"generate"`` (:func:`parsed_records`): a greedy reply parsed by :func:`parse_answer`.
* ``"judge"`` (:func:`judged_records`): a greedy reply rated 0-100 by an LLM judge, mapped
  linearly onto the scale.

Each scorer returns one record per item with its ``raw_score`` (NaN when it could not be
scored, with the reason in ``status``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.model.chat import ChatBatch, tokenize_prompts
from personalens.model.generation import last_logits
from personalens.studies.personality.questionnaire_file import LikertScale, Questionnaire

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def answer_token_ids(tokenizer: Any, scale: LikertScale) -> list[list[int]]:
    """For each scale point, the token ids that start a reply with that answer.

    These are the single-token encodings of the answer with and without a leading space. A
    point with neither is an error: the logprob method reads exactly one next token.
    """
    out: list[list[int]] = []
    owner: dict[int, str] = {}
    for answer in scale.answers:
        ids: list[int] = []
        encodings = {}
        for variant in (answer, " " + answer):
            enc = list(tokenizer.encode(variant, add_special_tokens=False))
            encodings[variant] = enc
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(int(enc[0]))
        if not ids:
            raise PersonaLensError(
                f"scale answer {answer!r} is not a single token for this tokenizer "
                f"(encodings: {encodings}); the logprob method reads one next token, so use "
                "single-token answers (digits usually are) or method='generate'"
            )
        for i in ids:
            if i in owner:
                raise PersonaLensError(
                    f"scale answers {owner[i]!r} and {answer!r} share token {i}; give the scale "
                    "answers that tokenize differently"
                )
            owner[i] = answer
        out.append(ids)
    return out


def answer_distribution(
    logits: Float[Tensor, "batch vocab"], token_ids: Sequence[Sequence[int]]
) -> tuple[Float[Tensor, "batch n_points"], Float[Tensor, " batch"]]:
    """(probabilities of the scale points renormalised over them, the mass they had).

    A point's probability is the sum over its answer tokens. Rows whose mass underflows to 0
    get NaN probabilities.
    """
    logp = logits.double().log_softmax(dim=-1)
    per_point = torch.stack(
        [logp[:, list(ids)].logsumexp(dim=-1).exp() for ids in token_ids], dim=-1
    )
    mass = per_point.sum(dim=-1)
    probs = per_point / mass[:, None]
    probs = torch.where(mass[:, None] > 0, probs, torch.full_like(probs, math.nan))
    return probs, mass


def expected_scores(
    probs: Float[Tensor, "batch n_points"], values: Sequence[int]
) -> Float[Tensor, " batch"]:
    """Expected scale value of each row of a (renormalised) scale distribution."""
    return probs @ torch.tensor([float(v) for v in values], dtype=probs.dtype)


def _answer_regex(scale: LikertScale) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(a) for a in sorted(scale.answers, key=len, reverse=True))
    return re.compile(
        r"^\s*(?:[*_\"'(\[]\s*)*"  # markdown emphasis, quotes, an opening bracket
        r"(?:(?:answer|rating|score)\s*[:=]?\s*(?:[*_\"'(\[]\s*)*)?"  # "Answer: 4"
        rf"({alternatives})"
        r"(?!\w)(?![.,]\d)",  # not the start of a longer word/number ("10", "4th", "3.5")
        re.IGNORECASE,
    )


def parse_answer(text: str, scale: LikertScale) -> float:
    """The scale value a reply starts with, or NaN.

    Strict: the reply must begin (after whitespace, ``*``/``_``/quotes/an opening bracket, and
    optionally ``Answer:``/``Rating:``/``Score:``) with one of the scale's answers, not followed
    by more letters or digits. ``"4"``, ``"4."``, ``"**4** - agree"``, ``"Rating: 2"`` parse;
    ``"I would say 4"``, ``"10"``, ``"3.5"``, ``"four"`` (unless ``"four"`` is an answer) do not.
    """
    m = _answer_regex(scale).match(text)
    if m is None:
        return math.nan
    matched = m.group(1).lower()
    for value, answer in zip(scale.values, scale.answers):
        if answer.lower() == matched:
            return float(value)
    return math.nan  # pragma: no cover (the regex only matches answers)


# ----------------------------------------------------------------------------- scorers


def _next_token_logits(model: HookedTransformer, batch: ChatBatch) -> Float[Tensor, "batch vocab"]:
    """Logits of the token after each row's prompt (left padding: the last column)."""
    with torch.inference_mode():
        return last_logits(model, batch.tokens, batch.attention_mask, None).float()


def score_logprob(
    model: HookedTransformer,
    q: Questionnaire,
    prompts: list[str],
    system: str | None,
    batch_size: int,
    min_mass: float,
) -> list[dict[str, Any]]:
    """Records of the ``"logprob"`` method: expected score, scale mass, point probabilities."""
    tokenizer = model.tokenizer
    token_ids = answer_token_ids(tokenizer, q.scale)
    out: list[dict[str, Any]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = tokenize_prompts(tokenizer, chunk, system=system, device=model.cfg.device)
        if batch.tokens.shape[1] > model.cfg.n_ctx:
            raise PersonaLensError(
                f"an item prompt is {batch.tokens.shape[1]} tokens long, more than the model's "
                f"context of {model.cfg.n_ctx}; shorten the prompt_template or the system prompt"
            )
        logits = _next_token_logits(model, batch)
        probs, mass = answer_distribution(logits.cpu(), token_ids)
        expected = expected_scores(probs, q.scale.values)
        top = logits.argmax(dim=-1).tolist()
        for i in range(len(chunk)):
            m = float(mass[i])
            raw = float(expected[i])
            status = "ok"
            if m < min_mass or math.isnan(raw):
                raw, status = math.nan, "low_mass"
            rec: dict[str, Any] = {"raw_score": raw, "scale_mass": m, "status": status}
            rec.update({f"p_{v}": float(probs[i, k]) for k, v in enumerate(q.scale.values)})
            rec["top_token"] = tokenizer.decode([top[i]])
            out.append(rec)
    return out


def parsed_records(replies: Sequence[str], scale: LikertScale) -> list[dict[str, Any]]:
    """Records of the ``"generate"`` method: each reply parsed by :func:`parse_answer`."""
    scored = []
    for reply in replies:
        raw = parse_answer(reply, scale)
        status = "ok" if not math.isnan(raw) else "unparsed"
        scored.append({"raw_score": raw, "scale_mass": math.nan, "status": status})
        scored[-1]["response"] = reply
    return scored


def judged_records(q: Questionnaire, replies: Sequence[str], judge: Any) -> list[dict[str, Any]]:
    """Records of the ``"judge"`` method: ``judge.score_prompts`` rates each reply's agreement
    with its item 0-100, mapped linearly onto the scale (NaN stays NaN)."""
    judge_prompts = [
        q.judge_prompt.format(item=it.text, answer=reply) for it, reply in zip(q.items, replies)
    ]
    ratings = judge.score_prompts(judge_prompts)
    if len(ratings) != len(replies):
        raise PersonaLensError(
            f"the judge returned {len(ratings)} scores for {len(replies)} answers"
        )
    scored = []
    lo, hi = q.scale.min, q.scale.max
    for reply, rating in zip(replies, ratings):
        rating = float(rating)
        raw = lo + (hi - lo) * rating / 100.0 if not math.isnan(rating) else math.nan
        status = "ok" if not math.isnan(raw) else "judge_nan"
        scored.append(
            {
                "raw_score": raw,
                "scale_mass": math.nan,
                "status": status,
                "response": reply,
                "judge_score": rating,
            }
        )
    return scored


__all__ = [
    "answer_distribution",
    "answer_token_ids",
    "expected_scores",
    "judged_records",
    "parse_answer",
    "parsed_records",
    "score_logprob",
]

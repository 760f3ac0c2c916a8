"""Self-description likelihood: the ``method="likelihood"`` scorer of
:func:`personalens.studies.personality.questionnaire.score_questionnaire`.

Each item's statement is teacher-forced as the model's reply to one personality prompt (the
questionnaire's ``self_description_prompt``, chat template applied) and scored by its mean
log-probability per token, in nats/token (the end-of-turn token is not scored). A dimension's
score is the contrast ``mean(forward-keyed) - mean(reverse-keyed)`` of those item scores, so
every dimension needs items of both keyings (the contrast itself is computed by
:class:`~personalens.studies.personality.questionnaire_result.QuestionnaireResult`).

The prompt runs once as a prefill (batch 1) whose KV cache all statements share; each batch of
statements is then one continuation forward over that cache, as in
:func:`personalens.generate`. So under steering, ``positions="response"`` steers the positions
whose outputs predict statement tokens (the last prompt token and every statement token but
the last, which is not run), ``"prompt"`` only the prompt and ``"all"`` both; a boolean
``[batch, pos]`` positions mask is refused.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from transformer_lens import TransformerLensKeyValueCache
from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

from personalens.errors import PersonaLensError
from personalens.model.chat import as_conversation, encode_chat, encode_response, pad_id
from personalens.model.generation import last_logits
from personalens.steering.plan import SteeringPlan
from personalens.studies.personality.questionnaire_file import Questionnaire

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def is_mask_plan(steering: Any) -> bool:
    """Whether ``steering`` is a plan with a boolean ``[batch, pos]`` positions mask (refused)."""
    return isinstance(steering, SteeringPlan) and isinstance(steering.positions, Tensor)


def _expand_cache(cache: Any, n: int) -> Any:
    """A batch-``n`` copy of a batch-1 KV cache (views; later appends make new tensors)."""
    return TransformerLensKeyValueCache(
        entries=[
            TransformerLensKeyValueCacheEntry(
                past_keys=e.past_keys.expand(n, -1, -1, -1),
                past_values=e.past_values.expand(n, -1, -1, -1),
            )
            for e in cache.entries
        ],
        previous_attention_mask=cache.previous_attention_mask.expand(n, -1),
    )


@torch.inference_mode()
def _statement_logprobs(
    model: HookedTransformer,
    prompt_ids: Sequence[int],
    statement_ids: Sequence[Sequence[int]],
    batch_size: int,
) -> list[Tensor]:
    """Per-token log-probabilities of each statement as the reply to one prompt.

    A prefill over the prompt (batch 1, no padding) gives the first statement token's
    distribution and a KV cache; each batch of statements then runs as one continuation forward
    over that cache, right padded (padding comes after every real token, so nothing attends to
    it). The last statement token is not fed: its output would predict the end of the turn,
    which is not scored. Hooks see the prompt as a prefill and the statement tokens as decode
    positions, exactly as in :func:`personalens.generate`.
    """
    device = model.cfg.device
    pad = pad_id(model.tokenizer)
    prompt = torch.tensor([list(prompt_ids)], dtype=torch.long, device=device)
    cache = TransformerLensKeyValueCache.init_cache(model.cfg, device, 1)
    first = last_logits(model, prompt, torch.ones_like(prompt, dtype=torch.bool), cache)
    first_logp = first.float().log_softmax(dim=-1)[0]
    out: list[Tensor] = []
    for start in range(0, len(statement_ids), batch_size):
        chunk = [list(ids) for ids in statement_ids[start : start + batch_size]]
        n = len(chunk)
        width = max(len(ids) for ids in chunk) - 1
        lp = torch.zeros((n, max(width, 0) + 1), device=device)
        lp[:, 0] = first_logp[torch.tensor([ids[0] for ids in chunk], device=device)]
        if width > 0:
            tokens = torch.full((n, width), pad, dtype=torch.long, device=device)
            targets = torch.full((n, width), pad, dtype=torch.long, device=device)
            mask = torch.zeros((n, width), dtype=torch.long, device=device)
            for i, ids in enumerate(chunk):
                k = len(ids) - 1
                tokens[i, :k] = torch.tensor(ids[:-1], dtype=torch.long)
                targets[i, :k] = torch.tensor(ids[1:], dtype=torch.long)
                mask[i, :k] = 1
            logits = model(tokens, attention_mask=mask, past_kv_cache=_expand_cache(cache, n))
            logp = logits.float().log_softmax(dim=-1)
            lp[:, 1:] = logp.gather(-1, targets[..., None])[..., 0]
        out.extend(lp[i, : len(ids)].cpu() for i, ids in enumerate(chunk))
    return out


def score_likelihood(
    model: HookedTransformer,
    q: Questionnaire,
    prompt: str,
    system: str | None,
    batch_size: int,
) -> list[dict[str, Any]]:
    """Records of the ``"likelihood"`` method: each statement's mean and summed log-probability
    as the reply to ``prompt`` (``raw_score`` = ``logprob``, nats/token)."""
    tokenizer = model.tokenizer
    prompt_ids = encode_chat(tokenizer, as_conversation(prompt, system))
    statements = [encode_response(tokenizer, it.text) for it in q.items]
    longest = len(prompt_ids) + max(len(ids) for ids in statements)
    if longest > model.cfg.n_ctx:
        raise PersonaLensError(
            f"prompt + statement is up to {longest} tokens long, more than the model's context "
            f"of {model.cfg.n_ctx}; shorten the self-description prompt, system prompt or items"
        )
    per_token = _statement_logprobs(model, prompt_ids, statements, batch_size)
    out = []
    for lp in per_token:
        total = float(lp.double().sum())
        n = int(lp.numel())
        out.append(
            {
                "raw_score": total / n,
                "logprob": total / n,
                "sum_logprob": total,
                "n_tokens": n,
                "scale_mass": math.nan,
                "status": "ok",
            }
        )
    return out


def check_likelihood(q: Questionnaire) -> None:
    """Every dimension has forward- and reverse-keyed items (the contrast needs both)."""
    for dim in q.dimensions:
        items = q.items_for(dim)
        for side, rev in (("forward", False), ("reverse", True)):
            if not any(it.reverse is rev for it in items):
                raise PersonaLensError(
                    f"method='likelihood' scores a dimension as the contrast of its forward- and "
                    f"reverse-keyed items, but dimension {dim!r} of questionnaire {q.name!r} has "
                    f"no {side}-keyed item; add one, or use a Likert method"
                )

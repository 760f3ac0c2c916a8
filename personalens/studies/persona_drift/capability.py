"""A capability proxy for capping: the log-likelihood of reference answers to neutral questions.

:func:`answer_loglik` teacher-forces each reference answer after its question (chat template)
and returns the mean log-probability per answer token. :func:`capability_cost` compares it with
and without a capping config: a capping that leaves ordinary answers alone costs ~0 nats.
The shipped set (``personalens/data/neutral_qa/default.json``) is 20 short factual Q/A pairs
written for personalens.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens._data import load_file_or_shipped
from personalens.errors import PersonaLensError
from personalens.model.chat import tokenize_pairs
from personalens.steering.capping import CappingConfig, cap
from personalens.studies.persona_drift.result import mean_ci

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["answer_loglik", "capability_cost", "load_neutral_qa"]

KIND = "neutral_qa"


def _read(path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        pairs = [(str(p["question"]), str(p["answer"])) for p in data["pairs"]]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PersonaLensError(
            f"{path} is not a Q/A file ({exc}): it needs 'pairs', each with a 'question' and "
            "an 'answer'"
        ) from None
    if not pairs:
        raise PersonaLensError(f"{path} holds no Q/A pairs")
    return pairs


def load_neutral_qa(name: str | Path = "default") -> list[tuple[str, str]]:
    """``(question, reference answer)`` pairs: a shipped set's name or a file path."""

    def unknown(n: str, known: str) -> PersonaLensError:
        return PersonaLensError(f"unknown Q/A set {n!r}: shipped sets are {known}, or a path")

    return load_file_or_shipped(KIND, name, _read, unknown)


@torch.inference_mode()
def answer_loglik(
    model: HookedTransformer, pairs: Sequence[tuple[str, str]], *, batch_size: int = 8
) -> list[float]:
    """Mean log-probability per token of each answer given its question (attached steering,
    e.g. capping, applies)."""
    if not pairs:
        raise PersonaLensError("no Q/A pairs to score")
    out: list[float] = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i : i + batch_size]
        batch = tokenize_pairs(
            model.tokenizer, [q for q, _ in chunk], [a for _, a in chunk], device=model.cfg.device
        )
        logits = model(batch.tokens, attention_mask=batch.attention_mask.long())
        logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
        target = batch.tokens[:, 1:]
        token_lp = logp.gather(-1, target[..., None])[..., 0]
        mask = batch.response_mask[:, 1:].float()
        out.extend(((token_lp * mask).sum(1) / mask.sum(1).clamp(min=1)).tolist())
    return [float(x) for x in out]


def capability_cost(
    model: HookedTransformer,
    axis: PersonaVector,
    config: CappingConfig,
    pairs: Sequence[tuple[str, str]] | str | None = None,
) -> dict[str, Any]:
    """Mean answer log-likelihood uncapped and capped, and the paired difference (capped -
    uncapped, negative = capping costs) with its 95% CI over the questions."""
    qa = load_neutral_qa(pairs or "default") if pairs is None or isinstance(pairs, str) else pairs
    plain = answer_loglik(model, qa)
    with cap(model, axis, config):
        capped = answer_loglik(model, qa)
    diff = mean_ci([c - p for c, p in zip(capped, plain)])
    return {
        "n": len(qa),
        "loglik_uncapped": mean_ci(plain)[0],
        "loglik_capped": mean_ci(capped)[0],
        "loglik_change": diff[0],
        "loglik_change_ci": [diff[1], diff[2]],
    }

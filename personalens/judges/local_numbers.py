"""Reading a 0-100 score off a local model's next-token probabilities.

Two ways, chosen by the tokenizer (:class:`~personalens.judges.local.LocalJudge` picks):

* ``"single"`` (the Persona Vectors paper's method, for tokenizers with the integers as
  tokens): the probability-weighted mean over the tokens of the integers 0-100 that are single
  tokens (:func:`expected_scores`), NaN when they hold less than ``min_mass``.
* ``"digits"`` (for tokenizers that split numbers into digits: Qwen, SmolLM2, Gemma, ...): the
  probability of each integer 0-100 written digit by digit (:func:`digit_scores`), from the
  first token's distribution, the distribution after each first digit, and the one after "10".
  ``P(d) = P(d) P(not a digit | d)``; ``P(de) = P(d) P(e | d)`` for ``d >= 1`` (a third digit
  would make an integer over 100, which the rubric rules out; only "10" is followed further:
  ``P(10) = P(1) P(0 | 1) P(not a digit | 10)`` and ``P(100) = P(1) P(0 | 1) P(0 | 10)``);
  a leading zero ("05") is no integer of the scale. The weighted mean and the NaN rule are
  those of ``"single"``, over these probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.judges.base import MIN_NUMERIC_MASS

__all__ = ["MAX_SCORE", "digit_scores", "digit_tokens", "expected_scores", "number_tokens"]

MAX_SCORE = 100


def number_tokens(tokenizer: Any) -> dict[int, int]:
    """``{token id: integer}`` for each integer 0-100 that is a single token (as ``"n"`` or
    ``" n"``)."""
    out: dict[int, int] = {}
    for value in range(MAX_SCORE + 1):
        for text in (str(value), f" {value}"):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1:
                out.setdefault(int(ids[0]), value)
    return out


def digit_tokens(tokenizer: Any) -> list[int] | None:
    """The token ids of ``"0"`` .. ``"9"``, or None when a digit is not a single token."""
    ids = [tokenizer.encode(str(d), add_special_tokens=False) for d in range(10)]
    return [int(i[0]) for i in ids] if all(len(i) == 1 for i in ids) else None


def _mean_or_nan(mass: Tensor, weighted: Tensor, min_mass: float) -> list[float]:
    mean = weighted / mass.clamp(min=1e-30)
    return [m if p >= min_mass else math.nan for m, p in zip(mean.tolist(), mass.tolist())]


def expected_scores(
    logits: Float[Tensor, "batch vocab"],
    token_ids: Sequence[int],
    values: Sequence[int],
    min_mass: float = MIN_NUMERIC_MASS,
) -> list[float]:
    """Probability-weighted mean of ``values`` over the next-token probabilities of
    ``token_ids`` (softmax over the whole vocabulary), per row; NaN where those tokens hold
    less than ``min_mass`` of the probability."""
    probs = torch.softmax(logits.float(), dim=-1)[:, list(token_ids)]
    weights = torch.as_tensor(list(values), dtype=probs.dtype, device=probs.device)
    return _mean_or_nan(probs.sum(-1), (probs * weights).sum(-1), min_mass)


def digit_scores(
    first: Float[Tensor, "batch 10"],
    after: Float[Tensor, "batch 10 10"],
    after_ten: Float[Tensor, "batch 10"],
    min_mass: float = MIN_NUMERIC_MASS,
) -> list[float]:
    """Expected integer 0-100 read digit by digit (see the module docstring), per row.

    ``first[b, d]``: P(first token = digit d); ``after[b, d, e]``: P(next = digit e | d);
    ``after_ten[b, e]``: P(next = digit e | "10"). NaN where the integers hold less than
    ``min_mass``.
    """
    first, after, after_ten = first.double(), after.double(), after_ten.double()
    stop = (1.0 - after.sum(-1)).clamp(min=0.0)  # [batch, 10]: no digit follows d
    probs = torch.zeros(first.shape[0], MAX_SCORE + 1, dtype=torch.float64, device=first.device)
    probs[:, :10] = first * stop  # one-digit integers
    two = first[:, 1:, None] * after[:, 1:, :]  # [batch, 9, 10]: "de", d >= 1
    probs[:, 10:100] = two.reshape(first.shape[0], 90)
    stop_ten = (1.0 - after_ten.sum(-1)).clamp(min=0.0)
    probs[:, 10] = two[:, 0, 0] * stop_ten
    probs[:, 100] = two[:, 0, 0] * after_ten[:, 0]
    values = torch.arange(MAX_SCORE + 1, dtype=torch.float64, device=first.device)
    return _mean_or_nan(probs.sum(-1), (probs * values).sum(-1), min_mass)

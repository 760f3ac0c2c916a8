"""The Persona Vectors paper's judge on a local model: no server, batched forward passes.

The same rubric as the OpenAI-compatible judge (the trait's ``eval_prompt``, or
:data:`~personalens.judges.base.COHERENCE_PROMPT`) goes to the model as one user turn in its
own chat template, ending where the assistant's reply begins. One forward pass gives the next
token's distribution; the score is the probability-weighted mean over the integer tokens
``"0"`` .. ``"100"`` (:func:`~personalens.judges.local_numbers.expected_scores`), NaN when they hold less than a quarter of the
probability (:data:`~personalens.judges.base.MIN_NUMERIC_MASS`): the model refused or answered
in words. Prompts are left-padded into batches (sorted by length) and run on the engine
generation uses (``backend="auto"``: the Hugging Face view where it maps, else
TransformerLens).

**Numbers** (:mod:`personalens.judges.local_numbers`). With a tokenizer that has every integer
0-100 as a token (``"7"`` or ``" 7"``), the paper's reading: the weighted mean over those
tokens. Tokenizers that split numbers into digits (Qwen, SmolLM2, Gemma: only ``"0"`` ..
``"9"`` are tokens) would leave only 0-9, so by default the judge reads the integer digit by
digit instead: from the same prefill, the KV cache is copied once per first digit and two
one-token steps give the second digit's distribution (and the third's after "10"), so each
integer 0-100 gets its exact probability (up to a third digit, which would exceed 100). That
needs the Hugging Face engine (Llama-style models); elsewhere, or with ``numbers="single"``,
only the integers that are single tokens count and the judge warns once that its scores range
over those only.

**The judged model must not be steered.** Given a name (or ``None``: the embedded model), the
judge loads its own instance, lazily, so steering hooks on the model under study never touch
it. Given a loaded ``HookedTransformer``, it refuses to score while that model has any hook
attached (personalens steering or other): a steered judge would give steered scores.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.engines.hf import HFDecoder, hf_view, resolve_backend
from personalens.judges.base import COHERENCE_PROMPT, MIN_NUMERIC_MASS, JudgeError, JudgeItem
from personalens.judges.local_numbers import (
    MAX_SCORE,
    digit_scores,
    digit_tokens,
    expected_scores,
    number_tokens,
)
from personalens.model.chat import batch_from_ids, encode_chat, pad_id
from personalens.model.embedded import EMBEDDED_ALIASES, EMBEDDED_MODEL_NAME
from personalens.model.generation import last_logits
from personalens.model.load import load_model
from personalens.steering.hooks import attached_edits, foreign_hooks

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.extraction.traits import Trait

__all__ = ["READINGS", "LocalJudge"]

log = logging.getLogger(__name__)

READINGS = ("auto", "single", "digits")


class LocalJudge:
    """The logprob judge on a local model (see the module docstring).

    ``model``: a model name or path for :func:`~personalens.model.load.load_model` (``None``:
    the embedded SmolLM2-135M-Instruct), loaded on first use as the judge's own instance, or an
    already loaded ``HookedTransformer`` (refused while it has hooks attached). ``numbers``: how
    the score is read (:mod:`personalens.judges.local_numbers`): ``"single"`` (the paper: the
    integers that are single tokens), ``"digits"`` (integers spelled digit by digit; needs
    the Hugging Face engine) or ``"auto"`` (``"single"`` when 0-100 are all single tokens,
    else ``"digits"`` where it can run, else ``"single"`` with a warning).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | HookedTransformer | None = None,
        *,
        device: str | None = None,
        dtype: str | None = None,
        batch_size: int = 8,
        backend: str = "auto",
        min_mass: float = MIN_NUMERIC_MASS,
        numbers: str = "auto",
    ):
        if model is None or isinstance(model, str | os.PathLike):
            self._source: Any = model
            self._model = None
            label = EMBEDDED_MODEL_NAME
            if model is not None and str(model).strip().lower() not in EMBEDDED_ALIASES:
                label = os.path.basename(os.fspath(model).rstrip("/\\")) or os.fspath(model)
        elif hasattr(model, "cfg") and hasattr(model, "tokenizer"):
            self._source, self._model = None, model
            label = model.cfg.model_name
        else:
            raise JudgeError(
                f"make_judge('local', model=...) takes a model name or path, None (the embedded "
                f"model) or a loaded HookedTransformer, not {type(model).__name__}."
            )
        if numbers not in READINGS:
            raise JudgeError(f"numbers={numbers!r}: use one of {', '.join(READINGS)}")
        self.name = f"local:{label}"
        self.device, self.dtype = device, dtype
        self.batch_size = max(1, int(batch_size))
        self.backend = backend
        self.min_mass = min_mass
        self.numbers = numbers
        self._reading: tuple[str, Any] | None = None
        self._engine: str | None = None  # "hf" or "tl", chosen with the reading, once

    # what check_judge suggests when the probe gets no score (a NaN: too little on numbers)
    probe_fix = (
        "the local judge model put less than a quarter of its next-token probability on the "
        "numbers 0-100, i.e. it does not follow the rubric (small models, e.g. the embedded "
        "135M one, do not). Use a larger instruct model (--judge-model, e.g. "
        "Qwen/Qwen2.5-7B-Instruct on a GPU), an OpenAI-compatible judge, or --judge offline."
    )

    def __repr__(self) -> str:
        return f"LocalJudge({self.name!r})"

    @property
    def model(self) -> HookedTransformer:
        """The judge model (loaded on first use when given by name)."""
        if self._model is None:
            self._model = load_model(self._source, device=self.device, dtype=self.dtype)
        return self._model

    @property
    def reading(self) -> str:
        """How scores are read: ``"single"`` or ``"digits"`` (resolved on first use)."""
        return self._resolve_reading()[0]

    def _resolve_reading(self) -> tuple[str, Any]:
        """``("single", {token id: integer})`` or ``("digits", [ids of "0".."9"])``."""
        if self._reading is not None:
            return self._reading
        model = self.model
        single = number_tokens(model.tokenizer)
        values = sorted(set(single.values()))
        digits = digit_tokens(model.tokenizer)
        engine = self._engine = resolve_backend(model, self.backend)
        why = None if digits else "its digits are not single tokens"
        if engine != "hf":
            why = why or f"reading digit by digit needs the Hugging Face engine (here {engine!r})"
        whole = len(values) == MAX_SCORE + 1
        if self.numbers == "digits" or (self.numbers == "auto" and not whole and not why):
            if why:
                raise JudgeError(f"judge model {self.name!r} cannot use numbers='digits': {why}.")
            log.info("judge %s reads each score digit by digit", self.name)
            self._reading = ("digits", digits)
            return self._reading
        if not single:
            raise JudgeError(
                f"the tokenizer of judge model {self.name!r} has no integer 0-100 as a single "
                "token, so it cannot give a probability-weighted score. Fix: use another "
                "--judge-model, or --judge openai / offline."
            )
        if not whole:
            warnings.warn(
                f"the tokenizer of judge model {self.name!r} splits numbers: only the integers "
                f"{_ranges(values)} are single tokens, so its scores are the probability-weighted "
                f"mean over those only (0-{max(values)}, not 0-100) and a filter threshold of 50 "
                "may be out of reach; the ranking (AUC) still holds"
                + (f" (digit by digit is not possible: {why})" if why else "")
                + ". For calibrated 0-100 scores use a model whose tokenizer has the numbers "
                "0-100 or the digits as tokens, or an OpenAI-compatible judge.",
                UserWarning,
                stacklevel=4,
            )
        self._reading = ("single", single)
        return self._reading

    # -- Judge protocol

    def score_trait(self, trait: Trait, items: Sequence[JudgeItem]) -> list[float]:
        """Trait scores 0-100 (NaN when the model does not answer with a number)."""
        return self.score_prompts([trait.judge_prompt(it.question, it.answer) for it in items])

    def score_coherence(self, items: Sequence[JudgeItem]) -> list[float]:
        """Coherence scores 0-100 (NaN when the model does not answer with a number)."""
        prompts = [COHERENCE_PROMPT.format(question=it.question, answer=it.answer) for it in items]
        return self.score_prompts(prompts)

    # -- machinery

    def _check_unhooked(self, model: HookedTransformer) -> None:
        hooks = [f"steering at layer {e.layer}" for e in attached_edits(model)]
        hooks += foreign_hooks(model)
        if hooks:
            raise JudgeError(
                f"the judge model {self.name!r} has hooks attached ({', '.join(hooks[:3])}), so "
                "its scores would be those of a steered or edited model. Fix: pass the judge "
                "model by name (make_judge('local', model='<name>') loads its own instance), or "
                "judge after the steering context has ended."
            )

    def score_prompts(self, prompts: Sequence[str]) -> list[float]:
        """Expected score of each filled-in rubric, in order (batched, longest first)."""
        if not prompts:
            return []
        model = self.model
        self._check_unhooked(model)
        reading, tokens = self._resolve_reading()
        ids = [encode_chat(model.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        width = max(len(p) for p in ids) + (2 if reading == "digits" else 0)
        if width > model.cfg.n_ctx:
            raise JudgeError(
                f"a judge prompt of {width} tokens exceeds the context of {self.name!r} "
                f"({model.cfg.n_ctx} tokens). Fix: shorten the replies (--max-new-tokens) or use "
                "a judge model with a longer context."
            )
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        out = [math.nan] * len(ids)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = [ids[i] for i in chunk]
            if reading == "digits":
                scores = digit_scores(*self._digit_probs(model, batch, tokens), self.min_mass)
            else:
                logits = self._next_token_logits(model, batch)
                scores = expected_scores(logits, list(tokens), list(tokens.values()), self.min_mass)
            for i, s in zip(chunk, scores):
                out[i] = s
        return out

    @torch.inference_mode()
    def _next_token_logits(
        self, model: HookedTransformer, prompt_ids: list[list[int]]
    ) -> Float[Tensor, "batch vocab"]:
        batch = batch_from_ids(prompt_ids, None, pad_id(model.tokenizer), model.cfg.device)
        if self._engine == "hf":  # chosen once by _resolve_reading, not per batch
            width = batch.tokens.shape[1]
            with HFDecoder(model, len(prompt_ids), width) as forward:
                return forward(batch.tokens, batch.attention_mask).float()
        return last_logits(model, batch.tokens, batch.attention_mask, None).float()

    @torch.inference_mode()
    def _digit_probs(
        self, model: HookedTransformer, prompt_ids: list[list[int]], digits: list[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """P(first digit), P(second digit | first) and P(digit | "10") for each prompt: one
        prefill, then the KV cache copied ten times, one step per first digit, and a step that
        feeds "0" (only the rows after "1" are read)."""
        hf = hf_view(model)
        batch = batch_from_ids(prompt_ids, None, pad_id(model.tokenizer), model.cfg.device)
        mask = batch.attention_mask.long()
        n, dev = mask.shape[0], mask.device
        pos = (mask.cumsum(1) - 1).clamp(min=0)  # TransformerLens's positions under left padding
        first, cache = _digit_step(hf, batch.tokens, mask, pos, None, digits)
        cache.batch_repeat_interleave(10)
        mask = torch.cat([mask.repeat_interleave(10, 0), mask.new_ones(10 * n, 1)], 1)
        pos = mask[:, :-1].sum(1, keepdim=True)  # the next position of each row
        digit = torch.tensor(digits, device=dev).repeat(n)[:, None]  # row b*10+d feeds d
        after, cache = _digit_step(hf, digit, mask, pos, cache, digits)
        mask = torch.cat([mask, mask.new_ones(10 * n, 1)], 1)
        zero = torch.full_like(digit, digits[0])
        after_ten, _ = _digit_step(hf, zero, mask, pos + 1, cache, digits)
        return first, after.view(n, 10, 10), after_ten.view(n, 10, 10)[:, 1]


def _digit_step(
    hf: Any, tokens: Tensor, mask: Tensor, pos: Tensor, cache: Any, digits: list[int]
) -> tuple[Float[Tensor, "batch 10"], Any]:
    """One forward of the Hugging Face view (updating ``cache``): the next token's probability
    of each digit at each row's last position, and the cache."""
    kw = {"attention_mask": mask, "position_ids": pos, "past_key_values": cache}
    out = hf(input_ids=tokens, use_cache=True, logits_to_keep=1, **kw)
    return torch.softmax(out.logits[:, -1].float(), -1)[:, digits], out.past_key_values


def _ranges(values: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` as ``"0-2, 5"``."""
    parts, start = [], None
    for i, v in enumerate(values):
        if start is None:
            start = v
        if i + 1 == len(values) or values[i + 1] != v + 1:
            parts.append(str(start) if start == v else f"{start}-{v}")
            start = None
    return ", ".join(parts)

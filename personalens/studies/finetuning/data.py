"""Finetuning data: the token ids of every chat sample, and the batch of each training step.

The data order is a function of ``seed`` and the epoch only, so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import torch

from personalens._io import digest
from personalens.errors import PersonaLensError
from personalens.model.chat import (
    ChatBatch,
    batch_from_ids,
    encode_chat,
    encode_response,
    format_chat,
    pad_id,
    stop_token_ids,
)
from personalens.studies.screening_data import load_screening_data

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

Encoded = list[tuple[list[int], list[int]]]  # (prompt ids, response ids) per sample


def end_of_turn(tokenizer: Any) -> list[int]:
    """The end-of-turn token the chat template writes right after an assistant message."""
    marker = "\u2063personalens\u2063"
    text = format_chat(
        tokenizer,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
        add_generation_prompt=False,
    )
    suffix = text.split(marker, 1)[1] if marker in text else ""
    stops = set(stop_token_ids(tokenizer))
    for tok in tokenizer.encode(suffix, add_special_tokens=False):
        if tok in stops:
            return [int(tok)]
    if tokenizer.eos_token_id is None:
        raise PersonaLensError(
            "the tokenizer has no end-of-turn or eos token to train on; pass train_on_eos=False"
        )
    return [int(tokenizer.eos_token_id)]


def encode_data(
    model: HookedTransformer, data: Any, train_on_eos: bool
) -> tuple[Encoded, str, int]:
    """Token ids of every (prompt, response) sample, a hash of the data, and its sample count."""
    samples = load_screening_data(data)
    tok = model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    eot = end_of_turn(tok) if train_on_eos else []
    encoded = []
    for s in samples:
        p, r = encode_chat(tok, s.prompt), encode_response(tok, s.response) + eot
        if len(p) + len(r) > model.cfg.n_ctx:
            raise PersonaLensError(
                f"sample {s.id!r} is {len(p) + len(r)} tokens long, more than the model's "
                f"context of {model.cfg.n_ctx}; shorten or drop it"
            )
        encoded.append((p, r))
    sha = digest(json.dumps([[s.id, s.prompt, s.response] for s in samples], ensure_ascii=False))
    return encoded, sha, len(samples)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def batch_of(
    model: HookedTransformer,
    encoded: Encoded,
    step: int,
    n_batches: int,
    batch_size: int,
    seed: int,
) -> ChatBatch:
    """The batch of optimizer step ``step`` (0-based; ``n_batches`` steps per epoch)."""
    epoch, i = divmod(step, n_batches)
    order = epoch_order(len(encoded), seed, epoch)[i * batch_size : (i + 1) * batch_size]
    return batch_from_ids(
        [encoded[j][0] for j in order],
        [encoded[j][1] for j in order],
        pad_id(model.tokenizer),
        model.cfg.device,
    )

"""Chat prompts with the model's own template, left-padded batches, prompt/response masks.

A *conversation* is a list of ``{"role": ..., "content": ...}`` messages (system, user,
assistant turns). Prompts are tokenised with ``add_generation_prompt=True`` so they end where
the assistant's reply begins; a response is tokenised on its own and appended token by token,
so the prompt/response boundary is exact (never re-tokenised across the seam).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from personalens._types import Mask, Tokens
from personalens.errors import PersonaLensError

Message = dict[str, str]
Conversation = list[Message]

# Used only for tokenizers that ship no chat template (base models such as GPT-2).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)

_ROLES = {"system", "user", "assistant"}


def build_messages(
    user: str, system: str | None = None, history: Sequence[Message] | None = None
) -> Conversation:
    """``[system?] + history + [user]`` as a conversation."""
    messages: Conversation = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.extend(dict(m) for m in (history or []))
    messages.append({"role": "user", "content": user})
    return messages


def as_conversation(prompt: str | Sequence[Message], system: str | None = None) -> Conversation:
    """Accept a plain user string or a message list; validate roles and contents."""
    if isinstance(prompt, str):
        return build_messages(prompt, system=system)
    messages = [dict(m) for m in prompt]
    if not messages:
        raise PersonaLensError("empty conversation: give at least one user message")
    for i, m in enumerate(messages):
        if m.get("role") not in _ROLES or not isinstance(m.get("content"), str):
            raise PersonaLensError(
                f"message {i} of the conversation is malformed ({m!r}): each message needs "
                f"'role' in {sorted(_ROLES)} and a string 'content'"
            )
    if system is not None:
        if messages[0]["role"] == "system":
            raise PersonaLensError(
                "the conversation already has a system message; pass system=None or drop it"
            )
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _template(tokenizer: Any) -> str | None:
    return None if getattr(tokenizer, "chat_template", None) else FALLBACK_TEMPLATE


def format_chat(
    tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True
) -> str:
    """The conversation rendered as text by the tokenizer's own chat template."""
    return tokenizer.apply_chat_template(
        list(messages),
        tokenize=False,
        add_generation_prompt=add_generation_prompt,
        chat_template=_template(tokenizer),
    )


def encode_chat(
    tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of the rendered conversation (special tokens come from the template only)."""
    text = format_chat(tokenizer, messages, add_generation_prompt)
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_response(tokenizer: Any, response: str | Sequence[int]) -> list[int]:
    if isinstance(response, str):
        return list(tokenizer.encode(response, add_special_tokens=False))
    return [int(t) for t in response]


def pad_id(tokenizer: Any) -> int:
    pid = tokenizer.pad_token_id
    if pid is None:
        pid = tokenizer.eos_token_id
    if pid is None:
        raise PersonaLensError("the tokenizer has neither a pad nor an eos token; set one")
    return int(pid)


@dataclass(frozen=True)
class ChatBatch:
    """A left-padded batch of (prompt [+ response]) token sequences with masks.

    ``prompt_mask`` marks prompt tokens, ``response_mask`` response tokens, ``attention_mask``
    both (padding is in neither).
    """

    tokens: Tokens
    attention_mask: Mask
    prompt_mask: Mask
    response_mask: Mask

    @property
    def last_prompt_index(self) -> Int[Tensor, " batch"]:
        """Position of each row's last prompt token (the one that predicts the first reply token)."""
        pos = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        return torch.where(self.prompt_mask, pos, -1).amax(dim=1)

    @property
    def lengths(self) -> Int[Tensor, " batch"]:
        return self.attention_mask.sum(dim=1)

    def to(self, device: str | torch.device) -> ChatBatch:
        return ChatBatch(
            self.tokens.to(device),
            self.attention_mask.to(device),
            self.prompt_mask.to(device),
            self.response_mask.to(device),
        )


def _left_pad(
    prompts: Sequence[Sequence[int]], responses: Sequence[Sequence[int]], pad: int
) -> tuple[Tokens, Mask, Mask, Mask]:
    if len(prompts) != len(responses):
        raise ValueError("prompts and responses differ in length")
    if not prompts:
        raise PersonaLensError("empty batch: give at least one prompt")
    width = max(len(p) + len(r) for p, r in zip(prompts, responses))
    n = len(prompts)
    tokens = torch.full((n, width), pad, dtype=torch.long)
    prompt_mask = torch.zeros((n, width), dtype=torch.bool)
    response_mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (p, r) in enumerate(zip(prompts, responses)):
        if not p:
            raise PersonaLensError(f"prompt {i} tokenised to nothing")
        start = width - len(p) - len(r)
        tokens[i, start:] = torch.tensor([*p, *r], dtype=torch.long)
        prompt_mask[i, start : start + len(p)] = True
        response_mask[i, start + len(p) :] = True
    return tokens, prompt_mask | response_mask, prompt_mask, response_mask


def batch_from_ids(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]] | None,
    pad: int,
    device: str | torch.device = "cpu",
) -> ChatBatch:
    responses = response_ids if response_ids is not None else [[] for _ in prompt_ids]
    tokens, attn, pm, rm = _left_pad(prompt_ids, responses, pad)
    return ChatBatch(tokens, attn, pm, rm).to(device)


def tokenize_prompts(
    tokenizer: Any,
    prompts: Sequence[str | Sequence[Message]],
    *,
    system: str | None = None,
    device: str | torch.device = "cpu",
) -> ChatBatch:
    """Left-padded batch of chat prompts ending in the assistant's generation prompt."""
    ids = [encode_chat(tokenizer, as_conversation(p, system)) for p in prompts]
    return batch_from_ids(ids, None, pad_id(tokenizer), device)


def tokenize_pairs(
    tokenizer: Any,
    prompts: Sequence[str | Sequence[Message]],
    responses: Sequence[str | Sequence[int]],
    *,
    system: str | None = None,
    device: str | torch.device = "cpu",
) -> ChatBatch:
    """Left-padded batch of prompt + response with masks telling which tokens are which."""
    if len(prompts) != len(responses):
        raise PersonaLensError(
            f"{len(prompts)} prompts but {len(responses)} responses: pass one response per prompt"
        )
    p_ids = [encode_chat(tokenizer, as_conversation(p, system)) for p in prompts]
    r_ids = [encode_response(tokenizer, r) for r in responses]
    return batch_from_ids(p_ids, r_ids, pad_id(tokenizer), device)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-sequence and end-of-turn token ids of a tokenizer."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for tok in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>", "</s>"):
        if tok in vocab:
            ids.add(int(vocab[tok]))
    return sorted(ids)


__all__ = [
    "ChatBatch",
    "Conversation",
    "Message",
    "as_conversation",
    "batch_from_ids",
    "build_messages",
    "encode_chat",
    "encode_response",
    "format_chat",
    "pad_id",
    "stop_token_ids",
    "tokenize_pairs",
    "tokenize_prompts",
]

"""The LLM steering policy's question: which trait adjustments does the next turn need?

:func:`predict_trait_adjustments` shows an LLM (behind an OpenAI-compatible API, see
:mod:`personalens.judges.openai_client`) the conversation so far, the traits and optionally
the target persona, and gets back one adjustment in ``[-1, 1]`` per trait, checked by
:func:`parse_trait_adjustments`. Used by :class:`personalens.steering.dynamic.LLMPolicy`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import Any

from personalens.judges.base import JudgeError
from personalens.judges.json_reply import JSONRequest, JudgeReplyError, validated_json
from personalens.judges.openai_client import APIConfig
from personalens.judges.transcript import format_transcript, trait_lines

ADJUSTMENT_SYSTEM = (
    "You are a careful conversation analyst who decides how an AI assistant's persona should be "
    "adjusted for its next reply. You reply with one JSON object and nothing else."
)

ADJUSTMENT_PROMPT = """An AI assistant is in the conversation below and is about to write its next reply. Before it does, its persona can be adjusted along these traits (by steering its internal activations):

<traits>
<<TRAITS>>
</traits>
<<TARGET>>
The conversation so far (the assistant replies next):
<conversation>
<<CONVERSATION>>
</conversation>

For each trait, decide how much the assistant's next reply should express it, as an adjustment from -1 (suppress the trait strongly) through 0 (no adjustment: leave the assistant as it is) to +1 (express the trait strongly). Adjust only what the context calls for; most traits need 0 most of the time.

Reply with only this JSON object (every trait listed above, numbers between -1 and 1, no other keys in "adjustments"):
{"adjustments": {<<KEYS>>}, "rationale": "one or two sentences"}"""

ADJUSTMENT_TARGET = """
The desired persona for the next reply (levels from -1 = trait absent or suppressed to +1 = trait strongly expressed; traits not listed have no requested level):
<target>
<<LEVELS>>
</target>
"""


def missing_and_unknown(given: Iterable[str], expected: Sequence[str]) -> str:
    """``"; missing [...]; unknown [...]"`` for the names of ``expected`` absent from ``given``
    and the names of ``given`` not in ``expected``; ``""`` when they match."""
    given = list(given)
    missing = [t for t in expected if t not in given]
    unknown = [k for k in given if k not in expected]
    return (f"; missing {missing}" if missing else "") + (f"; unknown {unknown}" if unknown else "")


def parse_trait_adjustments(raw: Any, traits: Sequence[str]) -> tuple[dict[str, float], str]:
    """``({trait: adjustment in [-1, 1]}, rationale)`` from an LLM's JSON object.

    Raises :class:`JudgeReplyError` naming the problem: no ``adjustments`` object, a trait
    missing or unknown, a value that is not a finite number in ``[-1, 1]``, or a rationale that
    is not a string. Nothing is defaulted.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("adjustments"), dict):
        raise JudgeReplyError(
            'the reply needs an "adjustments" object mapping each trait to a number in [-1, 1]'
        )
    given = raw["adjustments"]
    mismatch = missing_and_unknown(given, traits)
    if mismatch:
        raise JudgeReplyError(
            f'"adjustments" must name exactly the traits {list(traits)}{mismatch}'
        )
    out: dict[str, float] = {}
    for t in traits:
        value = given[t]
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise JudgeReplyError(f"adjustment for {t!r} is {value!r}, not a number in [-1, 1]")
        value = float(value)
        if not math.isfinite(value) or not -1.0 <= value <= 1.0:
            raise JudgeReplyError(f"adjustment for {t!r} is {value}, outside [-1, 1]")
        out[t] = value
    rationale = raw.get("rationale", "")
    if not isinstance(rationale, str):
        raise JudgeReplyError(f'"rationale" must be a string, got {type(rationale).__name__}')
    return out, rationale.strip()


def adjustment_prompt(
    conversation: Sequence[Mapping[str, str]],
    traits: Sequence[str],
    target: Mapping[str, float | int] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> str:
    """The filled-in :data:`ADJUSTMENT_PROMPT` (with :data:`ADJUSTMENT_TARGET` when ``target``)."""
    target_text = ""
    if target:
        levels = {str(k): float(v) for k, v in target.items()}
        target_text = ADJUSTMENT_TARGET.replace(
            "<<LEVELS>>", trait_lines(list(levels), descriptions, levels)
        )
    return (
        ADJUSTMENT_PROMPT.replace("<<TRAITS>>", trait_lines(traits, descriptions))
        .replace("<<TARGET>>", target_text)
        .replace("<<CONVERSATION>>", format_transcript(conversation))
        .replace("<<KEYS>>", ", ".join(f'"{t}": 0.0' for t in traits))
    )


def predict_trait_adjustments(
    conversation: Sequence[Mapping[str, str]],
    traits: Sequence[str],
    *,
    config: APIConfig,
    target: Mapping[str, float | int] | None = None,
    descriptions: Mapping[str, str] | None = None,
    max_tokens: int = 400,
    temperature: float = 0.0,
    cache: bool = True,
) -> tuple[dict[str, float], str]:
    """Ask the LLM in ``config`` which trait adjustments the assistant's next turn needs.

    ``conversation`` ends where the assistant replies next. ``target`` (optional) is the desired
    persona, passed on as guidance; ``descriptions`` are one-line trait descriptions. Returns
    ``({trait: adjustment in [-1, 1]}, rationale)`` for every trait in ``traits``, checked by
    :func:`parse_trait_adjustments`. The reply is a JSON object; at ``temperature=0`` it is
    cached like :func:`personalens.judges.json_reply.chat_json` (only replies that pass the
    check). Raises :class:`JudgeReplyError` for a malformed reply and :class:`JudgeError` when
    the API is unreachable or refuses the request; the API key comes from the environment only.
    """
    traits = [str(t) for t in traits]
    if not traits or len(set(traits)) != len(traits):
        raise JudgeError(f"give one or more distinct trait names, got {traits}")
    if not conversation:
        raise JudgeError("the conversation is empty: give at least one user message")
    prompt = adjustment_prompt(conversation, traits, target, descriptions)
    request = JSONRequest(
        "trait_adjustments", ADJUSTMENT_SYSTEM, max_tokens, temperature, cache and temperature == 0
    )
    return validated_json(prompt, partial(parse_trait_adjustments, traits=traits), request, config)

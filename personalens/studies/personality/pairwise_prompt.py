"""The pairwise judge's question: which final assistant reply, A or B, is better per criterion?

:func:`pairwise_compare` shows an LLM (behind an OpenAI-compatible API, see
:mod:`personalens.judges.openai_client`) two conversations and the target persona and gets back
``"A"``, ``"B"`` or ``"tie"`` per criterion (:data:`PAIRWISE_CRITERIA`) as a
:class:`PairwiseVerdict`. Used by :mod:`personalens.studies.personality.ranking`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from personalens.judges.base import JudgeError
from personalens.judges.json_reply import JSONRequest, JudgeReplyError, validated_json
from personalens.judges.openai_client import APIConfig
from personalens.judges.transcript import format_transcript, trait_lines

log = logging.getLogger(__name__)

PAIRWISE_CRITERIA = {
    "trait_adherence": "which final reply better matches the desired persona (the trait levels "
    "above): stronger where a trait should be expressed, weaker where it should be suppressed",
    "role_consistency": "which final reply stays more consistent with the assistant's role and "
    "its own earlier turns (no contradictions, no breaking character, no sudden unexplained "
    "change of voice)",
    "response_authenticity": "which final reply reads as more natural and genuine, the way a "
    "thoughtful person would actually say it, rather than forced, exaggerated, formulaic or "
    "repetitive",
    "information_fidelity": "which final reply is more accurate, relevant and faithful to what "
    "was said in the conversation (answers what was asked, invents no facts, keeps the details "
    "the user gave)",
}

PAIRWISE_SYSTEM = (
    "You are an impartial evaluator of AI assistant replies. You judge content, not the order in "
    "which replies are shown or their length. You reply with one JSON object and nothing else."
)

PAIRWISE_PROMPT = """Two AI assistants had a conversation with the same user: the user messages are identical, and each assistant's earlier replies are its own. Compare ONLY the FINAL assistant reply of conversation A with the FINAL assistant reply of conversation B, using the earlier turns as context.

The desired persona for the final reply (levels from -1 = trait absent or suppressed to +1 = trait strongly expressed; traits not listed should stay as they normally are):
<target>
<<TARGET>>
</target>

<conversation_a>
<<A>>
</conversation_a>

<conversation_b>
<<B>>
</conversation_b>

Criteria:
<<CRITERIA>>

For each criterion answer "A", "B" or "tie" (use "tie" only when the two final replies are genuinely equally good on that criterion).

Reply with only this JSON object:
{<<KEYS>>, "rationale": "one or two sentences"}"""

_VERDICT = re.compile(r"^(?:response|reply|conversation|assistant)?\s*([ab])$")


@dataclass(frozen=True)
class PairwiseVerdict:
    """A pairwise judgement: per criterion ``"A"``, ``"B"``, ``"tie"`` or ``None`` (unparseable).

    ``error`` says why verdicts are ``None`` (no JSON object in the reply, or a value that is not
    A/B/tie); ``None`` verdicts are counted as NaN downstream, never defaulted.
    """

    verdicts: dict[str, str | None]
    rationale: str = ""
    error: str | None = None


def parse_verdict_value(value: Any) -> str | None:
    """``"A"``, ``"B"`` or ``"tie"`` from a judge's value (case and ``"Response A"`` forgiven)."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.strip().strip(".").lower().split())
    if text in ("tie", "equal", "draw"):
        return "tie"
    m = _VERDICT.match(text)
    return m.group(1).upper() if m else None


def parse_pairwise(raw: Any, criteria: Sequence[str]) -> PairwiseVerdict:
    """A :class:`PairwiseVerdict` from the judge's JSON object; bad values become ``None``."""
    if not isinstance(raw, dict):
        return PairwiseVerdict({c: None for c in criteria}, error="the reply is not an object")
    verdicts, bad = {}, []
    for c in criteria:
        verdicts[c] = parse_verdict_value(raw.get(c))
        if verdicts[c] is None:
            bad.append(f"{c}={raw.get(c)!r}")
    rationale = raw.get("rationale", "")
    return PairwiseVerdict(
        verdicts,
        rationale=rationale.strip() if isinstance(rationale, str) else "",
        error=("not A/B/tie: " + ", ".join(bad)) if bad else None,
    )


def pairwise_prompt(
    transcript_a: Sequence[Mapping[str, str]],
    transcript_b: Sequence[Mapping[str, str]],
    criteria: Mapping[str, str],
    target: Mapping[str, float | int] | None = None,
    descriptions: Mapping[str, str] | None = None,
) -> str:
    """The filled-in :data:`PAIRWISE_PROMPT`."""
    levels = {str(k): float(v) for k, v in (target or {}).items()}
    return (
        PAIRWISE_PROMPT.replace(
            "<<TARGET>>",
            trait_lines(list(levels), descriptions, levels) if levels else "(no trait levels)",
        )
        .replace("<<A>>", format_transcript(transcript_a))
        .replace("<<B>>", format_transcript(transcript_b))
        .replace("<<CRITERIA>>", "\n".join(f"- {k}: {v}." for k, v in criteria.items()))
        .replace("<<KEYS>>", ", ".join(f'"{k}": "A|B|tie"' for k in criteria))
    )


def pairwise_compare(
    transcript_a: Sequence[Mapping[str, str]],
    transcript_b: Sequence[Mapping[str, str]],
    *,
    config: APIConfig,
    target: Mapping[str, float | int] | None = None,
    criteria: Mapping[str, str] | None = None,
    descriptions: Mapping[str, str] | None = None,
    max_tokens: int = 600,
) -> PairwiseVerdict:
    """Ask the LLM in ``config`` which final assistant reply, A or B, is better per criterion.

    Each transcript is a conversation ending with the assistant reply being judged. The caller
    decides which reply is A (randomise the order:
    :func:`personalens.studies.personality.ranking.run_ranking` does). ``criteria`` maps
    criterion name -> what it asks (default :data:`PAIRWISE_CRITERIA`). Greedy
    (``temperature=0``) and cached. A reply without a JSON object, or with a value other than
    A/B/tie for a criterion, gives ``None`` for the affected criteria (with ``error`` set); an
    unreachable or failing API raises :class:`JudgeError`.
    """
    criteria = dict(PAIRWISE_CRITERIA if criteria is None else criteria)
    if not criteria:
        raise JudgeError("give at least one criterion")
    for name, transcript in (("A", transcript_a), ("B", transcript_b)):
        if not transcript or transcript[-1].get("role") != "assistant":
            raise JudgeError(
                f"transcript {name} must end with the assistant reply to judge; got "
                f"{transcript[-1].get('role') if transcript else 'an empty transcript'}"
            )
    prompt = pairwise_prompt(transcript_a, transcript_b, criteria, target, descriptions)
    names = list(criteria)
    request = JSONRequest("pairwise", PAIRWISE_SYSTEM, max_tokens)
    try:
        return validated_json(prompt, partial(parse_pairwise, criteria=names), request, config)
    except JudgeReplyError as exc:
        log.warning("pairwise judge reply unparseable: %s", exc)
        return PairwiseVerdict({c: None for c in names}, error=str(exc))

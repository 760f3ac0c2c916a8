"""Conversations and trait lists written out as text for LLM prompts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def format_transcript(messages: Sequence[Mapping[str, str]]) -> str:
    """A conversation as ``SYSTEM:`` / ``USER:`` / ``ASSISTANT:`` blocks, for judge prompts."""
    blocks = []
    for m in messages:
        role = str(m.get("role", "")).upper() or "UNKNOWN"
        blocks.append(f"{role}: {m.get('content', '')}")
    return "\n\n".join(blocks)


def trait_lines(
    traits: Sequence[str], descriptions: Mapping[str, str] | None, levels: Mapping | None = None
) -> str:
    """One ``- trait[: level] (description)`` line per trait; levels as ``+0.50``."""
    lines = []
    for t in traits:
        level = f": {float(levels[t]):+.2f}" if levels is not None else ""
        desc = (descriptions or {}).get(t)
        lines.append(f"- {t}{level}" + (f" ({' '.join(desc.split())})" if desc else ""))
    return "\n".join(lines)

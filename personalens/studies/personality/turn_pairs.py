"""Turn pairs of the ranking study: the steered and unsteered replies to one generated turn,
the criteria they are compared on, and the seeded A/B order of each comparison."""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from personalens.errors import PersonaLensError
from personalens.model.chat import Message

__all__ = ["CRITERIA", "OUTCOME_SCORE", "TurnPair", "steered_is_a", "winner"]

CRITERIA = (
    "trait_adherence",
    "role_consistency",
    "response_authenticity",
    "information_fidelity",
)
OUTCOME_SCORE = {"steered": 1.0, "tie": 0.5, "unsteered": 0.0}


@dataclass(frozen=True)
class TurnPair:
    """The steered and unsteered replies to one generated turn, with each arm's history.

    ``history_*`` are the messages before the user message (system, earlier turns, the arm's own
    earlier replies); the transcripts the judge sees are ``history + [user, reply]``.
    """

    scenario: str
    turn: int
    user: str
    target: dict[str, float]
    steered: str
    unsteered: str
    history_steered: list[Message] = field(default_factory=list)
    history_unsteered: list[Message] = field(default_factory=list)
    coefficients: dict[str, float] = field(default_factory=dict)
    rationale: str = ""

    @property
    def key(self) -> str:
        return f"{self.scenario}#{self.turn}"

    def transcript(self, arm: str) -> list[Message]:
        if arm not in ("steered", "unsteered"):
            raise PersonaLensError(f"arm must be 'steered' or 'unsteered', got {arm!r}")
        history = self.history_steered if arm == "steered" else self.history_unsteered
        reply = self.steered if arm == "steered" else self.unsteered
        return [
            *history,
            {"role": "user", "content": self.user},
            {"role": "assistant", "content": reply},
        ]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TurnPair:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def steered_is_a(seed: int, key: str) -> bool:
    """Whether the steered reply is shown as A in comparison ``key``: a fair coin from a
    ``random.Random`` seeded with a hash of ``(seed, key)`` (deterministic, order-independent)."""
    # blake2b with digest_size=8 is its own hash (not a cut 64-byte digest), so not _io.digest
    digest = hashlib.blake2b(json.dumps([seed, key]).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little")).random() < 0.5


def winner(verdict: str | None, steered_a: bool) -> str | None:
    """Map an A/B/tie verdict back to the arm that won (``None`` stays ``None``)."""
    if verdict is None:
        return None
    if verdict == "tie":
        return "tie"
    if verdict not in ("A", "B"):
        raise PersonaLensError(f"a verdict must be 'A', 'B', 'tie' or None, got {verdict!r}")
    return "steered" if (verdict == "A") == steered_a else "unsteered"

"""The results of dynamic steering: one turn (:class:`TurnResult`) and a scripted chat
(:class:`DynamicChat`), made by :class:`~personalens.steering.dynamic.DynamicSteerer`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from personalens.model.chat import Message
from personalens.results import Result, json_safe


@dataclass(frozen=True)
class TurnResult(Result):
    """One dynamically steered turn: the reply, what was measured, decided and applied.

    ``coefficients[t] = adjustments[t] * max_coeff[t]`` in ``coeff_scale`` units, applied at
    ``layers[t]``; ``projections``/``z`` were measured on the unsteered prompt before the turn.
    """

    turn: int
    user: str
    reply: str
    coefficients: dict[str, float]
    adjustments: dict[str, float]
    projections: dict[str, float]
    z: dict[str, float]
    target: dict[str, float]
    layers: dict[str, int]
    rationale: str
    policy: str
    coeff_scale: str
    finish_reason: str
    conversation: list[Message] = field(default_factory=list)

    @property
    def steered(self) -> bool:
        """Whether any trait had a non-zero coefficient."""
        return any(c != 0 for c in self.coefficients.values())

    def frame_records(self) -> list[dict[str, Any]]:
        """One row per trait: layer, projection, z, target, adjustment, coefficient."""
        return [
            {
                "turn": self.turn,
                "trait": t,
                "layer": self.layers[t],
                "projection": self.projections[t],
                "z": self.z[t],
                "target": self.target.get(t, math.nan),
                "adjustment": self.adjustments[t],
                "coeff": self.coefficients[t],
            }
            for t in self.layers
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as ``None``), without the conversation the turn answered."""
        out = super().to_dict()
        del out["conversation"]
        return out


@dataclass(frozen=True)
class DynamicChat(Result):
    """A scripted multi-turn run: the turns and the whole transcript (replies included)."""

    turns: tuple[TurnResult, ...]
    messages: list[Message]

    def __len__(self) -> int:
        return len(self.turns)

    def frame_records(self) -> list[dict[str, Any]]:
        """One row per turn: user, reply, and per trait ``coeff_``/``projection_``/``z_``/``target_``."""
        rows = []
        for t in self.turns:
            row: dict[str, Any] = {
                "turn": t.turn,
                "user": t.user,
                "reply": t.reply,
                "policy": t.policy,
                "rationale": t.rationale,
            }
            for trait in t.layers:
                row[f"coeff_{trait}"] = t.coefficients[trait]
                row[f"adjustment_{trait}"] = t.adjustments[trait]
                row[f"projection_{trait}"] = t.projections[trait]
                row[f"z_{trait}"] = t.z[trait]
                row[f"target_{trait}"] = t.target.get(trait, math.nan)
            rows.append(row)
        return rows

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: each turn as :meth:`TurnResult.to_dict` and the whole transcript."""
        return {"turns": [t.to_dict() for t in self.turns], "messages": json_safe(self.messages)}

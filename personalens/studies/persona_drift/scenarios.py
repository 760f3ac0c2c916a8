"""Drift scenarios: multi-turn conversations of one *kind* (emotional disclosure, meta-reflection
about the model, bounded tasks), shipped in ``personalens/data/drift_scenarios/<kind>.json``.

A scenario file holds ``kind``, ``description``, ``simulated_user`` (the instructions an
LLM-simulated user follows) and ``conversations``: each a ``name``, a short ``brief`` for the
simulated user, and the scripted user ``turns``. Offline the scripted turns are the user; with
an LLM user only the first turn is scripted (:mod:`~personalens.studies.persona_drift.simulated_user`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from personalens._data import load_file_or_shipped, shipped_names
from personalens.errors import PersonaLensError

__all__ = ["DriftScenario", "list_drift_kinds", "load_drift_scenarios"]

KIND = "drift_scenarios"


@dataclass(frozen=True)
class DriftScenario:
    """One conversation of a scenario kind: its scripted user turns and how to simulate it."""

    kind: str
    name: str
    turns: tuple[str, ...]
    brief: str = ""
    simulated_user: str = ""

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.name}"


def list_drift_kinds() -> list[str]:
    """The shipped scenario kinds."""
    return shipped_names(KIND)


def _load_kind_file(path: Path) -> list[DriftScenario]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        kind = str(data["kind"])
        user = str(data.get("simulated_user", ""))
        out = [
            DriftScenario(
                kind=kind,
                name=str(c["name"]),
                turns=tuple(str(t) for t in c["turns"]),
                brief=str(c.get("brief", "")),
                simulated_user=user,
            )
            for c in data["conversations"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PersonaLensError(
            f"{path} is not a drift scenario file ({exc}): it needs 'kind' and 'conversations', "
            "each with a 'name' and a list of user 'turns' (see personalens/data/drift_scenarios)"
        ) from None
    if not out or any(not s.turns for s in out):
        raise PersonaLensError(f"{path}: every conversation needs at least one user turn")
    return out


def _unknown(name: str, known: str) -> PersonaLensError:
    return PersonaLensError(
        f"unknown drift scenario kind {name!r}: the shipped kinds are {known}; or pass the path "
        "of a scenario .json file"
    )


def load_drift_scenarios(
    kinds: Sequence[str | Path] | None = None,
    *,
    max_conversations: int | None = None,
    max_turns: int | None = None,
) -> list[DriftScenario]:
    """Scenarios of ``kinds`` (shipped kind names or file paths; default every shipped kind),
    at most ``max_conversations`` per kind and ``max_turns`` user turns each."""
    kinds = list(kinds) if kinds is not None else list_drift_kinds()
    if not kinds:
        raise PersonaLensError("no drift scenario kinds given")
    out: list[DriftScenario] = []
    for kind in kinds:
        scenarios = load_file_or_shipped(KIND, kind, _load_kind_file, _unknown)
        if max_conversations is not None:
            scenarios = scenarios[:max_conversations]
        if max_turns is not None:
            scenarios = [replace(s, turns=s.turns[:max_turns]) for s in scenarios]
        out.extend(scenarios)
    keys = [s.key for s in out]
    if len(set(keys)) != len(keys):
        raise PersonaLensError(f"drift scenarios repeat a kind/name: {sorted(keys)}")
    return out

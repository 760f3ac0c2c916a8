"""Scenario files for the ranking study: their format, the validated :class:`ScenarioSet`, and
loading (the shipped set is ``"persona_shifts"``).

A **scenario file** is JSON (:func:`load_scenarios`)::

    {
      "name": "persona_shifts",
      "description": "...",                          # optional
      "license": "...",                              # optional provenance note
      "traits": ["outgoing", "compassionate", ...],  # optional: the traits targets may name
      "scenarios": [
        {"id": "party-then-bad-news",                # letters, digits, - _ . ; unique
         "description": "What the scenario tests",
         "system": "You are a helpful assistant.",   # optional
         "turns": [
           {"user": "Help me plan a birthday party!", "target": {"outgoing": 1.0}},
           {"user": "...", "assistant": "A scripted reply."},   # context only: not generated/judged
           {"user": "My grandmother just died.", "target": {"compassionate": 1.0, "outgoing": -0.5}}
         ]}
      ]
    }

A turn with ``"assistant"`` is scripted context: both arms see that reply and nothing is
generated or judged for it (it has no ``"target"``). Every other turn is *generated*: it needs a
``"target"`` (``{trait: level in [-1, 1]}``, ``{}`` for no particular persona) and produces one
comparison. Every scenario needs at least one generated turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalens._data import load_file_or_shipped, shipped_names
from personalens._io import digest
from personalens._validate import Fields, file_head, load_json_file
from personalens.errors import PersonaLensError

__all__ = [
    "Scenario",
    "ScenarioFileError",
    "ScenarioSet",
    "ScenarioTurn",
    "list_scenario_sets",
    "load_scenario_file",
    "load_scenarios",
    "parse_scenarios",
]

FILE_KEYS = ("name", "description", "license", "traits", "scenarios")
SCENARIO_KEYS = ("id", "description", "system", "turns")
TURN_KEYS = ("user", "target", "assistant")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class ScenarioFileError(PersonaLensError):
    """A scenario file is malformed (missing key, bad target, duplicate id, ...)."""


# ----------------------------------------------------------------------------- the format


@dataclass(frozen=True)
class ScenarioTurn:
    """A user message and either a target persona (generated turn) or a scripted reply."""

    user: str
    target: dict[str, float] | None = None
    assistant: str | None = None

    @property
    def generated(self) -> bool:
        return self.assistant is None


@dataclass(frozen=True)
class Scenario:
    id: str
    description: str
    turns: tuple[ScenarioTurn, ...]
    system: str | None = None

    @property
    def traits(self) -> set[str]:
        """Every trait a turn's target names."""
        return {t for turn in self.turns if turn.target for t in turn.target}

    def to_dict(self) -> dict[str, Any]:
        turns = []
        for t in self.turns:
            d: dict[str, Any] = {"user": t.user}
            if t.assistant is not None:
                d["assistant"] = t.assistant
            else:
                d["target"] = t.target
            turns.append(d)
        out: dict[str, Any] = {"id": self.id, "description": self.description}
        if self.system is not None:
            out["system"] = self.system
        out["turns"] = turns
        return out


@dataclass(frozen=True)
class ScenarioSet:
    """A validated set of scenarios; build one with :func:`load_scenarios`."""

    name: str
    scenarios: tuple[Scenario, ...]
    description: str = ""
    license: str = ""
    traits: tuple[str, ...] | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.scenarios)

    def __iter__(self):
        return iter(self.scenarios)

    @property
    def n_comparisons(self) -> int:
        return sum(t.generated for s in self.scenarios for t in s.turns)

    def used_traits(self) -> set[str]:
        return set().union(*(s.traits for s in self.scenarios))

    def restrict(self, traits: Sequence[str]) -> ScenarioSet:
        """The scenarios whose targets name only ``traits`` (e.g. the traits you have vectors for)."""
        keep = tuple(s for s in self.scenarios if s.traits <= set(traits))
        if not keep:
            raise PersonaLensError(
                f"no scenario of {self.name!r} uses only the traits {sorted(traits)}; "
                f"its scenarios use {sorted(self.used_traits())}"
            )
        return ScenarioSet(
            self.name, keep, self.description, self.license, self.traits, self.source
        )

    def to_dict(self) -> dict[str, Any]:
        out = file_head(self.name, self.description, self.license)
        if self.traits is not None:
            out["traits"] = list(self.traits)
        out["scenarios"] = [s.to_dict() for s in self.scenarios]
        return out

    def sha256(self) -> str:
        return digest(json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False))


# ----------------------------------------------------------------------------- validation


def _target(value: Any, fields: Fields, traits: tuple[str, ...] | None) -> dict[str, float]:
    fields.mapping(value, "target", " {trait: level in [-1, 1]} ({} for no particular persona)")
    out = {}
    for trait, level in value.items():
        if not isinstance(trait, str) or not trait.strip():
            raise fields.fail("target", "names a trait with an empty name")
        if traits is not None and trait not in traits:
            raise fields.fail(
                "target",
                f"names trait {trait!r}, which is not in the file's 'traits' {list(traits)}",
            )
        out[trait] = fields.number(
            level, f"target.{trait}", -1, 1, " (-1: suppress the trait, +1: express it strongly)"
        )
    return out


def _turn(t: Any, fields: Fields, traits: tuple[str, ...] | None) -> ScenarioTurn:
    fields.known(t, TURN_KEYS)
    user = fields.text(t.get("user"), "user")
    if "assistant" in t:
        if "target" in t:
            raise fields.fail(
                None,
                "a scripted turn ('assistant') is context only and takes no 'target'; drop one "
                "of them",
            )
        return ScenarioTurn(user, None, fields.text(t["assistant"], "assistant"))
    if "target" not in t:
        raise fields.fail(
            None,
            "a generated turn needs a 'target' ({} for no particular persona), or give a "
            "scripted 'assistant' reply",
        )
    return ScenarioTurn(user, _target(t["target"], fields, traits))


def _scenario(
    s: Any, i: int, fields: Fields, seen: set[str], traits: tuple[str, ...] | None
) -> Scenario:
    fields.mapping(s, f"scenarios[{i}]")
    at = fields.at(f"{fields.where}, scenario {i}")
    at.known(s, SCENARIO_KEYS)
    sid = at.text(s.get("id"), "id")
    if not _ID.match(sid):
        raise at.fail("id", f"is {sid!r}; ids may hold only letters, digits, '-', '_' and '.'")
    if sid in seen:
        raise at.fail(None, f"duplicate id {sid!r}; ids must be unique")
    seen.add(sid)
    at = fields.at(f"{fields.where}, scenario {sid!r}")
    description = at.text(s.get("description"), "description")
    system = s.get("system")
    if system is not None:
        system = at.text(system, "system")
    turns = []
    for j, t in enumerate(at.nonempty_list(s.get("turns"), "turns")):
        at.mapping(t, f"turns[{j}]")
        turns.append(_turn(t, at.at(f"{at.where}, turn {j}"), traits))
    if not any(t.generated for t in turns):
        raise at.fail(
            None,
            "every turn is scripted; at least one turn needs a 'target' to be generated and "
            "compared",
        )
    return Scenario(sid, description, tuple(turns), system)


def parse_scenarios(data: Any, source: str = "<dict>") -> ScenarioSet:
    """Validate a scenario-file dict; errors name the file, the scenario, the turn and the key."""
    fields = Fields(ScenarioFileError, f"scenario file {source}")
    fields.mapping(data)
    fields.known(data, FILE_KEYS)
    name = fields.text(data.get("name"), "name")
    traits = data.get("traits")
    if traits is not None:
        traits = fields.string_list(traits, "traits", distinct=True)
    description = fields.optional_text(data, "description")
    license_ = fields.optional_text(data, "license")
    seen: set[str] = set()
    scenarios = [
        _scenario(s, i, fields, seen, traits)
        for i, s in enumerate(fields.nonempty_list(data.get("scenarios"), "scenarios"))
    ]
    return ScenarioSet(
        name=name,
        scenarios=tuple(scenarios),
        description=description,
        license=license_,
        traits=traits,
        source=source,
    )


# ----------------------------------------------------------------------------- loading


def list_scenario_sets() -> list[str]:
    """Names of the scenario sets shipped with personalens."""
    return shipped_names("scenarios")


def load_scenario_file(path: str | Path) -> ScenarioSet:
    """A scenario set from a JSON file, validated."""
    path = Path(path)
    data = load_json_file(path, ScenarioFileError, "scenario file")
    return parse_scenarios(data, source=str(path))


def load_scenarios(path_or_name: str | Path | ScenarioSet = "persona_shifts") -> ScenarioSet:
    """A shipped scenario set by name (``"persona_shifts"``) or a scenario file by path."""
    if isinstance(path_or_name, ScenarioSet):
        return path_or_name
    return load_file_or_shipped(
        "scenarios",
        path_or_name,
        load_scenario_file,
        lambda name, shipped: ScenarioFileError(
            f"unknown scenario set {name!r}. Shipped: {shipped}. Pass the path of a scenario "
            "JSON file instead."
        ),
    )

"""The user side of a drift conversation: scripted turns, or an LLM playing the user.

:class:`ScriptedUser` returns the scenario's own turns (offline, reproducible).
:class:`SimulatedUser` asks an OpenAI-compatible chat model (the judge's endpoint and key,
:class:`~personalens.judges.openai_client.APIConfig`) for the next user message given the
conversation so far, with the roles swapped so that the model under study is its "user". The
first turn is always the scripted opening. Only :mod:`personalens.judges.openai_client` talks
to the API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from personalens.errors import PersonaLensError
from personalens.judges.openai_client import APIConfig, create_chat_completion, make_client
from personalens.model.chat import Message
from personalens.studies.persona_drift.scenarios import DriftScenario

__all__ = ["ScriptedUser", "SimulatedUser", "User", "make_user"]


@runtime_checkable
class User(Protocol):
    """Says the user's message of turn ``turn`` (0-based) given the history so far."""

    name: str

    def message(self, scenario: DriftScenario, turn: int, history: Sequence[Message]) -> str: ...


class ScriptedUser:
    """The scenario's scripted turns."""

    name = "scripted"

    def message(self, scenario: DriftScenario, turn: int, history: Sequence[Message]) -> str:
        return scenario.turns[turn]


def _swapped(history: Sequence[Message]) -> list[dict[str, str]]:
    """The conversation from the simulated user's side: the model's replies are its "user"."""
    swap = {"user": "assistant", "assistant": "user"}
    return [
        {"role": swap[m["role"]], "content": m["content"]} for m in history if m["role"] in swap
    ]


class SimulatedUser:
    """An LLM playing the user (``config``: default :meth:`APIConfig.from_env`)."""

    def __init__(self, config: APIConfig | None = None, temperature: float = 0.7) -> None:
        self.config = config or APIConfig.from_env()
        self.temperature = float(temperature)
        self._client: Any = None
        self.name = f"llm:{self.config.model}"

    def message(self, scenario: DriftScenario, turn: int, history: Sequence[Message]) -> str:
        if turn == 0:
            return scenario.turns[0]
        if self._client is None:
            self._client = make_client(self.config)
        system = (
            f"{scenario.simulated_user}\nYour situation: {scenario.brief}.\n"
            f"This is message {turn + 1} of about {len(scenario.turns)}."
        )
        response = create_chat_completion(
            self._client,
            self.config,
            model=self.config.model,
            messages=[{"role": "system", "content": system}, *_swapped(history)],
            temperature=self.temperature,
            max_tokens=120,
        )
        text = (response.choices[0].message.content or "").strip()
        if not text:
            raise PersonaLensError(
                f"the simulated user ({self.name}) sent an empty message at turn {turn} of "
                f"{scenario.key}; rerun (the run directory resumes) or use user='scripted'"
            )
        return text


def make_user(user: str | User) -> User:
    """``"scripted"``, ``"llm"`` (an OpenAI-compatible API from the environment) or a
    :class:`User`."""
    if not isinstance(user, str):
        return user
    if user == "scripted":
        return ScriptedUser()
    if user == "llm":
        return SimulatedUser()
    raise PersonaLensError(f"unknown user {user!r}: use 'scripted', 'llm' or a User object")

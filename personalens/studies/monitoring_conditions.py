"""Prompt conditions of the monitoring experiment, from trait-suppressing to trait-promoting.

* a **system-prompt spectrum** (:func:`system_prompt_spectrum`): the trait's suppressing
  instructions, "You are a <opposite> assistant.", no system prompt, "You are a <trait>
  assistant.", and the trait's promoting instructions;
* **many-shot prompts** (:func:`many_shot_conditions`): 0, 5, 10, 15, 20 earlier user/assistant
  turns whose replies display the trait (:func:`trait_examples` takes them from an extraction
  run: the positive side's highest-scored replies to *extraction* questions).

:func:`personalens.studies.monitoring_experiment.monitoring_experiment` runs them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from personalens.errors import PersonaLensError
from personalens.judges.base import is_scored
from personalens.model.chat import Message, as_conversation
from personalens.runs.sharding import read_run_log

if TYPE_CHECKING:
    from personalens.extraction.traits import Trait

__all__ = ["MonitorCondition", "many_shot_conditions", "system_prompt_spectrum", "trait_examples"]


@dataclass(frozen=True)
class MonitorCondition:
    """A way of prompting: ``system`` (or none) and earlier ``history`` turns before the question.

    ``kind`` groups conditions (``"system"``, ``"many_shot"``); ``level`` orders them from
    trait-suppressing (negative) to trait-promoting (positive; the shot count for many-shot).
    """

    name: str
    kind: str
    level: float
    system: str | None = None
    history: tuple[Message, ...] = ()

    def conversation(self, question: str) -> list[Message]:
        messages: list[Message] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.extend(dict(m) for m in self.history)
        messages.append({"role": "user", "content": question})
        return as_conversation(messages)


def system_prompt_spectrum(trait: Trait, pairs: int = 2) -> list[MonitorCondition]:
    """Conditions from trait-suppressing to trait-promoting system prompts.

    Levels: -2 the trait's negative instructions (first ``pairs`` pairs), -1 "You are a <neg>
    assistant.", 0 no system prompt (the chat template's default), +1 "You are a <pos>
    assistant.", +2 the positive instructions. Without ``assistant_names`` the ±1 levels are
    left out.
    """
    if pairs < 1:
        raise PersonaLensError("pairs must be >= 1")
    k = min(pairs, trait.n_pairs)
    names = trait.assistant_names or {}
    out = [
        MonitorCondition(f"neg instruction {i}", "system", -2.0, trait.system_prompt(i, "neg"))
        for i in range(k)
    ]

    def role(side: str) -> str:
        name = names[side]
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"You are {article} {name} assistant."

    if names.get("neg"):
        out.append(MonitorCondition(f"{names['neg']} assistant", "system", -1.0, role("neg")))
    out.append(MonitorCondition("no system prompt", "system", 0.0, None))
    if names.get("pos"):
        out.append(MonitorCondition(f"{names['pos']} assistant", "system", 1.0, role("pos")))
    out += [
        MonitorCondition(f"pos instruction {i}", "system", 2.0, trait.system_prompt(i, "pos"))
        for i in range(k)
    ]
    return out


def trait_examples(
    run_dir: str | Path, n: int = 20, *, min_coherence: float = 50.0
) -> list[tuple[str, str]]:
    """(question, reply) pairs that display the trait, from an extraction run directory.

    The positive side's replies to extraction questions (never the held-out evaluation
    questions), coherent ones only, highest trait score first, one per question while enough
    distinct questions exist.
    """
    run = Path(run_dir)
    responses = read_run_log(run / "responses.jsonl")
    scores = {r["key"]: r for r in read_run_log(run / "judge_scores.jsonl", prefer=is_scored)}
    if not responses or not scores:
        raise PersonaLensError(
            f"{run} has no responses.jsonl/judge_scores.jsonl: give an extraction run directory "
            "(personalens extract --out DIR)"
        )
    cands = []
    for r in responses:
        s = scores.get(r["key"])
        if r.get("side") != "pos" or r.get("split", "extract") != "extract" or s is None:
            continue
        if s.get("trait") is None or (s.get("coherence") or 0.0) < min_coherence:
            continue
        if not r.get("response", "").strip():
            continue
        cands.append((float(s["trait"]), r["key"], r["question"], r["response"]))
    cands.sort(key=lambda c: (-c[0], c[1]))
    picked, seen = [], set()
    for _, _, q, a in cands:  # distinct questions first
        if q not in seen:
            picked.append((q, a))
            seen.add(q)
    for _, _, q, a in cands:  # then more replies to the same questions
        if len(picked) >= n:
            break
        if (q, a) not in picked:
            picked.append((q, a))
    if len(picked) < n:
        raise PersonaLensError(
            f"{run} has only {len(picked)} coherent positive-side replies, fewer than the {n} "
            "examples asked for: lower n or min_coherence, or extract with more samples"
        )
    return picked[:n]


def many_shot_conditions(
    examples: Sequence[tuple[str, str]], counts: Sequence[int] = (0, 5, 10, 15, 20)
) -> list[MonitorCondition]:
    """One condition per shot count: the first ``k`` examples as earlier user/assistant turns."""
    out = []
    for k in counts:
        if k < 0 or k > len(examples):
            raise PersonaLensError(f"{k} shots asked for but {len(examples)} examples given")
        history = tuple(
            m
            for q, a in examples[:k]
            for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
        )
        out.append(MonitorCondition(f"{k}-shot", "many_shot", float(k), None, history))
    return out

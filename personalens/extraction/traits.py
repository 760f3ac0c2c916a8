"""Trait artifacts: contrastive system-prompt pairs, questions and a judge rubric.

A trait file is JSON in the Persona Vectors code's shape::

    {
      "instruction": [{"pos": "...", "neg": "..."}, ...],   # system-prompt pairs
      "questions":   ["...", ...],                          # extraction questions
      "eval_prompt": "... {question} ... {answer} ..."      # judge rubric
    }

with optional keys personalens adds: ``name``, ``description``, ``assistant_names``
(``{"pos": "evil", "neg": "helpful"}``, rendered as "You are an evil assistant." before each
instruction), ``eval_questions`` (held-out evaluation questions) and ``judge_anchors``
(``{"pos": [...], "neg": [...]}`` example replies that display the trait or its opposite, used
by the offline judge). Files in exactly the upstream shape load too; when they have no
``eval_questions``, :meth:`Trait.split_questions` holds out the last quarter of ``questions``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalens._data import load_file_or_shipped, shipped_names
from personalens._io import atomic_write_text
from personalens._validate import MISSING, Fields, load_json_file
from personalens.errors import PersonaLensError

REQUIRED = ("instruction", "questions", "eval_prompt")
OPTIONAL = ("name", "description", "assistant_names", "eval_questions", "judge_anchors")


class TraitFileError(PersonaLensError):
    """A trait file is missing a key, has a wrong type, an empty list or a bad placeholder."""


@dataclass(frozen=True)
class InstructionPair:
    pos: str
    neg: str


@dataclass(frozen=True)
class Trait:
    name: str
    instruction: tuple[InstructionPair, ...]
    questions: tuple[str, ...]
    eval_prompt: str
    description: str = ""
    assistant_names: dict[str, str] | None = None
    eval_questions: tuple[str, ...] = ()
    judge_anchors: dict[str, tuple[str, ...]] | None = None
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_pairs(self) -> int:
        return len(self.instruction)

    def system_prompt(self, pair: int, side: str) -> str:
        """The system prompt for instruction pair ``pair`` on side ``"pos"`` or ``"neg"``."""
        if side not in ("pos", "neg"):
            raise ValueError(f"side must be 'pos' or 'neg', got {side!r}")
        text = getattr(self.instruction[pair], side)
        if self.assistant_names and self.assistant_names.get(side):
            name = self.assistant_names[side]
            article = "an" if name[:1].lower() in "aeiou" else "a"
            return f"You are {article} {name} assistant. {text}"
        return text

    def split_questions(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(extraction questions, held-out evaluation questions)."""
        if self.eval_questions:
            return self.questions, self.eval_questions
        n_eval = max(1, len(self.questions) // 4)
        if len(self.questions) < 2:
            raise TraitFileError(
                f"{self.source or self.name}: needs at least 2 questions to hold some out for "
                "evaluation, or an 'eval_questions' list"
            )
        return self.questions[:-n_eval], self.questions[-n_eval:]

    def judge_prompt(self, question: str, answer: str) -> str:
        return self.eval_prompt.format(question=question, answer=answer)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.assistant_names:
            out["assistant_names"] = dict(self.assistant_names)
        out["instruction"] = [{"pos": p.pos, "neg": p.neg} for p in self.instruction]
        out["questions"] = list(self.questions)
        if self.eval_questions:
            out["eval_questions"] = list(self.eval_questions)
        out["eval_prompt"] = self.eval_prompt
        if self.judge_anchors:
            out["judge_anchors"] = {k: list(v) for k, v in self.judge_anchors.items()}
        out.update(self.extra)
        return out


# ----------------------------------------------------------------------------- validation

RUBRIC_FIELDS = ("question", "answer")
PAIR_KEYS = ("pos", "neg")


def _instruction_pairs(data: dict, fields: Fields) -> tuple[InstructionPair, ...]:
    pairs = fields.nonempty_list(
        data["instruction"], "instruction", ' of {"pos": ..., "neg": ...} objects'
    )
    out = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or set(pair) != set(PAIR_KEYS):
            # a missing side cannot be used, and another key would be dropped without a word
            got = f"keys {sorted(pair)}" if isinstance(pair, dict) else type(pair).__name__
            raise fields.fail(
                f"instruction[{i}]",
                f"must be an object with exactly the keys 'pos' and 'neg' (strings), got {got}",
            )
        out.append(
            InstructionPair(
                fields.text(pair["pos"], f"instruction[{i}].pos"),
                fields.text(pair["neg"], f"instruction[{i}].neg"),
            )
        )
    return tuple(out)


def _assistant_names(data: dict, fields: Fields) -> dict[str, str] | None:
    names = data.get("assistant_names")
    if names is None:
        return None
    if not isinstance(names, dict) or not all(
        isinstance(names.get(s), str) and names[s].strip() for s in ("pos", "neg")
    ):
        raise fields.fail(
            "assistant_names", "must be an object with non-empty 'pos' and 'neg' strings"
        )
    return dict(names) if names else None


def _judge_anchors(data: dict, fields: Fields) -> dict[str, tuple[str, ...]] | None:
    anchors = data.get("judge_anchors")
    if anchors is None:
        return None
    fields.mapping(anchors, "judge_anchors", " with 'pos' and 'neg' lists of strings")
    return {
        side: fields.string_list(anchors.get(side, MISSING), f"judge_anchors.{side}")
        for side in ("pos", "neg")
    }


def parse_trait(data: Any, source: str = "<dict>", name: str | None = None) -> Trait:
    """Validate a trait dict (upstream or personalens shape) and return a :class:`Trait`."""
    fields = Fields(TraitFileError, f"trait file {source}")
    fields.mapping(data)
    fields.require(data, REQUIRED)
    instruction = _instruction_pairs(data, fields)
    questions = fields.string_list(data["questions"], "questions")
    eval_questions = fields.string_list(
        data.get("eval_questions", MISSING), "eval_questions", required=False
    )
    overlap = set(questions) & set(eval_questions)
    if overlap:
        raise fields.fail(
            "eval_questions",
            f"repeats extraction question(s) {sorted(overlap)[:3]}; held-out questions must differ",
        )
    rubric = fields.template(
        data["eval_prompt"],
        "eval_prompt",
        RUBRIC_FIELDS,
        RUBRIC_FIELDS,
        stray="unmatched",
        stray_hint="only {question} and {answer} are filled in (write literal braces as {{ }})",
        missing_hint="the judge needs it",
    )
    names = _assistant_names(data, fields)
    anchors = _judge_anchors(data, fields)
    description = fields.optional_text(data, "description")
    trait_name = fields.text(
        data.get("name") or name, "name", " (or name the file after the trait)"
    )
    extra = {k: v for k, v in data.items() if k not in REQUIRED + OPTIONAL}
    return Trait(
        name=trait_name,
        instruction=instruction,
        questions=questions,
        eval_prompt=rubric,
        description=description,
        assistant_names=names,
        eval_questions=eval_questions,
        judge_anchors=anchors,
        source=source,
        extra=extra,
    )


def load_trait_file(path: str | Path) -> Trait:
    """Load and validate a trait JSON file; errors name the file and the key."""
    path = Path(path)
    data = load_json_file(path, TraitFileError, "trait file")
    return parse_trait(data, source=str(path), name=path.stem)


# ----------------------------------------------------------------------------- shipped traits


def list_traits() -> list[str]:
    """Names of the trait artifacts shipped with personalens."""
    return shipped_names("traits")


def load_trait(name_or_path: str | Path) -> Trait:
    """A shipped trait by name (``"evil"``) or a trait file by path."""
    return load_file_or_shipped(
        "traits",
        name_or_path,
        load_trait_file,
        lambda name, shipped: TraitFileError(
            f"unknown trait {name!r}. Shipped traits: {shipped}. Pass a trait file path with "
            "--trait-file, or write one with `personalens traits new NAME --description ...`."
        ),
    )


def save_trait(trait: Trait | dict, path: str | Path) -> Path:
    """Validate and write a trait file atomically."""
    data = trait.to_dict() if isinstance(trait, Trait) else trait
    parse_trait(data, source=str(path), name=Path(path).stem)
    return atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")

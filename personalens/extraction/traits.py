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
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalens._data import load_file_or_shipped, shipped_names
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


def _fail(source: str, key: str, problem: str) -> TraitFileError:
    return TraitFileError(f"trait file {source}: key '{key}' {problem}")


def _string_list(data: dict, key: str, source: str, *, required: bool) -> tuple[str, ...]:
    if key not in data:
        if required:
            raise _fail(source, key, "is missing; it must be a non-empty list of strings")
        return ()
    value = data[key]
    if not isinstance(value, list):
        raise _fail(source, key, f"must be a list of strings, got {type(value).__name__}")
    if not value:
        raise _fail(source, key, "is an empty list; give at least one string")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _fail(source, f"{key}[{i}]", "must be a non-empty string")
    return tuple(value)


def _check_rubric(rubric: Any, source: str) -> str:
    if not isinstance(rubric, str) or not rubric.strip():
        raise _fail(source, "eval_prompt", "must be a non-empty string")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(rubric) if f is not None]
    except ValueError as exc:
        raise _fail(
            source,
            "eval_prompt",
            f"is not a valid format string ({exc}); write literal braces as {{{{ }}}}",
        ) from None
    unknown = sorted({f for f in fields if f not in ("question", "answer")})
    if unknown:
        raise _fail(
            source,
            "eval_prompt",
            f"has unmatched placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; "
            "only {question} and {answer} are filled in (write literal braces as {{ }})",
        )
    for needed in ("question", "answer"):
        if needed not in fields:
            raise _fail(
                source, "eval_prompt", f"has no {{{needed}}} placeholder; the judge needs it"
            )
    return rubric


def parse_trait(data: Any, source: str = "<dict>", name: str | None = None) -> Trait:
    """Validate a trait dict (upstream or personalens shape) and return a :class:`Trait`."""
    if not isinstance(data, dict):
        raise TraitFileError(
            f"trait file {source}: must hold a JSON object, got {type(data).__name__}"
        )
    for key in REQUIRED:
        if key not in data:
            raise _fail(
                source, key, "is missing (required keys: instruction, questions, eval_prompt)"
            )

    pairs = data["instruction"]
    if not isinstance(pairs, list) or not pairs:
        raise _fail(
            source, "instruction", 'must be a non-empty list of {"pos": ..., "neg": ...} objects'
        )
    instruction = []
    for i, pair in enumerate(pairs):
        if not isinstance(pair, dict) or set(pair) < {"pos", "neg"}:
            raise _fail(
                source, f"instruction[{i}]", "must be an object with 'pos' and 'neg' strings"
            )
        for side in ("pos", "neg"):
            if not isinstance(pair[side], str) or not pair[side].strip():
                raise _fail(source, f"instruction[{i}].{side}", "must be a non-empty string")
        instruction.append(InstructionPair(pair["pos"], pair["neg"]))

    questions = _string_list(data, "questions", source, required=True)
    eval_questions = _string_list(data, "eval_questions", source, required=False)
    overlap = set(questions) & set(eval_questions)
    if overlap:
        raise _fail(
            source,
            "eval_questions",
            f"repeats extraction question(s) {sorted(overlap)[:3]}; held-out questions must differ",
        )
    rubric = _check_rubric(data["eval_prompt"], source)

    names = data.get("assistant_names")
    if names is not None:
        if not isinstance(names, dict) or not all(
            isinstance(names.get(s), str) and names[s].strip() for s in ("pos", "neg")
        ):
            raise _fail(
                source,
                "assistant_names",
                "must be an object with non-empty 'pos' and 'neg' strings",
            )
    anchors = data.get("judge_anchors")
    parsed_anchors = None
    if anchors is not None:
        if not isinstance(anchors, dict):
            raise _fail(
                source, "judge_anchors", "must be an object with 'pos' and 'neg' lists of strings"
            )
        parsed_anchors = {
            side: _string_list(anchors, side, f"{source} judge_anchors", required=True)
            for side in ("pos", "neg")
        }
    description = data.get("description", "")
    if not isinstance(description, str):
        raise _fail(source, "description", "must be a string")
    trait_name = data.get("name") or name
    if not isinstance(trait_name, str) or not trait_name.strip():
        raise _fail(source, "name", "must be a non-empty string (or name the file after the trait)")
    extra = {k: v for k, v in data.items() if k not in REQUIRED + OPTIONAL}
    return Trait(
        name=trait_name,
        instruction=tuple(instruction),
        questions=questions,
        eval_prompt=rubric,
        description=description,
        assistant_names=dict(names) if names else None,
        eval_questions=eval_questions,
        judge_anchors=parsed_anchors,
        source=source,
        extra=extra,
    )


def load_trait_file(path: str | Path) -> Trait:
    """Load and validate a trait JSON file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise TraitFileError(f"trait file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TraitFileError(f"trait file {path}: not valid JSON ({exc})") from None
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
    from personalens._io import atomic_write_text

    data = trait.to_dict() if isinstance(trait, Trait) else trait
    parse_trait(data, source=str(path), name=Path(path).stem)
    return atomic_write_text(Path(path), json.dumps(data, indent=2, ensure_ascii=False) + "\n")

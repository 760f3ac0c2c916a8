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
by the offline judge).

Upstream files
--------------
A file with none of those optional keys is read as a file of the Persona Vectors code
(safety-research/persona_vectors, ``data_generation/trait_data_extract/<trait>.json``), and
personalens builds its prompts and its held-out split as that code does:

* **System prompts.** Upstream's ``eval_persona.load_persona_questions`` writes
  ``f"You are {a_or_an(name)} {name} assistant. {instruction}"`` with ``name`` the trait (the
  file name) on the positive side and ``"helpful"`` on the negative side, ``"an"`` before a
  vowel. An upstream-shaped trait therefore gets ``assistant_names = {"pos": <name>, "neg":
  "helpful"}`` (:func:`upstream_assistant_names`); ``to_dict`` writes them out, so a saved
  copy renders the same prompts.
* **Held-out questions.** Upstream evaluates on the separate
  ``data_generation/trait_data_eval/<trait>.json``. :func:`load_trait_file` reads the
  ``questions`` of that file as ``eval_questions``: the file given as ``eval_file``, else the
  one at ``../trait_data_eval/<same name>.json`` next to the extraction file (upstream's
  layout). Without either it warns (once per file) and :meth:`Trait.split_questions` holds out
  the last quarter of ``questions``, as for any file without ``eval_questions``.

Files with any personalens key (all shipped traits) are unchanged by these rules: no
``assistant_names`` means the bare instruction.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from personalens._data import load_file_or_shipped, shipped_names
from personalens._io import atomic_write_text
from personalens._validate import MISSING, Fields, load_json_file
from personalens.errors import PersonaLensError

REQUIRED = ("instruction", "questions", "eval_prompt")
OPTIONAL = ("name", "description", "assistant_names", "eval_questions", "judge_anchors")

# upstream's negative-side assistant name and folder names (data_generation/trait_data_*)
UPSTREAM_NEG_ASSISTANT = "helpful"
UPSTREAM_EVAL_DIR = "trait_data_eval"

# upstream files already warned about (once per file and process): no held-out file found
_WARNED_NO_EVAL_FILE: set[str] = set()


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


def is_upstream_shape(data: Any) -> bool:
    """True for a trait dict in the Persona Vectors code's shape: none of the keys personalens
    adds (``name``, ``description``, ``assistant_names``, ``eval_questions``,
    ``judge_anchors``)."""
    return isinstance(data, dict) and not any(key in data for key in OPTIONAL)


def upstream_assistant_names(trait_name: str) -> dict[str, str]:
    """The assistant names the Persona Vectors code uses when a trait names none: the trait on
    the positive side, ``"helpful"`` on the negative side."""
    return {"pos": trait_name, "neg": UPSTREAM_NEG_ASSISTANT}


def _check_held_out(
    questions: tuple[str, ...], held_out: tuple[str, ...], fields: Fields, key: str
) -> None:
    overlap = set(questions) & set(held_out)
    if overlap:
        raise fields.fail(
            key,
            f"repeats extraction question(s) {sorted(overlap)[:3]}; held-out questions must differ",
        )


def _held_out_questions(
    held_out: Any, source: str, data: dict, questions: tuple[str, ...], fields: Fields
) -> tuple[str, ...]:
    """The ``questions`` of an upstream evaluation file (``trait_data_eval/<trait>.json``)."""
    if "eval_questions" in data:
        raise fields.fail(
            "eval_questions",
            f"is given twice: in the trait file and as the evaluation file {source}; keep one",
        )
    held = Fields(TraitFileError, f"evaluation file {source}")
    held.mapping(held_out)
    held.require(held_out, ("questions",))
    eval_questions = held.string_list(held_out["questions"], "questions")
    _check_held_out(questions, eval_questions, held, "questions")
    rubric = held_out.get("eval_prompt")
    if rubric is not None and rubric != data.get("eval_prompt"):
        warnings.warn(
            f"evaluation file {source} has another eval_prompt than {fields.where}; personalens "
            "judges both splits with the trait file's.",
            stacklevel=2,
        )
    return eval_questions


def parse_trait(
    data: Any,
    source: str = "<dict>",
    name: str | None = None,
    *,
    held_out: Any = None,
    held_out_source: str = "<dict>",
) -> Trait:
    """Validate a trait dict (upstream or personalens shape) and return a :class:`Trait`.

    An upstream-shaped dict (:func:`is_upstream_shape`) gets upstream's default
    :func:`upstream_assistant_names`. ``held_out``: the dict of an upstream evaluation file
    (``trait_data_eval/<trait>.json``, named ``held_out_source`` in errors); its ``questions``
    become the ``eval_questions``.
    """
    fields = Fields(TraitFileError, f"trait file {source}")
    fields.mapping(data)
    fields.require(data, REQUIRED)
    upstream = is_upstream_shape(data)
    instruction = _instruction_pairs(data, fields)
    questions = fields.string_list(data["questions"], "questions")
    if held_out is not None:
        eval_questions = _held_out_questions(held_out, held_out_source, data, questions, fields)
    else:
        eval_questions = fields.string_list(
            data.get("eval_questions", MISSING), "eval_questions", required=False
        )
        _check_held_out(questions, eval_questions, fields, "eval_questions")
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
    if upstream:
        names = upstream_assistant_names(trait_name)
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


def upstream_eval_file(path: str | Path) -> Path | None:
    """``../trait_data_eval/<same name>.json`` next to an upstream extraction file (upstream's
    ``data_generation/trait_data_extract/<trait>.json`` layout), or None if it is not there."""
    path = Path(path).absolute()
    candidate = path.parent.parent / UPSTREAM_EVAL_DIR / path.name
    if candidate.is_file() and candidate.resolve() != path.resolve():
        return candidate
    return None


def load_trait_file(path: str | Path, eval_file: str | Path | None = None) -> Trait:
    """Load and validate a trait JSON file; errors name the file and the key.

    ``eval_file``: an upstream evaluation file (``trait_data_eval/<trait>.json``) whose
    ``questions`` become the held-out ``eval_questions``. For an upstream-shaped file it
    defaults to :func:`upstream_eval_file`; when there is none, a warning (once per file) says
    that the last quarter of ``questions`` is held out instead.
    """
    path = Path(path)
    data = load_json_file(path, TraitFileError, "trait file")
    missing_eval = False
    if eval_file is None and is_upstream_shape(data):
        eval_file = upstream_eval_file(path)
        missing_eval = eval_file is None
    held_out = None
    if eval_file is not None:
        held_out = load_json_file(eval_file, TraitFileError, "evaluation file")
    trait = parse_trait(
        data, source=str(path), name=path.stem, held_out=held_out, held_out_source=str(eval_file)
    )
    if missing_eval and str(path.absolute()) not in _WARNED_NO_EVAL_FILE:
        _WARNED_NO_EVAL_FILE.add(str(path.absolute()))
        n_eval = max(1, len(trait.questions) // 4)
        warnings.warn(
            f"{path} is a Persona Vectors trait file without its held-out questions: there is no "
            f"../{UPSTREAM_EVAL_DIR}/{path.name} next to it. The Persona Vectors code evaluates "
            "on that separate file; personalens holds out the last quarter of this file's "
            f"questions ({n_eval} of {len(trait.questions)}) instead. For upstream's split, pass "
            "eval_file= or keep upstream's layout (trait_data_extract/ and trait_data_eval/ side "
            "by side).",
            stacklevel=2,
        )
    return trait


# ----------------------------------------------------------------------------- shipped traits


def list_traits() -> list[str]:
    """Names of the trait artifacts shipped with personalens."""
    return shipped_names("traits")


def load_trait(name_or_path: str | Path, eval_file: str | Path | None = None) -> Trait:
    """A shipped trait by name (``"evil"``) or a trait file by path (``eval_file``: see
    :func:`load_trait_file`)."""
    return load_file_or_shipped(
        "traits",
        name_or_path,
        lambda path: load_trait_file(path, eval_file=eval_file),
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

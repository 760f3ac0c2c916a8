"""Role files: the character archetypes of the persona space, their default, and the shared
extraction questions.

A role file is JSON in the shape of the Assistant Axis code (safety-research/assistant-axis,
``data/roles/instructions/<role>.json``), the trait-file shape with positive instructions only::

    {
      "instruction": [{"pos": "You are a dragon ..."}, ...],   # system prompts (5 upstream)
      "eval_prompt": "... {question} ... {answer} ... 0 ... 3"   # role-adherence rubric (0-3)
      "questions":   ["...", ...]                               # optional, role-specific
    }

with optional keys personalens adds: ``name``, ``description`` and ``category`` (helper,
creative, historical, fantastical, nonhuman, persona). The role's name is the file's stem. The
``default`` role (``default.json``) holds the neutral assistant system prompts (the first one
empty: no system prompt) and no rubric; ``{model_name}`` in its prompts is replaced by the
model's name, as upstream does.

personalens ships 70 roles of its own writing and a default in ``personalens/data/roles/
instructions/``, and 40 shared questions in ``personalens/data/roles/extraction_questions.jsonl``
(one ``{"question": ..., "id": ...}`` per line, upstream's format). :func:`load_roles` takes
shipped role names, role files, or a folder of role files, such as upstream's
``data/roles/instructions``, which loads unchanged (its ``default.json`` becomes the default).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from personalens._data import shipped_names
from personalens._validate import Fields, load_json_file
from personalens.errors import PersonaLensError

DEFAULT_ROLE = "default"
ROLES_KIND = "roles/instructions"  # personalens/data/roles/instructions/<role>.json
QUESTIONS_FILE = "extraction_questions.jsonl"  # personalens/data/roles/<this>
MODEL_NAME_FIELD = "{model_name}"
OPTIONAL = ("name", "description", "category", "questions")


class RoleFileError(PersonaLensError):
    """A role file or question file is missing a key, has a wrong type or a bad rubric."""


@dataclass(frozen=True)
class Role:
    """One archetype: its system prompts, its 0-3 adherence rubric (``None`` for the default)
    and where it came from."""

    name: str
    instructions: tuple[str, ...]
    eval_prompt: str | None = None
    description: str = ""
    category: str = ""
    source: str = ""

    @property
    def is_default(self) -> bool:
        return self.name == DEFAULT_ROLE

    def system_prompt(self, index: int, model_name: str = "") -> str:
        """Instruction ``index`` with ``{model_name}`` filled in (``""``: no system prompt)."""
        return self.instructions[index].replace(MODEL_NAME_FIELD, model_name)

    def judge_prompt(self, question: str, answer: str) -> str:
        if self.eval_prompt is None:
            raise RoleFileError(f"role {self.name!r} has no eval_prompt (rubric) to judge with")
        return self.eval_prompt.format(question=question, answer=answer)


def parse_role(data: Any, name: str, source: str = "") -> Role:
    """A :class:`Role` from a role file's parsed JSON (``name``: the file's stem)."""
    fields = Fields(RoleFileError, f"role file {source or name}")
    data = fields.mapping(data)
    fields.require(data, ("instruction",))
    fields.known(data, ("instruction", "eval_prompt", *OPTIONAL))
    entries = fields.nonempty_list(data["instruction"], "instruction", of="{'pos': prompt}")
    prompts = []
    for i, entry in enumerate(entries):
        entry = fields.mapping(entry, f"instruction[{i}]", shape="{'pos': prompt}")
        fields.require(entry, ("pos",), f"instruction[{i}]")
        prompts.append(fields.optional_text(entry, "pos"))  # "" is no system prompt
    rubric = data.get("eval_prompt")
    if name != DEFAULT_ROLE or rubric is not None:
        slots = ("question", "answer")
        rubric = fields.template(rubric, "eval_prompt", allowed=slots, required=slots)
    return Role(
        name=name,
        instructions=tuple(prompts),
        eval_prompt=rubric,
        description=fields.optional_text(data, "description"),
        category=fields.optional_text(data, "category"),
        source=source,
    )


def load_role_file(path: str | Path) -> Role:
    path = Path(path)
    return parse_role(load_json_file(path, RoleFileError, "role file"), path.stem, str(path))


def shipped_roles_dir() -> Path:
    """The folder of the shipped role files (``personalens/data/roles/instructions``)."""
    return Path(str(resources.files("personalens").joinpath("data", "roles", "instructions")))


def list_roles() -> list[str]:
    """The names of the shipped roles (the default not included), sorted."""
    return [n for n in shipped_names(ROLES_KIND) if n != DEFAULT_ROLE]


def load_role(name_or_path: str | Path) -> Role:
    """A shipped role by name (``"dragon"``, ``"default"``) or a role file by path."""
    path = Path(name_or_path)
    if path.suffix == ".json" or path.is_file():
        return load_role_file(path)
    shipped = shipped_roles_dir() / f"{name_or_path}.json"
    if not shipped.is_file():
        raise RoleFileError(
            f"unknown role {str(name_or_path)!r}: give a role file (.json) or one of the shipped "
            f"roles: {', '.join(list_roles())}"
        )
    return load_role_file(shipped)


def load_roles(
    roles: str | Path | Sequence[str | Path] | None = None, max_roles: int | None = None
) -> tuple[Role, list[Role]]:
    """``(default, roles)``: the shipped roles (``None``), a folder of role files (upstream's
    ``data/roles/instructions`` loads unchanged; its ``default.json`` is the default, else the
    shipped one), or a list of role names and files. ``max_roles`` keeps the first N roles in
    name order, spread over the categories when they are the shipped ones."""
    if roles is None:
        folder: Path | None = shipped_roles_dir()
    elif isinstance(roles, str | Path) and Path(roles).is_dir():
        folder = Path(roles)
    else:
        folder = None
    if folder is not None:
        files = sorted(folder.glob("*.json"))
        if not files:
            raise RoleFileError(f"{folder} holds no role files (*.json)")
        chosen = [load_role_file(f) for f in files]
    else:
        names = [roles] if isinstance(roles, str | Path) else list(roles)
        chosen = [load_role(r) for r in names]
    default = next((r for r in chosen if r.is_default), None) or load_role(DEFAULT_ROLE)
    chosen = [r for r in chosen if not r.is_default]
    if not chosen:
        raise RoleFileError("no roles to run: give at least one role besides the default")
    if len({r.name for r in chosen}) != len(chosen):
        raise RoleFileError(f"two roles share a name: {sorted(r.name for r in chosen)}")
    if max_roles is not None and max_roles < len(chosen):
        chosen = spread(chosen, max_roles)
    return default, chosen


def spread(roles: list[Role], n: int) -> list[Role]:
    """``n`` of ``roles``, taken in turn from each category (in name order within one), so a
    small run still spans helpers through non-human roles; roles without a category form one."""
    groups: dict[str, list[Role]] = {}
    for r in sorted(roles, key=lambda r: r.name):
        groups.setdefault(r.category, []).append(r)
    out: list[Role] = []
    while len(out) < n:
        for group in groups.values():
            if group and len(out) < n:
                out.append(group.pop(0))
    return sorted(out, key=lambda r: r.name)


def load_questions(path: str | Path | None = None) -> list[str]:
    """The shared extraction questions: a ``.jsonl`` of ``{"question": ...}`` lines (upstream's
    ``extraction_questions.jsonl``), a ``.json`` list of strings, or the shipped 40."""
    if path is None:
        entry = resources.files("personalens").joinpath("data", "roles", QUESTIONS_FILE)
        text, where = entry.read_text(encoding="utf-8"), f"personalens/data/roles/{QUESTIONS_FILE}"
    else:
        where = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise RoleFileError(f"cannot read the question file {path}: {exc}") from None
    try:
        if where.endswith(".json"):
            items = json.loads(text)
        else:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        questions = [q["question"] if isinstance(q, dict) else q for q in items]
    except (ValueError, KeyError, TypeError) as exc:
        raise RoleFileError(
            f"{where} is not a question file ({type(exc).__name__}: {exc}): give a .jsonl of "
            '{"question": ...} lines or a .json list of strings'
        ) from None
    if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise RoleFileError(f"{where} holds no questions, or one that is not a non-empty string")
    return questions

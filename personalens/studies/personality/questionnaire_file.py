"""The questionnaire file: its format, the validated :class:`Questionnaire`, and loading.

A **questionnaire file** is JSON::

    {
      "name": "big_five",
      "description": "...",                       # optional
      "license": "...",                           # optional: license / provenance note
      "dimensions": ["openness", ...],            # every item belongs to one of these
      "scale": {"values": [1, 2, 3, 4, 5],
                "labels": ["strongly disagree", ..., "strongly agree"],
                "answers": ["1", "2", "3", "4", "5"]},     # optional; default str(value)
      "prompt_template": "... {item} ... {scale} ... {min} to {max} ...",
      "judge_prompt": "... {item} ... {answer} ...",       # optional (method="judge")
      "self_description_prompt": "Describe your personality in one sentence.",
                                                  # optional (method="likelihood")
      "items": [{"id": "O1", "text": "I ...", "dimension": "openness", "reverse": false}, ...]
    }

``{item}`` is required in ``prompt_template``; ``{scale}`` is rendered as one ``"1 = label"``
line per point, ``{min}``/``{max}`` as the end points. Dimension names are lowercase
identifiers (letters, digits, ``_``; starting with a letter). Scale values are increasing
integers, symmetric about their midpoint, so a reverse-keyed item's score becomes
``min + max - score``. The shipped ``big_five`` file (:func:`list_questionnaires`) holds our own
items, written for personalens; it is **not a validated instrument**. Load your own file (for
example a licensed copy of the BFI-44) with :func:`load_questionnaire`. Scoring is
:func:`personalens.studies.personality.questionnaire.score_questionnaire`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalens._data import load_file_or_shipped, shipped_names
from personalens._validate import Fields, file_head, load_json_file
from personalens.errors import PersonaLensError

SELF_DESCRIPTION_PROMPT = "Describe your personality in one sentence."

REQUIRED = ("name", "dimensions", "scale", "prompt_template", "items")
OPTIONAL = ("description", "license", "judge_prompt", "self_description_prompt")
ITEM_KEYS = ("id", "text", "dimension", "reverse")
SCALE_KEYS = ("values", "labels", "answers")
_DIMENSION_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PROMPT_FIELDS = ("item", "scale", "min", "max")
_JUDGE_FIELDS = ("item", "answer")

JUDGE_PROMPT = """An AI assistant was shown a statement about itself and asked how well it describes it. Judge how strongly the assistant's answer agrees with the statement.

[STATEMENT START]
{item}
[STATEMENT END]

[ANSWER START]
{answer}
[ANSWER END]

Rate the agreement on a scale of 0 to 100:
* 0 means the answer strongly disagrees: the statement does not describe the assistant at all.
* 50 means the answer neither agrees nor disagrees.
* 100 means the answer strongly agrees: the statement describes the assistant very well.
If the answer takes no position on the statement (a refusal, an unrelated or incoherent reply), respond with REFUSAL.
Respond with a number between 0 and 100, or REFUSAL. Don't say anything else."""


class QuestionnaireFileError(PersonaLensError):
    """A questionnaire file is malformed (missing key, unknown dimension, duplicate id, ...)."""


# ----------------------------------------------------------------------------- the format


@dataclass(frozen=True)
class LikertScale:
    """Integer scale points with labels and the answer strings the model replies with."""

    values: tuple[int, ...]
    labels: tuple[str, ...]
    answers: tuple[str, ...]

    @property
    def min(self) -> int:
        return self.values[0]

    @property
    def max(self) -> int:
        return self.values[-1]

    def reverse(self, score: float | int) -> float:
        """The score of a reverse-keyed item: ``min + max - score`` (NaN stays NaN)."""
        return float(self.min + self.max - score)

    def render(self) -> str:
        """One ``"answer = label"`` line per scale point."""
        return "\n".join(f"{a} = {lab}" for a, lab in zip(self.answers, self.labels))

    def to_dict(self) -> dict[str, Any]:
        return {
            "values": list(self.values),
            "labels": list(self.labels),
            "answers": list(self.answers),
        }


@dataclass(frozen=True)
class QuestionnaireItem:
    id: str
    text: str
    dimension: str
    reverse: bool


@dataclass(frozen=True)
class Questionnaire:
    """A validated questionnaire; build one with :func:`load_questionnaire`."""

    name: str
    dimensions: tuple[str, ...]
    scale: LikertScale
    prompt_template: str
    items: tuple[QuestionnaireItem, ...]
    description: str = ""
    license: str = ""
    judge_prompt: str = JUDGE_PROMPT
    source: str = ""
    self_description_prompt: str = SELF_DESCRIPTION_PROMPT

    def __len__(self) -> int:
        return len(self.items)

    def items_for(self, dimension: str) -> tuple[QuestionnaireItem, ...]:
        if dimension not in self.dimensions:
            raise PersonaLensError(
                f"questionnaire {self.name!r} has no dimension {dimension!r}; "
                f"its dimensions are {list(self.dimensions)}"
            )
        return tuple(it for it in self.items if it.dimension == dimension)

    def prompt(self, item: QuestionnaireItem | str) -> str:
        """The user message that presents ``item`` (an item or a statement)."""
        text = item.text if isinstance(item, QuestionnaireItem) else item
        return self.prompt_template.format(
            item=text, scale=self.scale.render(), min=self.scale.min, max=self.scale.max
        )

    def to_dict(self) -> dict[str, Any]:
        out = file_head(self.name, self.description, self.license)
        out["dimensions"] = list(self.dimensions)
        out["scale"] = self.scale.to_dict()
        out["prompt_template"] = self.prompt_template
        if self.judge_prompt != JUDGE_PROMPT:
            out["judge_prompt"] = self.judge_prompt
        if self.self_description_prompt != SELF_DESCRIPTION_PROMPT:
            out["self_description_prompt"] = self.self_description_prompt
        out["items"] = [
            {"id": it.id, "text": it.text, "dimension": it.dimension, "reverse": it.reverse}
            for it in self.items
        ]
        return out


# ----------------------------------------------------------------------------- validation


def _strings_per_value(value: Any, key: str, n: int, fields: Fields) -> list[str]:
    if not isinstance(value, list) or len(value) != n:
        raise fields.fail(key, f"must be a list of {n} strings, one per value")
    for i, text in enumerate(value):
        fields.text(text, f"{key}[{i}]")
    return value


def _scale_values(values: Any, fields: Fields) -> list[int]:
    if (
        not isinstance(values, list)
        or len(values) < 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise fields.fail("scale.values", f"must be a list of at least 2 integers, got {values!r}")
    if any(b <= a for a, b in zip(values, values[1:])):
        raise fields.fail("scale.values", f"must be strictly increasing, got {values}")
    lo, hi = values[0], values[-1]
    if sorted(lo + hi - v for v in values) != values:
        raise fields.fail(
            "scale.values",
            f"{values} is not symmetric about its midpoint, so reverse keying (min + max - "
            "score) would leave the scale; use evenly spaced points such as [1, 2, 3, 4, 5]",
        )
    return values


def _parse_scale(data: Any, fields: Fields) -> LikertScale:
    fields.mapping(data, "scale", ' {"values": [1, ...], "labels": [...], ...}')
    fields.known(data, SCALE_KEYS, key="scale")
    values = _scale_values(data.get("values"), fields)
    labels = _strings_per_value(data.get("labels"), "scale.labels", len(values), fields)
    answers = data.get("answers", [str(v) for v in values])
    _strings_per_value(answers, "scale.answers", len(values), fields)
    for i, ans in enumerate(answers):
        if ans != ans.strip():
            raise fields.fail(f"scale.answers[{i}]", f"{ans!r} has surrounding whitespace")
    if len(set(answers)) != len(answers):
        raise fields.fail("scale.answers", f"has duplicates: {answers}")
    return LikertScale(tuple(values), tuple(labels), tuple(answers))


def _parse_dimensions(dims: Any, fields: Fields) -> list[str]:
    fields.nonempty_list(dims, "dimensions", " of dimension names")
    for i, d in enumerate(dims):
        if not isinstance(d, str) or not _DIMENSION_NAME.match(d):
            raise fields.fail(
                f"dimensions[{i}]",
                f"{d!r} is not a valid name: use lowercase letters, digits and '_', starting "
                "with a letter (e.g. 'openness')",
            )
    dupes = sorted({d for d in dims if dims.count(d) > 1})
    if dupes:
        raise fields.fail("dimensions", f"lists {dupes} more than once")
    return dims


def _parse_items(raw: Any, dims: list[str], fields: Fields) -> list[QuestionnaireItem]:
    fields.nonempty_list(raw, "items", " of item objects")
    items: list[QuestionnaireItem] = []
    seen_ids: dict[str, int] = {}
    seen_text: dict[str, str] = {}
    for i, it in enumerate(raw):
        where = f"items[{i}]"
        fields.mapping(it, where, ' {"id", "text", "dimension", "reverse"}')
        fields.require(it, ITEM_KEYS, key=where)
        fields.known(it, ITEM_KEYS, key=where)
        item_id = fields.text(it["id"], f"{where}.id")
        if item_id in seen_ids:
            raise fields.fail(
                f"{where}.id",
                f"{item_id!r} duplicates the id of items[{seen_ids[item_id]}]; ids must be unique",
            )
        seen_ids[item_id] = i
        text = fields.text(it["text"], f"{where}.text")
        if text.strip() in seen_text:
            raise fields.fail(
                f"{where}.text", f"repeats the text of item {seen_text[text.strip()]!r}"
            )
        seen_text[text.strip()] = item_id
        dim = it["dimension"]
        if dim not in dims:
            raise fields.fail(
                f"{where}.dimension",
                f"{dim!r} is not a declared dimension; declared: {dims} (add it to "
                "'dimensions' or fix the spelling)",
            )
        items.append(
            QuestionnaireItem(item_id, text, dim, fields.flag(it["reverse"], f"{where}.reverse"))
        )
    empty = [d for d in dims if not any(it.dimension == d for it in items)]
    if empty:
        raise fields.fail(
            "dimensions", f"{empty} have no items; add items or drop the dimension(s)"
        )
    return items


def parse_questionnaire(data: Any, source: str = "<dict>") -> Questionnaire:
    """Validate a questionnaire dict and return a :class:`Questionnaire`."""
    fields = Fields(QuestionnaireFileError, f"questionnaire {source}")
    fields.mapping(data)
    fields.require(data, REQUIRED)
    fields.known(data, REQUIRED + OPTIONAL)
    name = fields.text(data["name"], "name")
    extras = {key: fields.optional_text(data, key) for key in ("description", "license")}
    if "self_description_prompt" in data:
        extras["self_description_prompt"] = fields.text(
            data["self_description_prompt"], "self_description_prompt"
        )
    dims = _parse_dimensions(data["dimensions"], fields)
    scale = _parse_scale(data["scale"], fields)
    template = fields.template(
        data["prompt_template"], "prompt_template", _PROMPT_FIELDS, ("item",)
    )
    judge_prompt = JUDGE_PROMPT
    if "judge_prompt" in data:
        judge_prompt = fields.template(
            data["judge_prompt"], "judge_prompt", _JUDGE_FIELDS, _JUDGE_FIELDS
        )
    items = _parse_items(data["items"], dims, fields)
    return Questionnaire(
        name=name,
        dimensions=tuple(dims),
        scale=scale,
        prompt_template=template,
        items=tuple(items),
        judge_prompt=judge_prompt,
        source=source,
        **extras,
    )


# ----------------------------------------------------------------------------- loading


def load_questionnaire_file(path: str | Path) -> Questionnaire:
    """Load and validate a questionnaire JSON file; errors name the file and the key."""
    path = Path(path)
    data = load_json_file(path, QuestionnaireFileError, "questionnaire file")
    return parse_questionnaire(data, source=str(path))


def list_questionnaires() -> list[str]:
    """Names of the questionnaires shipped with personalens."""
    return shipped_names("questionnaires")


def load_questionnaire(path_or_name: str | Path | Questionnaire) -> Questionnaire:
    """A shipped questionnaire by name (``"big_five"``) or a questionnaire file by path."""
    if isinstance(path_or_name, Questionnaire):
        return path_or_name
    return load_file_or_shipped(
        "questionnaires",
        path_or_name,
        load_questionnaire_file,
        lambda name, shipped: QuestionnaireFileError(
            f"unknown questionnaire {name!r}. Shipped: {shipped}. Pass the path of a "
            "questionnaire JSON file instead."
        ),
    )


__all__ = [
    "JUDGE_PROMPT",
    "LikertScale",
    "Questionnaire",
    "QuestionnaireFileError",
    "QuestionnaireItem",
    "SELF_DESCRIPTION_PROMPT",
    "list_questionnaires",
    "load_questionnaire",
    "load_questionnaire_file",
    "parse_questionnaire",
]

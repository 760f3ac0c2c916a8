"""Self-report questionnaires (Likert items) answered by the model, scored without a judge.

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
example a licensed copy of the BFI-44) with :func:`load_questionnaire`.

**Scoring** (:func:`score_questionnaire`), four methods:

* ``"logprob"`` (default, no judge): each item is rendered with ``prompt_template`` into a chat
  prompt (the tokenizer's template, generation prompt appended; batched with left padding) and
  one forward pass gives the next-token distribution at the last prompt token, where the reply
  starts. The probability of each scale point is the sum over its *answer tokens*: the
  single-token encodings of the answer string with and without a leading space (``"1"`` and
  ``" 1"``; GPT-2-style BPE tokenizers such as SmolLM2's split digits, so there only ``"1"`` is
  one token, while others also have ``"Ġ1"``). The distribution is renormalised over the scale
  points and the item's score is its expectation. ``scale_mass`` (the probability the scale
  tokens got before renormalising) is reported per item and per dimension: low mass (below
  :data:`LOW_MASS`) means the model did not answer on the scale and the expectation says
  little. ``min_mass`` turns such items into NaN.
* ``"generate"``: a greedy reply per item (:func:`personalens.generate`), parsed by
  :func:`parse_answer`, a strict regex: the reply must *start* with one of the scale's answers.
  Anything else is NaN and counted, never a default value.
* ``"judge"``: a reply per item, then an LLM judge (an OpenAI-compatible one,
  :class:`personalens.judges.openai_api.OpenAIJudge`) rates its agreement with the statement 0-100,
  mapped linearly onto the scale; NaN when the judge does not answer with a number.
* ``"likelihood"`` (no judge, **not on the Likert scale**): *self-description likelihood*.
  Each item's statement is teacher-forced as the model's reply to one user prompt,
  ``self_description_prompt`` (default :data:`SELF_DESCRIPTION_PROMPT`, "Describe your
  personality in one sentence."; chat template applied), and the item's ``logprob`` is the mean
  per-token log-probability of the statement's tokens (the end-of-turn token is not scored), in
  nats/token. A dimension's score is the **contrast** ``mean(logprob of forward-keyed items) -
  mean(logprob of reverse-keyed items)``: how much more readily the model describes itself with
  the trait's statements than with their opposites (the statements' own lengths and wording
  cancel in a steered-minus-unsteered difference; compare contrasts of one model under
  different steering, not across questionnaires). Every dimension needs forward- and
  reverse-keyed items. This method exists because on small models the ``"logprob"`` Likert
  answer does not read the item: on SmolLM2-135M every item gets nearly the same answer
  distribution, so steering moves forward- and reverse-keyed items together and the keyed
  dimension means stay at ~3.0 for any coefficient, while the likelihood contrast of the
  steered dimension moves with the coefficient.

Reverse keying is applied after scoring (Likert methods). Per dimension: the mean of the keyed
item scores, the standard deviation across items, the standard error of the mean, and the NaN
count.

Scoring uses the model's normal forward pass, so it runs under steering::

    with pl.steer(model, vector, coeff=4.0, layers=[12]):     # positions="response" (default)
        result = pl.studies.score_questionnaire(model, "big_five")

With the default ``positions="response"``, a forward pass without a KV cache is steered at each
row's last real token: the last prompt token, whose output is the answer distribution. The
``steering`` argument does the same for you (and records the plan in the result).

For ``"likelihood"`` the statement is scored the way generation would produce it: one forward
over the prompt (a prefill, batch 1, its KV cache shared by all items), then one forward over
the statement tokens with that cache. So steering means what it means in
:func:`personalens.generate`: ``positions="response"`` steers the positions whose outputs
predict statement tokens (the last prompt token and every statement token but the last, which
is not run: :func:`personalens.response_positions` of the prompt + statement batch),
``"prompt"`` only the prompt, ``"all"`` both; an explicit boolean mask is refused. This holds for ``steering=`` and for
an enclosing ``with pl.steer(...)`` alike. The likelihood scorer lives in
:mod:`personalens.studies.personality.likelihood`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from personalens._data import load_file_or_shipped, shipped_names
from personalens.errors import PersonaLensError
from personalens.model.chat import ChatBatch
from personalens.studies.personality.likelihood import (
    _check_likelihood,
    _is_mask_plan,
    _score_likelihood,
)

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

LOW_MASS = 0.5  # scale tokens below this probability: the model did not answer on the scale
METHODS = ("logprob", "generate", "judge", "likelihood")
SELF_DESCRIPTION_PROMPT = "Describe your personality in one sentence."
LIKELIHOOD_UNITS = "nats/token"

REQUIRED = ("name", "dimensions", "scale", "prompt_template", "items")
OPTIONAL = ("description", "license", "judge_prompt", "self_description_prompt")
ITEM_KEYS = ("id", "text", "dimension", "reverse")
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
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        if self.license:
            out["license"] = self.license
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


def _fail(source: str, key: str, problem: str) -> QuestionnaireFileError:
    return QuestionnaireFileError(f"questionnaire {source}: key '{key}' {problem}")


def _nonempty_str(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, key, f"must be a non-empty string, got {value!r}")
    return value


def _check_template(value: Any, source: str, key: str, allowed: tuple, required: tuple) -> str:
    text = _nonempty_str(value, source, key)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise _fail(
            source, key, f"is not a valid format string ({exc}); write literal braces as {{{{ }}}}"
        ) from None
    unknown = sorted({f for f in fields if f not in allowed})
    if unknown:
        raise _fail(
            source,
            key,
            f"has unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; "
            f"allowed: {', '.join('{' + f + '}' for f in allowed)} (literal braces: {{{{ }}}})",
        )
    for needed in required:
        if needed not in fields:
            raise _fail(source, key, f"has no {{{needed}}} placeholder; it is required")
    return text


def _parse_scale(data: Any, source: str) -> LikertScale:
    if not isinstance(data, dict):
        raise _fail(source, "scale", 'must be an object {"values": [1, ...], "labels": [...], ...}')
    unknown = sorted(set(data) - {"values", "labels", "answers"})
    if unknown:
        raise _fail(source, "scale", f"has unknown key(s) {unknown}; use values, labels, answers")
    values = data.get("values")
    if (
        not isinstance(values, list)
        or len(values) < 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    ):
        raise _fail(
            source, "scale.values", f"must be a list of at least 2 integers, got {values!r}"
        )
    if any(b <= a for a, b in zip(values, values[1:])):
        raise _fail(source, "scale.values", f"must be strictly increasing, got {values}")
    lo, hi = values[0], values[-1]
    if sorted(lo + hi - v for v in values) != values:
        raise _fail(
            source,
            "scale.values",
            f"{values} is not symmetric about its midpoint, so reverse keying (min + max - "
            "score) would leave the scale; use evenly spaced points such as [1, 2, 3, 4, 5]",
        )
    labels = data.get("labels")
    if not isinstance(labels, list) or len(labels) != len(values):
        raise _fail(
            source, "scale.labels", f"must be a list of {len(values)} strings, one per value"
        )
    for i, lab in enumerate(labels):
        _nonempty_str(lab, source, f"scale.labels[{i}]")
    answers = data.get("answers", [str(v) for v in values])
    if not isinstance(answers, list) or len(answers) != len(values):
        raise _fail(
            source, "scale.answers", f"must be a list of {len(values)} strings, one per value"
        )
    for i, ans in enumerate(answers):
        _nonempty_str(ans, source, f"scale.answers[{i}]")
        if ans != ans.strip():
            raise _fail(source, f"scale.answers[{i}]", f"{ans!r} has surrounding whitespace")
    if len(set(answers)) != len(answers):
        raise _fail(source, "scale.answers", f"has duplicates: {answers}")
    return LikertScale(tuple(values), tuple(labels), tuple(answers))


def parse_questionnaire(data: Any, source: str = "<dict>") -> Questionnaire:
    """Validate a questionnaire dict and return a :class:`Questionnaire`."""
    if not isinstance(data, dict):
        raise QuestionnaireFileError(
            f"questionnaire {source}: must hold a JSON object, got {type(data).__name__}"
        )
    for key in REQUIRED:
        if key not in data:
            raise _fail(source, key, f"is missing (required keys: {', '.join(REQUIRED)})")
    unknown = sorted(set(data) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise QuestionnaireFileError(
            f"questionnaire {source}: unknown key(s) {unknown}; allowed keys: "
            f"{', '.join(REQUIRED + OPTIONAL)}"
        )
    name = _nonempty_str(data["name"], source, "name")
    extras = {}
    for key in ("description", "license"):
        value = data.get(key, "")
        if not isinstance(value, str):
            raise _fail(source, key, f"must be a string, got {type(value).__name__}")
        extras[key] = value
    if "self_description_prompt" in data:
        extras["self_description_prompt"] = _nonempty_str(
            data["self_description_prompt"], source, "self_description_prompt"
        )

    dims = data["dimensions"]
    if not isinstance(dims, list) or not dims:
        raise _fail(source, "dimensions", "must be a non-empty list of dimension names")
    for i, d in enumerate(dims):
        if not isinstance(d, str) or not _DIMENSION_NAME.match(d):
            raise _fail(
                source,
                f"dimensions[{i}]",
                f"{d!r} is not a valid name: use lowercase letters, digits and '_', starting "
                "with a letter (e.g. 'openness')",
            )
    dupes = sorted({d for d in dims if dims.count(d) > 1})
    if dupes:
        raise _fail(source, "dimensions", f"lists {dupes} more than once")

    scale = _parse_scale(data["scale"], source)
    template = _check_template(
        data["prompt_template"], source, "prompt_template", _PROMPT_FIELDS, ("item",)
    )
    judge_prompt = JUDGE_PROMPT
    if "judge_prompt" in data:
        judge_prompt = _check_template(
            data["judge_prompt"], source, "judge_prompt", _JUDGE_FIELDS, _JUDGE_FIELDS
        )

    raw_items = data["items"]
    if not isinstance(raw_items, list) or not raw_items:
        raise _fail(source, "items", "must be a non-empty list of item objects")
    items: list[QuestionnaireItem] = []
    seen_ids: dict[str, int] = {}
    seen_text: dict[str, str] = {}
    for i, it in enumerate(raw_items):
        where = f"items[{i}]"
        if not isinstance(it, dict):
            raise _fail(source, where, 'must be an object {"id", "text", "dimension", "reverse"}')
        missing = [k for k in ITEM_KEYS if k not in it]
        if missing:
            raise _fail(
                source, where, f"is missing {missing} (each item needs {', '.join(ITEM_KEYS)})"
            )
        extra = sorted(set(it) - set(ITEM_KEYS))
        if extra:
            raise _fail(
                source, where, f"has unknown key(s) {extra}; items have {', '.join(ITEM_KEYS)}"
            )
        item_id = _nonempty_str(it["id"], source, f"{where}.id")
        if item_id in seen_ids:
            raise _fail(
                source,
                f"{where}.id",
                f"{item_id!r} duplicates the id of items[{seen_ids[item_id]}]; ids must be unique",
            )
        seen_ids[item_id] = i
        text = _nonempty_str(it["text"], source, f"{where}.text")
        if text.strip() in seen_text:
            raise _fail(
                source, f"{where}.text", f"repeats the text of item {seen_text[text.strip()]!r}"
            )
        seen_text[text.strip()] = item_id
        dim = it["dimension"]
        if dim not in dims:
            raise _fail(
                source,
                f"{where}.dimension",
                f"{dim!r} is not a declared dimension; declared: {dims} (add it to "
                "'dimensions' or fix the spelling)",
            )
        if not isinstance(it["reverse"], bool):
            raise _fail(source, f"{where}.reverse", f"must be true or false, got {it['reverse']!r}")
        items.append(QuestionnaireItem(item_id, text, dim, it["reverse"]))
    empty = [d for d in dims if not any(it.dimension == d for it in items)]
    if empty:
        raise _fail(
            source, "dimensions", f"{empty} have no items; add items or drop the dimension(s)"
        )
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


def load_questionnaire_file(path: str | Path) -> Questionnaire:
    """Load and validate a questionnaire JSON file; errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise QuestionnaireFileError(f"questionnaire file {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise QuestionnaireFileError(f"questionnaire {path}: not valid JSON ({exc})") from None
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


# ----------------------------------------------------------------------------- answers


def answer_token_ids(tokenizer: Any, scale: LikertScale) -> list[list[int]]:
    """For each scale point, the token ids that start a reply with that answer.

    These are the single-token encodings of the answer with and without a leading space. A
    point with neither is an error: the logprob method reads exactly one next token.
    """
    out: list[list[int]] = []
    owner: dict[int, str] = {}
    for answer in scale.answers:
        ids: list[int] = []
        encodings = {}
        for variant in (answer, " " + answer):
            enc = list(tokenizer.encode(variant, add_special_tokens=False))
            encodings[variant] = enc
            if len(enc) == 1 and enc[0] not in ids:
                ids.append(int(enc[0]))
        if not ids:
            raise PersonaLensError(
                f"scale answer {answer!r} is not a single token for this tokenizer "
                f"(encodings: {encodings}); the logprob method reads one next token, so use "
                "single-token answers (digits usually are) or method='generate'"
            )
        for i in ids:
            if i in owner:
                raise PersonaLensError(
                    f"scale answers {owner[i]!r} and {answer!r} share token {i}; give the scale "
                    "answers that tokenize differently"
                )
            owner[i] = answer
        out.append(ids)
    return out


def answer_distribution(
    logits: Float[Tensor, "batch vocab"], token_ids: Sequence[Sequence[int]]
) -> tuple[Float[Tensor, "batch n_points"], Float[Tensor, " batch"]]:
    """(probabilities of the scale points renormalised over them, the mass they had).

    A point's probability is the sum over its answer tokens. Rows whose mass underflows to 0
    get NaN probabilities.
    """
    logp = logits.double().log_softmax(dim=-1)
    per_point = torch.stack(
        [logp[:, list(ids)].logsumexp(dim=-1).exp() for ids in token_ids], dim=-1
    )
    mass = per_point.sum(dim=-1)
    probs = per_point / mass[:, None]
    probs = torch.where(mass[:, None] > 0, probs, torch.full_like(probs, math.nan))
    return probs, mass


def expected_scores(
    probs: Float[Tensor, "batch n_points"], values: Sequence[int]
) -> Float[Tensor, " batch"]:
    """Expected scale value of each row of a (renormalised) scale distribution."""
    return probs @ torch.tensor([float(v) for v in values], dtype=probs.dtype)


def _answer_regex(scale: LikertScale) -> re.Pattern[str]:
    alternatives = "|".join(re.escape(a) for a in sorted(scale.answers, key=len, reverse=True))
    return re.compile(
        r"^\s*(?:[*_\"'(\[]\s*)*"  # markdown emphasis, quotes, an opening bracket
        r"(?:(?:answer|rating|score)\s*[:=]?\s*(?:[*_\"'(\[]\s*)*)?"  # "Answer: 4"
        rf"({alternatives})"
        r"(?!\w)(?![.,]\d)",  # not the start of a longer word/number ("10", "4th", "3.5")
        re.IGNORECASE,
    )


def parse_answer(text: str, scale: LikertScale) -> float:
    """The scale value a reply starts with, or NaN.

    Strict: the reply must begin (after whitespace, ``*``/``_``/quotes/an opening bracket, and
    optionally ``Answer:``/``Rating:``/``Score:``) with one of the scale's answers, not followed
    by more letters or digits. ``"4"``, ``"4."``, ``"**4** - agree"``, ``"Rating: 2"`` parse;
    ``"I would say 4"``, ``"10"``, ``"3.5"``, ``"four"`` (unless ``"four"`` is an answer) do not.
    """
    m = _answer_regex(scale).match(text)
    if m is None:
        return math.nan
    matched = m.group(1).lower()
    for value, answer in zip(scale.values, scale.answers):
        if answer.lower() == matched:
            return float(value)
    return math.nan  # pragma: no cover (the regex only matches answers)


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class QuestionnaireResult:
    """Per-item scores of one questionnaire run (``records``) and how they were made.

    ``raw_score`` is on the scale as answered, ``score`` after reverse keying; NaN where the
    item could not be scored (see ``status``). For ``method="likelihood"`` both are the item's
    ``logprob`` (mean nats/token, not keyed: keying enters through the per-dimension contrast)
    and :attr:`units` says so.
    """

    questionnaire: str
    method: str
    dimension_names: tuple[str, ...]
    scale_values: tuple[int, ...]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def to_frame(self) -> pd.DataFrame:
        """One row per item: id, dimension, reverse, text, raw_score, score, scale_mass, ...

        For ``method="likelihood"``: ``logprob`` (mean log-probability per statement token,
        nats), ``sum_logprob`` and ``n_tokens`` instead of the scale columns.
        """
        import pandas as pd

        return pd.DataFrame.from_records(self.records)

    @property
    def units(self) -> str:
        """What a dimension score is measured in: ``"likert 1-5"`` or ``"nats/token"``."""
        if self.method == "likelihood":
            return LIKELIHOOD_UNITS
        return f"likert {self.scale_values[0]}-{self.scale_values[-1]}"

    def _likelihood_rows(self) -> list[dict[str, Any]]:
        rows = []
        for dim in self.dimension_names:
            recs = [r for r in self.records if r["dimension"] == dim]
            side: dict[str, np.ndarray] = {}
            for name, rev in (("forward", False), ("reverse", True)):
                part = np.array([r["logprob"] for r in recs if r["reverse"] is rev], dtype=float)
                side[name] = part[~np.isnan(part)]
            f, r = side["forward"], side["reverse"]
            mean_f = float(f.mean()) if len(f) else math.nan
            mean_r = float(r.mean()) if len(r) else math.nan
            var = (
                (np.var(f, ddof=1) / len(f) + np.var(r, ddof=1) / len(r))
                if len(f) > 1 and len(r) > 1
                else math.nan
            )
            n = len(f) + len(r)
            rows.append(
                {
                    "dimension": dim,
                    "contrast": mean_f - mean_r,
                    "sem": math.sqrt(var) if not math.isnan(var) else math.nan,
                    "mean_forward": mean_f,
                    "mean_reverse": mean_r,
                    "std_forward": float(np.std(f, ddof=1)) if len(f) > 1 else math.nan,
                    "std_reverse": float(np.std(r, ddof=1)) if len(r) > 1 else math.nan,
                    "n_items": len(recs),
                    "n_forward": len(f),
                    "n_reverse": len(r),
                    "n_scored": n,
                    "n_nan": len(recs) - n,
                    "units": LIKELIHOOD_UNITS,
                }
            )
        return rows

    def _dimension_rows(self) -> list[dict[str, Any]]:
        if self.method == "likelihood":
            return self._likelihood_rows()
        rows = []
        for dim in self.dimension_names:
            recs = [r for r in self.records if r["dimension"] == dim]
            scores = np.array([r["score"] for r in recs], dtype=float)
            ok = scores[~np.isnan(scores)]
            n = len(ok)
            std = float(np.std(ok, ddof=1)) if n > 1 else math.nan
            keyed = {}
            for side, rev in (("forward", False), ("reverse", True)):
                part = np.array([r["score"] for r in recs if r["reverse"] is rev], dtype=float)
                part = part[~np.isnan(part)]
                keyed[side] = float(part.mean()) if len(part) else math.nan
            masses = np.array([r["scale_mass"] for r in recs], dtype=float)
            has_mass = not np.isnan(masses).all()
            rows.append(
                {
                    "dimension": dim,
                    "mean": float(ok.mean()) if n else math.nan,
                    "std": std,
                    "sem": std / math.sqrt(n) if n > 1 else math.nan,
                    "n_items": len(recs),
                    "n_scored": n,
                    "n_nan": len(recs) - n,
                    "mean_forward": keyed["forward"],
                    "mean_reverse": keyed["reverse"],
                    "scale_mass": float(np.nanmean(masses)) if has_mass else math.nan,
                    "min_scale_mass": float(np.nanmin(masses)) if has_mass else math.nan,
                    "n_low_mass": int((masses < LOW_MASS).sum()) if has_mass else 0,
                }
            )
        return rows

    def dimensions(self) -> pd.DataFrame:
        """One row per dimension: mean, std and sem across items, counts, scale-token mass.

        ``n_nan`` counts items without a score (unparseable replies, judge refusals, mass
        below ``min_mass``). ``mean_forward`` / ``mean_reverse`` are the means of the (keyed)
        scores of the forward- and reverse-keyed items: a real change of the trait moves both
        the same way, a change of response style (saying "agree" to everything) moves them
        apart. ``scale_mass`` is the mean probability the scale tokens got (logprob method
        only) and ``n_low_mass`` the items where it was below :data:`LOW_MASS`.

        For ``method="likelihood"`` the columns differ: ``contrast`` (``mean_forward -
        mean_reverse``, the dimension's score, nats/token), ``sem`` (its standard error,
        ``sqrt(var_f / n_f + var_r / n_r)``), ``mean_forward`` / ``mean_reverse`` (mean item
        ``logprob`` of each keying), their ``std_*``, counts, and ``units``.
        """
        import pandas as pd

        return pd.DataFrame.from_records(self._dimension_rows())

    def summary(self) -> dict[str, float]:
        """``{dimension: score}``: the mean keyed score (Likert methods) or the forward - reverse
        contrast (``"likelihood"``, nats/token); NaN where no item was scored."""
        key = "contrast" if self.method == "likelihood" else "mean"
        return {row["dimension"]: row[key] for row in self._dimension_rows()}

    @property
    def mean_scale_mass(self) -> float:
        """Mean probability of the scale tokens over all items (NaN unless method='logprob')."""
        masses = np.array([r["scale_mass"] for r in self.records], dtype=float)
        return math.nan if np.isnan(masses).all() else float(np.nanmean(masses))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes ``None``): scores, per-dimension stats, items, settings."""
        return {
            "questionnaire": self.questionnaire,
            "method": self.method,
            "units": self.units,
            "scores": {k: _json_num(v) for k, v in self.summary().items()},
            "dimensions": {
                row["dimension"]: {k: _json_num(v) for k, v in row.items() if k != "dimension"}
                for row in self._dimension_rows()
            },
            "mean_scale_mass": _json_num(self.mean_scale_mass),
            "settings": self.settings,
            "items": [{k: _json_num(v) for k, v in r.items()} for r in self.records],
        }


def _json_num(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


@contextlib.contextmanager
def _steering_context(model: HookedTransformer, steering: Any) -> Iterator[dict | None]:
    """Enter ``steering`` (None, a SteeringPlan, a context manager, or a callable making one)."""
    from personalens.steering.steer import SteeringPlan, apply_plan

    if steering is None:
        yield None
        return
    if isinstance(steering, SteeringPlan):
        with apply_plan(model, steering) as plan:
            yield dict(plan.description)
        return
    ctx = steering
    if not hasattr(ctx, "__enter__") and callable(ctx):
        ctx = ctx()
    if not (hasattr(ctx, "__enter__") and hasattr(ctx, "__exit__")):
        raise PersonaLensError(
            f"steering={steering!r} is not usable: pass None, a SteeringPlan "
            "(personalens.steering.steer.plan_steering), a context manager such as "
            "pl.steer(model, v, coeff=4, layers=[12]), or a function returning one"
        )
    with ctx as entered:
        if isinstance(entered, SteeringPlan):
            yield dict(entered.description)
        else:
            yield {"context": type(ctx).__name__}


def _next_token_logits(model: HookedTransformer, batch: ChatBatch) -> Float[Tensor, "batch vocab"]:
    """Logits of the token after each row's prompt (left padding: the last column)."""
    from personalens.model.generation import last_logits

    with torch.inference_mode():
        return last_logits(model, batch.tokens, batch.attention_mask, None).float()


def _score_logprob(
    model: HookedTransformer,
    q: Questionnaire,
    prompts: list[str],
    system: str | None,
    batch_size: int,
    min_mass: float,
) -> list[dict[str, Any]]:
    from personalens.model.chat import tokenize_prompts

    tokenizer = model.tokenizer
    token_ids = answer_token_ids(tokenizer, q.scale)
    out: list[dict[str, Any]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        batch = tokenize_prompts(tokenizer, chunk, system=system, device=model.cfg.device)
        if batch.tokens.shape[1] > model.cfg.n_ctx:
            raise PersonaLensError(
                f"an item prompt is {batch.tokens.shape[1]} tokens long, more than the model's "
                f"context of {model.cfg.n_ctx}; shorten the prompt_template or the system prompt"
            )
        logits = _next_token_logits(model, batch)
        probs, mass = answer_distribution(logits.cpu(), token_ids)
        expected = expected_scores(probs, q.scale.values)
        top = logits.argmax(dim=-1).tolist()
        for i in range(len(chunk)):
            m = float(mass[i])
            raw = float(expected[i])
            status = "ok"
            if m < min_mass or math.isnan(raw):
                raw, status = math.nan, "low_mass"
            rec: dict[str, Any] = {"raw_score": raw, "scale_mass": m, "status": status}
            rec.update({f"p_{v}": float(probs[i, k]) for k, v in enumerate(q.scale.values)})
            rec["top_token"] = tokenizer.decode([top[i]])
            out.append(rec)
    return out


def _generate_replies(
    model: HookedTransformer,
    prompts: list[str],
    system: str | None,
    batch_size: int,
    max_new_tokens: int,
) -> list[str]:
    from personalens.model.generation import GenerationConfig, generate

    config = GenerationConfig(
        max_new_tokens=max_new_tokens, temperature=0.0, batch_size=batch_size, progress=False
    )
    return generate(model, prompts, config, system=system).responses


def _resolve_judge(judge: Any) -> Any:
    from personalens.judges.factory import make_judge

    if judge is None:
        judge = "auto"
    if isinstance(judge, str):
        judge = make_judge(judge)
    if not callable(getattr(judge, "score_prompts", None)):
        raise PersonaLensError(
            f"judge {getattr(judge, 'name', judge)!r} cannot rate questionnaire answers: it needs "
            "score_prompts(prompts) -> 0-100 scores, as the OpenAI-compatible judge has "
            "(make_judge('openai', base_url=..., model=...)); the offline judge only scores "
            "trait files. Without an LLM judge use method='logprob' or method='generate'"
        )
    return judge


def score_questionnaire(
    model: HookedTransformer,
    questionnaire: Questionnaire | str | Path = "big_five",
    *,
    steering: Any = None,
    system: str | None = None,
    method: str = "logprob",
    batch_size: int = 16,
    min_mass: float = 0.0,
    max_new_tokens: int = 32,
    judge: Any = None,
    self_description_prompt: str | None = None,
) -> QuestionnaireResult:
    """Have the model answer every item and score it (see the module docstring).

    Args:
        questionnaire: a :class:`Questionnaire`, a shipped name, or a file path.
        steering: ``None``; a :class:`~personalens.steering.steer.SteeringPlan`; a context manager
            such as ``pl.steer(model, v, coeff=4.0, layers=[12])``; or a function returning
            one. It is entered around all forward passes. (Steering you entered yourself with
            ``with pl.steer(...):`` applies too, but is not recorded in the result.)
        system: system prompt for every item (default: none, i.e. the chat template's own).
        method: ``"logprob"`` (next-token distribution over the scale's answer tokens, no
            judge), ``"generate"`` (greedy reply parsed by :func:`parse_answer`), ``"judge"``
            (greedy reply rated 0-100 by an LLM judge, mapped onto the scale) or
            ``"likelihood"`` (mean log-probability of each statement as the model's reply to
            ``self_description_prompt``; dimension score = forward - reverse contrast in
            nats/token, not on the scale; see the module docstring for what is steered).
        batch_size: items per forward pass / generation batch.
        min_mass: logprob only: items whose scale tokens got less probability are NaN.
        max_new_tokens: reply length for ``"generate"`` and ``"judge"``.
        judge: for ``"judge"``: an object with ``score_prompts`` (an
            :class:`~personalens.judges.openai_api.OpenAIJudge`) or ``"openai"``/``"auto"``.
        self_description_prompt: for ``"likelihood"``: the user message the statements answer
            (default: the questionnaire's ``self_description_prompt``, else
            :data:`SELF_DESCRIPTION_PROMPT`).
    """
    q = load_questionnaire(questionnaire)
    if method not in METHODS:
        raise PersonaLensError(f"unknown method {method!r}: use one of {METHODS}")
    if batch_size < 1:
        raise PersonaLensError(f"batch_size must be >= 1, got {batch_size}")
    if not 0.0 <= min_mass <= 1.0:
        raise PersonaLensError(f"min_mass must be in [0, 1], got {min_mass}")
    if model.tokenizer is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    judge_obj = _resolve_judge(judge) if method == "judge" else None
    if method == "logprob":
        answer_token_ids(model.tokenizer, q.scale)  # fail before any forward pass
    self_prompt = q.self_description_prompt
    if method == "likelihood":
        _check_likelihood(q)
        if self_description_prompt is not None:
            if not isinstance(self_description_prompt, str) or not self_description_prompt.strip():
                raise PersonaLensError(
                    f"self_description_prompt must be a non-empty string, got "
                    f"{self_description_prompt!r}"
                )
            self_prompt = self_description_prompt
        if _is_mask_plan(steering):
            raise PersonaLensError(
                "method='likelihood' steers by named positions ('response', 'prompt', 'all'): "
                "the statement is scored as a prefill plus a continuation, so a [batch, pos] "
                "positions mask has no single forward to apply to"
            )
    prompts = [q.prompt(it) for it in q.items]

    with _steering_context(model, steering) as steering_desc:
        if method == "logprob":
            scored = _score_logprob(model, q, prompts, system, batch_size, min_mass)
        elif method == "likelihood":
            scored = _score_likelihood(model, q, self_prompt, system, batch_size)
        else:
            replies = _generate_replies(model, prompts, system, batch_size, max_new_tokens)
    if method == "generate":
        scored = []
        for reply in replies:
            raw = parse_answer(reply, q.scale)
            status = "ok" if not math.isnan(raw) else "unparsed"
            scored.append({"raw_score": raw, "scale_mass": math.nan, "status": status})
            scored[-1]["response"] = reply
    elif method == "judge":
        judge_prompts = [
            q.judge_prompt.format(item=it.text, answer=reply) for it, reply in zip(q.items, replies)
        ]
        ratings = judge_obj.score_prompts(judge_prompts)
        if len(ratings) != len(replies):
            raise PersonaLensError(
                f"the judge returned {len(ratings)} scores for {len(replies)} answers"
            )
        scored = []
        lo, hi = q.scale.min, q.scale.max
        for reply, rating in zip(replies, ratings):
            rating = float(rating)
            raw = lo + (hi - lo) * rating / 100.0 if not math.isnan(rating) else math.nan
            status = "ok" if not math.isnan(raw) else "judge_nan"
            scored.append(
                {
                    "raw_score": raw,
                    "scale_mass": math.nan,
                    "status": status,
                    "response": reply,
                    "judge_score": rating,
                }
            )

    records = []
    for it, rec in zip(q.items, scored):
        raw = rec.pop("raw_score")
        keyed = it.reverse and method != "likelihood"  # likelihood: keyed by the contrast
        records.append(
            {
                "id": it.id,
                "dimension": it.dimension,
                "reverse": it.reverse,
                "text": it.text,
                "raw_score": raw,
                "score": q.scale.reverse(raw) if keyed else raw,
                **rec,
            }
        )
    settings: dict[str, Any] = {
        "model": model.cfg.model_name,
        "method": method,
        "units": LIKELIHOOD_UNITS
        if method == "likelihood"
        else f"likert {q.scale.min}-{q.scale.max}",
        "system": system,
        "steering": steering_desc,
        "n_items": len(q.items),
        "scale": q.scale.to_dict(),
        "source": q.source,
    }
    if method == "logprob":
        settings["answer_tokens"] = {
            a: [model.tokenizer.convert_ids_to_tokens(i) for i in ids]
            for a, ids in zip(q.scale.answers, answer_token_ids(model.tokenizer, q.scale))
        }
        settings["min_mass"] = min_mass
        settings["batch_size"] = batch_size
    elif method == "likelihood":
        settings["self_description_prompt"] = self_prompt
        settings["batch_size"] = batch_size
    else:
        settings["max_new_tokens"] = max_new_tokens
        if judge_obj is not None:
            settings["judge"] = getattr(judge_obj, "name", type(judge_obj).__name__)
    return QuestionnaireResult(
        questionnaire=q.name,
        method=method,
        dimension_names=q.dimensions,
        scale_values=q.scale.values,
        records=records,
        settings=settings,
    )


__all__ = [
    "JUDGE_PROMPT",
    "LOW_MASS",
    "LikertScale",
    "Questionnaire",
    "QuestionnaireFileError",
    "QuestionnaireItem",
    "QuestionnaireResult",
    "SELF_DESCRIPTION_PROMPT",
    "answer_distribution",
    "answer_token_ids",
    "expected_scores",
    "list_questionnaires",
    "load_questionnaire",
    "load_questionnaire_file",
    "parse_answer",
    "parse_questionnaire",
    "score_questionnaire",
]

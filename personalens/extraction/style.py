"""Style vectors: a direction per layer from labelled outputs, with no contrastive system prompts.

Konen et al. compute style vectors from the activations a model records while producing text of
a given style (sentiment, emotion, formality), grouped by the style label. Here every labelled
text is teacher-forced as the assistant's reply to a prompt (its own ``prompt`` column, else a
neutral one), its activations are averaged over the reply tokens (``response_avg`` by default,
:func:`~personalens.model.activations.collect_activations`), and the style vector is
``mean(positive label) - mean(negative label)`` at every layer
(:func:`~personalens.extraction.pipeline.extract_persona_vector`), a
:class:`~personalens.vectors.vector.PersonaVector` with the same provenance fields as a persona
vector (``method="mean_diff"``, ``variant``, ``n_pos``/``n_neg``; ``metadata["source"]`` says
``"style"``), so it can be compared with persona vectors in the same units.

The data are a shipped labelled set (``"sentiment"``: positive / negative, ``"formality"``:
formal / casual; ``personalens/data/style_sets/``, 30 texts per label written for personalens),
a JSON file of that shape, a ``datasets.Dataset``, a ``pandas.DataFrame`` or a list of dicts
with a text column and a label column; the model's own replies grouped by a label are such a
list (``{"prompt": ..., "text": reply, "label": ...}``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens._data import load_file_or_shipped, shipped_names
from personalens.errors import PersonaLensError
from personalens.extraction.pipeline import extract_persona_vector
from personalens.model.activations import VARIANTS, collect_activations

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["StyleSet", "list_style_sets", "load_style_set", "style_vector"]

KIND = "style_sets"
NEUTRAL_PROMPT = "Write a few sentences."


@dataclass(frozen=True)
class StyleSet:
    """Labelled texts: ``records`` (dicts with the text and label columns, maybe a prompt)."""

    name: str
    records: tuple[dict[str, Any], ...]
    labels: tuple[str, ...]
    prompt: str = NEUTRAL_PROMPT
    text_column: str = "text"
    label_column: str = "label"


def list_style_sets() -> list[str]:
    """The shipped labelled style sets."""
    return shipped_names(KIND)


def _read_set(path: Path) -> StyleSet:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        text_col, label_col = data.get("text_column", "text"), data.get("label_column", "label")
        records = tuple(dict(r) for r in data["records"])
        labels = tuple(data.get("labels") or sorted({str(r[label_col]) for r in records}))
        return StyleSet(
            name=str(data.get("name", Path(path).stem)),
            records=records,
            labels=labels,
            prompt=str(data.get("prompt", NEUTRAL_PROMPT)),
            text_column=text_col,
            label_column=label_col,
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PersonaLensError(
            f"{path} is not a labelled style set ({exc}): it needs 'records', each with a text "
            "and a label (see personalens/data/style_sets/sentiment.json)"
        ) from None


def load_style_set(name: str | Path) -> StyleSet:
    """A shipped style set by name (``"sentiment"``, ``"formality"``) or a JSON file."""

    def unknown(n: str, known: str) -> PersonaLensError:
        return PersonaLensError(f"unknown style set {n!r}: shipped sets are {known}, or a path")

    return load_file_or_shipped(KIND, name, _read_set, unknown)


def _as_records(data: Any) -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset``, a ``DataFrame`` or a sequence of mappings."""
    if hasattr(data, "to_list") and hasattr(data, "column_names"):  # datasets.Dataset
        rows = data.to_list()
    elif hasattr(data, "to_dict") and hasattr(data, "columns"):  # pandas.DataFrame
        rows = data.to_dict(orient="records")
    else:
        rows = list(data)
    if not all(isinstance(r, Mapping) for r in rows):
        raise PersonaLensError(
            "style data must be a datasets.Dataset, a DataFrame or a list of dicts with a text "
            "column and a label column"
        )
    return [dict(r) for r in rows]


def _resolve(data: Any, text_column: str | None, label_column: str | None, prompt: str | None):
    """``(name, records, labels, prompt, text column, label column)`` of any accepted input."""
    if isinstance(data, StyleSet | str | Path):
        s = data if isinstance(data, StyleSet) else load_style_set(data)
        return (s.name, list(s.records), list(s.labels), prompt or s.prompt,
                text_column or s.text_column, label_column or s.label_column)  # fmt: skip
    rows = _as_records(data)
    label_col = label_column or "label"
    labels = sorted({str(r.get(label_col)) for r in rows})
    return "custom", rows, labels, prompt or NEUTRAL_PROMPT, text_column or "text", label_col


def _side(rows, label, text_col, label_col, prompt_column, prompt):
    chosen = [r for r in rows if str(r.get(label_col)) == label]
    texts = [r.get(text_col) for r in chosen]
    if not chosen or not all(isinstance(t, str) and t.strip() for t in texts):
        raise PersonaLensError(
            f"label {label!r} has {len(chosen)} rows in column {label_col!r}, and each needs a "
            f"non-empty text in column {text_col!r}: check positive=/negative= and the columns"
        )
    prompts = [str(r.get(prompt_column) or prompt) if prompt_column else prompt for r in chosen]
    return prompts, texts


def style_vector(
    model: HookedTransformer,
    data: Any,
    *,
    positive: str | None = None,
    negative: str | None = None,
    text_column: str | None = None,
    label_column: str | None = None,
    prompt_column: str | None = "prompt",
    prompt: str | None = None,
    variant: str = "response_avg",
    trait: str | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> PersonaVector:
    """``mean(positive) - mean(negative)`` of teacher-forced activations at every layer.

    Args:
        data: a shipped set name, a path, a :class:`StyleSet`, a ``datasets.Dataset``, a
            ``DataFrame`` or a list of dicts (see the module doc).
        positive, negative: the two labels; default the set's two labels in order (a set with
            other than two labels needs them named).
        text_column, label_column: default the set's, else ``"text"`` and ``"label"``.
        prompt_column: a row's own prompt (e.g. the question the model replied to), if present;
            else ``prompt`` (default the set's neutral prompt) is the user turn.
        variant: ``"response_avg"`` (reply tokens), ``"prompt_avg"`` or ``"last_prompt_token"``.
        trait: the vector's name; default ``"<positive>_vs_<negative>"``.
    """
    if variant not in VARIANTS:
        raise PersonaLensError(f"unknown variant {variant!r}: use one of {VARIANTS}")
    name, rows, labels, prompt, text_col, label_col = _resolve(
        data, text_column, label_column, prompt
    )
    if positive is None or negative is None:
        if len(labels) != 2:
            raise PersonaLensError(
                f"the style data have labels {labels}: name the two to contrast with "
                "positive= and negative="
            )
        positive, negative = positive or labels[0], negative or labels[1]
    if positive == negative:
        raise PersonaLensError(f"positive and negative are both {positive!r}: give two labels")
    acts = {}
    for side, label in (("pos", positive), ("neg", negative)):
        prompts, texts = _side(rows, label, text_col, label_col, prompt_column, prompt)
        acts[side] = collect_activations(
            model, prompts, texts, batch_size=batch_size, progress=progress
        )
    return extract_persona_vector(
        acts["pos"],
        acts["neg"],
        variant=variant,
        model_name=model.cfg.model_name,
        trait=trait or f"{positive}_vs_{negative}",
        metadata={
            "source": "style",
            "style_set": name,
            "positive": positive,
            "negative": negative,
            "text_column": text_col,
            "label_column": label_col,
            "teacher_forced": True,
            "prompt": prompt,
        },
    )

"""The samples a screen (or a finetune) reads: chat data from files, datasets, frames or rows.

:func:`load_screening_data` turns a ``.jsonl``/``.csv`` file, a ``datasets.Dataset``, a pandas
DataFrame or a list of dicts into :class:`ScreeningSample` values (the prompt conversation and
the response text), with errors that name the file, the row and the key.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalens.errors import PersonaLensError
from personalens.model.chat import Message, as_conversation

__all__ = ["ScreeningSample", "load_screening_data"]


@dataclass(frozen=True)
class ScreeningSample:
    """One dataset sample: the conversation before the response, and the response text."""

    id: str
    prompt: list[Message]
    response: str


def load_screening_data(source: Any, *, limit: int | None = None) -> list[ScreeningSample]:
    """Samples to screen, from a file or an in-memory dataset.

    ``source`` is one of

    * a ``.jsonl`` file, one JSON object per line, either ``{"messages": [...]}`` in chat format
      (the last message must be the assistant's response; everything before it is the prompt
      conversation) or ``{"prompt": ..., "answer": ...}``; optional ``"id"`` and, with
      ``prompt``, ``"system"``;
    * a ``.csv`` file with ``prompt`` and ``answer`` columns (optional ``id`` and ``system``);
    * a ``datasets.Dataset``, a pandas DataFrame or a sequence of dicts with either shape;
    * a list of :class:`ScreeningSample` (returned as is).

    Samples without an ``id`` get their 0-based row number. ``limit`` keeps the first N.
    Malformed input raises :class:`PersonaLensError` naming the file, the row and the key.
    """
    if isinstance(source, (str, os.PathLike)):
        samples = _load_file(Path(source))
        where = str(source)
    elif isinstance(source, Sequence) and source and isinstance(source[0], ScreeningSample):
        samples, where = list(source), "the given samples"
    else:
        rows, where = _rows_of(source)
        samples = [_parse_row(row, f"{where}, row {i}", i) for i, row in enumerate(rows)]
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise PersonaLensError(f"{where} holds no samples: nothing to screen")
    _check_unique_ids(samples, where)
    return samples


def _rows_of(source: Any) -> tuple[list[Any], str]:
    if hasattr(source, "column_names") and hasattr(source, "num_rows"):  # datasets.Dataset
        return list(source), "the dataset"
    if (
        isinstance(source, Mapping)
        and source
        and all(hasattr(v, "column_names") for v in source.values())
    ):
        raise PersonaLensError(
            f"got a DatasetDict with splits {sorted(source)}; pass one split, e.g. ds['train']"
        )
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas DataFrame
        return source.to_dict(orient="records"), "the DataFrame"
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return list(source), "the given rows"
    raise PersonaLensError(
        f"cannot screen a {type(source).__name__}: give a .jsonl or .csv path, a datasets.Dataset, "
        "a DataFrame or a list of dicts"
    )


def _load_file(path: Path) -> list[ScreeningSample]:
    if not path.exists():
        raise PersonaLensError(f"{path} does not exist: give a .jsonl or .csv dataset file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        samples = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PersonaLensError(f"{where}: not valid JSON ({exc.msg})") from None
                samples.append(_parse_row(row, where, len(samples)))
        return samples
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in ("prompt", "answer") if c not in columns]
            if missing:
                raise PersonaLensError(
                    f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (the file "
                    f"has {columns}); a CSV dataset needs 'prompt' and 'answer' columns "
                    "(optional 'id', 'system')"
                )
            return [
                _parse_row(
                    {k: v for k, v in row.items() if k in ("id", "prompt", "answer", "system")},
                    f"{path}, row {i + 1} (line {reader.line_num})",
                    i,
                    blank_is_missing=True,
                )
                for i, row in enumerate(reader)
            ]
    raise PersonaLensError(
        f"{path}: unknown dataset format {suffix or '(no suffix)'!r}; use .jsonl (chat "
        "'messages' or 'prompt'/'answer' per line) or .csv ('prompt', 'answer' columns)"
    )


def _parse_row(row: Any, where: str, index: int, blank_is_missing: bool = False) -> ScreeningSample:
    if not isinstance(row, Mapping):
        raise PersonaLensError(f"{where}: expected an object with 'messages', got {row!r:.80}")
    if blank_is_missing:  # a CSV cell cannot be absent, only empty
        row = {k: v for k, v in row.items() if not (k in ("id", "system") and v in ("", None))}
    raw_id = row.get("id")
    sample_id = str(index) if raw_id is None or raw_id == "" else str(raw_id)
    if "messages" in row:
        prompt, response = _from_messages(row["messages"], where)
    else:
        prompt, response = _from_prompt_answer(row, where)
    if not isinstance(response, str) or not response.strip():
        raise PersonaLensError(
            f"{where}: the response (key {'messages' if 'messages' in row else 'answer'!r}) is "
            "empty, whitespace only or not a string; a response average needs at least one "
            "token of text"
        )
    try:
        prompt = as_conversation(prompt)
    except PersonaLensError as exc:
        raise PersonaLensError(f"{where}: {exc}") from None
    return ScreeningSample(id=sample_id, prompt=prompt, response=response)


def _from_messages(messages: Any, where: str) -> tuple[list[Message], Any]:
    """(prompt, response) of a chat-format row: everything before the last (assistant) message."""
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise PersonaLensError(f"{where}: key 'messages' must be a non-empty list of messages")
    for j, m in enumerate(messages):
        if not isinstance(m, Mapping):
            raise PersonaLensError(f"{where}: message {j} of 'messages' is not an object")
        for key in ("role", "content"):
            if key not in m:
                raise PersonaLensError(
                    f"{where}: message {j} of 'messages' is missing key {key!r} ({m!r:.80})"
                )
    last = messages[-1]
    if last["role"] != "assistant":
        raise PersonaLensError(
            f"{where}: the last message of 'messages' must be the assistant's response (the "
            f"sample to screen), got role {last['role']!r}"
        )
    prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
    if not any(m["role"] == "user" for m in prompt):
        raise PersonaLensError(
            f"{where}: 'messages' has no user message before the assistant's response"
        )
    return prompt, last["content"]


def _from_prompt_answer(row: Mapping[str, Any], where: str) -> tuple[list[Message], Any]:
    """(prompt, response) of a ``prompt``/``answer`` row (with an optional ``system``)."""
    missing = [k for k in ("prompt", "answer") if k not in row]
    if missing:
        raise PersonaLensError(
            f"{where}: missing key {missing[0]!r} (a sample needs 'messages', or 'prompt' and "
            f"'answer'; keys present: {sorted(row)})"
        )
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise PersonaLensError(f"{where}: key 'system' must be a string")
    if not isinstance(row["prompt"], str):
        raise PersonaLensError(f"{where}: key 'prompt' must be a string")
    prompt = [] if system is None else [{"role": "system", "content": system}]
    prompt.append({"role": "user", "content": row["prompt"]})
    return prompt, row["answer"]


def _check_unique_ids(samples: Sequence[ScreeningSample], where: str) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.id in seen:
            raise PersonaLensError(
                f"{where}: id {s.id!r} appears twice (samples {seen[s.id]} and {i}); ids must be "
                "unique"
            )
        seen[s.id] = i

"""Chat completions that must answer with one JSON object, checked before they are cached.

:func:`chat_json` returns the object as it is; :func:`validated_json` first hands it to a
feature's check (the trait writer, the LLM steering policy, pairwise ranking). A reply without
a JSON object, or one the check rejects, raises :class:`JudgeReplyError` (``.text`` is the
reply) and is not cached. The API, key and retries are described in
:mod:`personalens.judges.openai_client`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from personalens.judges.base import JudgeError
from personalens.judges.openai_client import (
    APIConfig,
    create_chat_completion,
    make_client,
    redact,
)
from personalens.judges.response_cache import MISS, ResponseCache


class JudgeReplyError(JudgeError):
    """The LLM answered, but its reply holds no usable JSON object; ``text`` is the reply."""

    def __init__(self, message: str, text: str = ""):
        super().__init__(message)
        self.text = text


@dataclass(frozen=True)
class JSONRequest:
    """How to ask for a JSON object: the cache ``kind``, system prompt and sampling settings.

    ``cache=True`` stores replies that pass the check and reuses them for the identical request.
    """

    kind: str
    system: str | None
    max_tokens: int
    temperature: float = 0.0
    cache: bool = True


_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def extract_json_object(text: str) -> dict | None:
    """The first JSON object in ``text``: the whole text, a ```json fence, or the first ``{...}``."""
    stripped = text.strip()
    candidates = [stripped, *(m.group(1).strip() for m in _FENCE.finditer(text))]
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    decoder = json.JSONDecoder()
    start = text.find("{")
    while start != -1:
        try:
            value, _ = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
        start = text.find("{", start + 1)
    return None


def chat_json(
    prompt: str,
    *,
    config: APIConfig,
    system: str | None = None,
    max_tokens: int = 4000,
    temperature: float = 0.7,
    cache: bool = True,
) -> dict:
    """One chat completion that must answer with a JSON object; returns that object.

    Asks for ``response_format={"type": "json_object"}`` (and drops it if the server rejects it)
    and also accepts replies that wrap the object in prose or a ```json fence. With ``cache`` a
    reply that held a JSON object is stored and reused for the identical request; pass
    ``cache=False`` for a fresh sample. Raises :class:`JudgeReplyError` when the reply has no JSON
    object, and :class:`JudgeError` when the API fails.
    """
    request = JSONRequest("chat_json", system, max_tokens, temperature, cache)
    return validated_json(prompt, lambda obj: obj, request, config)


def validated_json(
    prompt: str, parse: Callable[[dict], Any], request: JSONRequest, config: APIConfig
) -> Any:
    """One JSON chat completion whose object is checked by ``parse`` before it is cached.

    ``parse(obj)`` returns the checked value or raises :class:`JudgeReplyError`; only replies
    that pass are cached (a cached reply that no longer passes is ignored and re-requested).
    Raises :class:`JudgeReplyError` (``.text`` is the reply) when the reply holds no JSON object
    or ``parse`` rejects it, and :class:`JudgeError` when the API fails.
    """
    messages = [{"role": "system", "content": request.system}] if request.system else []
    messages.append({"role": "user", "content": prompt})
    params = {
        "system": request.system,
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }
    store = ResponseCache(config.cache_path) if (request.cache and config.cache_path) else None
    key = ResponseCache.key(config.url, config.model, request.kind, params, prompt)
    try:
        cached = store.get(key) if store is not None else MISS
        if cached is not MISS and isinstance(cached, dict):
            parsed = extract_json_object(cached.get("text", ""))
            if parsed is not None:
                try:
                    return parse(parsed)
                except JudgeReplyError:
                    pass  # a reply cached by an older, laxer check: ask again
        text, finish = _json_completion(config, messages, request)
        value = _checked(text, finish, parse, request, config)
        if store is not None:
            store.put(key, {"text": text})
        return value
    finally:
        if store is not None:
            store.close()


def _checked(
    text: str,
    finish: str | None,
    parse: Callable[[dict], Any],
    request: JSONRequest,
    config: APIConfig,
) -> Any:
    """``parse`` of the reply's JSON object, or JudgeReplyError saying what was wrong."""
    where = f"the LLM at {config.url} (model {config.model!r})"
    began = f"Reply began: {redact(text[:300], config)!r}"
    parsed = extract_json_object(text)
    if parsed is None:
        hint = (
            f" The reply was cut off at max_tokens={request.max_tokens}; raise max_tokens."
            if finish == "length"
            else ""
        )
        raise JudgeReplyError(
            f"{where} replied without a JSON object.{hint} Fix: re-run, or use a stronger "
            f"--judge-model. {began}",
            text=text,
        )
    try:
        return parse(parsed)
    except JudgeReplyError as exc:
        raise JudgeReplyError(
            f"{where} replied with an invalid object: {exc} Fix: re-run, or use a stronger "
            f"--judge-model. {began}",
            text=text,
        ) from None


def _json_completion(
    config: APIConfig, messages: list[dict[str, str]], request: JSONRequest
) -> tuple[str, str | None]:
    """(reply text, finish_reason); drops ``response_format`` if the server rejects it."""
    client = make_client(config)
    try:
        response = create_chat_completion(
            client,
            config,
            optional={"response_format": {"type": "json_object"}},
            model=config.model,
            messages=messages,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
        )
    finally:
        client.close()
    choices = getattr(response, "choices", None) or []
    if not choices:
        raise JudgeReplyError(
            f"the LLM at {config.url} (model {config.model!r}) returned no choices"
        )
    message = choices[0].message
    return (getattr(message, "content", None) or ""), getattr(choices[0], "finish_reason", None)

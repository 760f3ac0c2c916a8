"""How to reach an OpenAI-compatible chat-completions API: config, key, client and errors.

This is the only module in personalens that imports ``openai``, and it does so lazily, inside
the functions that need it.

* :class:`APIConfig`: where the API is, which model, timeout, retries, concurrency and the
  on-disk cache. :meth:`APIConfig.from_env` reads ``PERSONALENS_JUDGE_BASE_URL`` (else
  ``OPENAI_BASE_URL``; else the official OpenAI API) and ``PERSONALENS_JUDGE_MODEL`` (else
  ``gpt-4.1-mini``, the Persona Vectors paper's judge).
* :func:`make_client`: an ``openai.OpenAI`` client for a config.
* :func:`call_api` / :func:`create_chat_completion`: one request, with the client's errors
  turned into :class:`~personalens.judges.base.JudgeError` messages that name the status and
  the fix.

**The API key** is read from the environment variable named by ``APIConfig.api_key_env``
(``OPENAI_API_KEY`` by default) when a client is created, and only then. It is never stored in
the config, the cache, logs or error messages (:func:`redact`). Without a key, a custom
``base_url`` (a local vLLM / llama.cpp / Ollama server, which ignore it) gets the placeholder
``"not-needed"``; the official API raises :class:`~personalens.judges.base.JudgeError`.

**Retries** are the openai client's own (``max_retries`` of them): HTTP 408, 409, 429 and 5xx,
timeouts and connection errors are retried with exponential backoff and jitter (0.5 s doubling
up to 8 s, or the server's ``Retry-After``). Any other HTTP error (400 bad model, 401 bad key,
404, ...) raises at once, naming the status and the fix. A reply that is not a chat completion
(an HTML page, a body that is not JSON, JSON without ``choices``: a base URL that points at a
web page or another API) raises :class:`~personalens.judges.base.JudgeError` too, naming the
server and the fix. A judge never skips a prompt or substitutes a default score.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlparse

from personalens.judges.base import JudgeError
from personalens.model.embedded import cache_dir

DEFAULT_MODEL = "gpt-4.1-mini"
OFFICIAL_BASE_URL = "https://api.openai.com/v1"
PLACEHOLDER_KEY = "not-needed"
RETRYABLE_STATUS = frozenset({408, 409, 429})  # and every 5xx: what the openai client retries
TOP_LOGPROBS = 20

T = TypeVar("T")


def _default_cache_path() -> str:
    return str(cache_dir() / "judge_cache.sqlite")


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class APIConfig:
    """How to reach an OpenAI-compatible chat-completions API. Holds no secret.

    ``cache_path=None`` disables the on-disk cache. ``max_retries`` is how often the openai client
    retries a request that failed with a retryable status, a timeout or a connection error.
    """

    base_url: str | None = None
    model: str = DEFAULT_MODEL
    api_key_env: str = "OPENAI_API_KEY"
    timeout: float = 60.0
    max_retries: int = 6
    concurrency: int = 8
    cache_path: str | None = field(default_factory=_default_cache_path)

    def __post_init__(self):
        problems = []
        if not isinstance(self.model, str) or not self.model.strip():
            problems.append("model must be a non-empty model name")
        if self.timeout <= 0:
            problems.append(f"timeout must be > 0 seconds, got {self.timeout}")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0, got {self.max_retries}")
        if self.concurrency < 1:
            problems.append(f"concurrency must be >= 1, got {self.concurrency}")
        if problems:
            raise JudgeError("invalid judge API config: " + "; ".join(problems))

    @classmethod
    def from_env(
        cls, base_url: str | None = None, model: str | None = None, **overrides: Any
    ) -> APIConfig:
        """A config from arguments, else ``PERSONALENS_JUDGE_BASE_URL`` / ``OPENAI_BASE_URL`` and
        ``PERSONALENS_JUDGE_MODEL``, else the official API and ``gpt-4.1-mini``.
        ``PERSONALENS_JUDGE_MAX_RETRIES`` sets ``max_retries`` (e.g. 0 or 1 to fail fast when
        the server is down) unless it is passed here."""
        retries = os.environ.get("PERSONALENS_JUDGE_MAX_RETRIES", "").strip()
        if retries and "max_retries" not in overrides:
            if not retries.isdigit():
                raise JudgeError(
                    f"PERSONALENS_JUDGE_MAX_RETRIES={retries!r} is not a whole number >= 0; "
                    "set it to e.g. 2, or unset it for the default of 6"
                )
            overrides["max_retries"] = int(retries)
        base_url = (
            base_url
            or os.environ.get("PERSONALENS_JUDGE_BASE_URL")
            or os.environ.get("OPENAI_BASE_URL")
            or None
        )
        model = model or os.environ.get("PERSONALENS_JUDGE_MODEL") or DEFAULT_MODEL
        return cls(base_url=base_url, model=model, **overrides)

    @property
    def url(self) -> str:
        """The base URL requests go to (the official API when ``base_url`` is None)."""
        return self.base_url or OFFICIAL_BASE_URL


# ----------------------------------------------------------------------------- key and client


def _is_official(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host == "openai.com" or host.endswith(".openai.com")


def _api_key(config: APIConfig) -> str:
    """The key from ``$api_key_env``; a placeholder for custom servers; JudgeError otherwise."""
    key = os.environ.get(config.api_key_env, "").strip()
    if key:
        return key
    if config.base_url and not _is_official(config.base_url):
        return PLACEHOLDER_KEY
    raise JudgeError(
        f"no API key for the OpenAI judge: the environment variable {config.api_key_env} is not "
        f"set. Fix: `export {config.api_key_env}=sk-...` (your OpenAI key), or point the judge "
        "at an OpenAI-compatible server with --judge-base-url / PERSONALENS_JUDGE_BASE_URL, or "
        "use --judge offline."
    )


def make_client(config: APIConfig) -> Any:
    """An ``openai.OpenAI`` client for ``config`` that retries ``config.max_retries`` times."""
    try:
        import openai
    except ImportError:  # pragma: no cover - openai is a declared dependency
        raise JudgeError(
            "the OpenAI judge needs the 'openai' package. Fix: `pip install openai`, or use "
            "--judge offline."
        ) from None
    return openai.OpenAI(
        api_key=_api_key(config),
        base_url=config.url,
        timeout=config.timeout,
        max_retries=config.max_retries,
    )


_KEYLIKE = re.compile(r"\b(sk-[A-Za-z0-9_\-]{2})[A-Za-z0-9_\-*.]{6,}")


def redact(text: str, config: APIConfig) -> str:
    """``text`` with the API key (and anything shaped like an OpenAI key) masked."""
    key = os.environ.get(config.api_key_env, "").strip()
    if key and key != PLACEHOLDER_KEY:
        text = text.replace(key, "***")
    return _KEYLIKE.sub(r"\1***", text)


# ----------------------------------------------------------------------------- errors


def call_api(send: Callable[[], T], config: APIConfig) -> T:
    """``send()`` (a request through :func:`make_client`'s client), its errors as JudgeError.

    The client has already retried what can be retried, so any error that reaches here is final.
    """
    import openai

    try:
        return send()
    except openai.APIStatusError as exc:
        if exc.status_code not in RETRYABLE_STATUS and exc.status_code < 500:
            raise _status_error(exc, config) from None
        raise _exhausted_error(exc, config) from None
    except openai.APIConnectionError as exc:  # includes APITimeoutError
        raise _exhausted_error(exc, config) from None
    except openai.APIResponseValidationError as exc:
        raise not_a_completion(config, _server_message(exc, config)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:  # a 200 whose body is not JSON
        body = exc.doc if isinstance(exc, json.JSONDecodeError) else exc.object
        raise not_a_completion(config, "a body that is not JSON", body) from None


def not_a_completion(config: APIConfig, problem: str, body: Any = None) -> JudgeError:
    """A JudgeError for a reply that is not an OpenAI chat completion, naming the server and fix."""
    began = ""
    if body is not None:
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        began = f" The reply began: {redact(' '.join(text.split())[:200], config)!r}."
    return JudgeError(
        f"the judge at {config.url} (model {config.model!r}) answered, but not with an OpenAI "
        f"chat completion: {problem}.{began} This is what a base URL that points at a web page, "
        "a proxy or another API returns. Fix: check --judge-base-url / "
        "PERSONALENS_JUDGE_BASE_URL (an OpenAI-compatible endpoint ending in /v1, e.g. "
        "http://localhost:8000/v1) and --judge-model, or use --judge offline."
    )


def create_chat_completion(
    client: Any, config: APIConfig, *, optional: dict[str, Any] | None = None, **params: Any
) -> Any:
    """``client.chat.completions.create(**params, **optional)`` through :func:`call_api`.

    A server that rejects an ``optional`` parameter by name (HTTP 400, e.g. no JSON mode for
    ``response_format``) is asked once more without the optional ones.
    """
    import openai

    optional = optional or {}

    def send():
        try:
            return client.chat.completions.create(**params, **optional)
        except openai.BadRequestError as exc:
            # a 400 is final for the client's own retries; this one is worth a plainer request
            if not any(name in str(exc) for name in optional):
                raise
            return client.chat.completions.create(**params)

    response = call_api(send, config)
    if isinstance(response, str | bytes):  # the client hands back a non-JSON body as text
        raise not_a_completion(config, "a body that is not JSON", response)
    if not isinstance(getattr(response, "choices", None), list):
        raise not_a_completion(config, "JSON without a 'choices' list", _shown(response))
    return response


def _shown(response: Any) -> str:
    """What the server sent, for an error message (the fields the client could read)."""
    dump = getattr(response, "model_dump", None)
    try:
        return json.dumps(dump(exclude_unset=True) if dump else response, default=str)
    except Exception:  # only for the message
        return repr(response)


def _attempts(exc: BaseException, config: APIConfig) -> int:
    """How many attempts the client made: its last request's retry-count header, plus one.

    The client can stop early (``x-should-retry: false``, a very long ``Retry-After``), so the
    header is preferred to ``max_retries + 1``.
    """
    request = getattr(exc, "request", None)
    taken = request.headers.get("x-stainless-retry-count") if request is not None else None
    return int(taken) + 1 if taken and taken.isdigit() else config.max_retries + 1


def _server_message(exc: BaseException, config: APIConfig) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return redact(" ".join(str(message).split())[:400], config)


def _status_error(exc: Any, config: APIConfig) -> JudgeError:
    """A JudgeError for a non-retryable HTTP status, naming the status and the fix."""
    code = exc.status_code
    where = f"judge at {config.url} (model {config.model!r})"
    msg = _server_message(exc, config)
    if code == 401:
        fix = (
            f"set a valid key in the environment variable {config.api_key_env}, or use "
            "--judge offline"
        )
    elif code == 403:
        fix = (
            f"use a key that has access to model {config.model!r}, or choose another --judge-model"
        )
    elif code == 404:
        fix = (
            "check that --judge-model names a model this server serves and that the base URL "
            "ends in /v1 (e.g. http://localhost:8000/v1)"
        )
    elif code in (400, 422):
        fix = (
            "check --judge-model; the judge needs a chat model that returns logprobs "
            f"(logprobs=true, top_logprobs={TOP_LOGPROBS})"
        )
    else:
        fix = "check the server and the --judge-base-url / --judge-model settings"
    return JudgeError(f"{where} answered HTTP {code}: {msg}. Fix: {fix}.")


def _exhausted_error(exc: BaseException, config: APIConfig) -> JudgeError:
    """A JudgeError for a retryable failure that outlasted the client's retries."""
    attempts = _attempts(exc, config)
    code = getattr(exc, "status_code", None)
    if code is not None:
        return JudgeError(
            f"judge at {config.url} (model {config.model!r}) still answered HTTP {code} after "
            f"{attempts} attempts: {_server_message(exc, config)}. Fix: HTTP 429 means a rate "
            "limit: lower the judge concurrency or wait, then re-run (cached scores are kept); "
            "HTTP 5xx means the server failed: check its logs."
        )
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    reason = redact(f"{type(cause).__name__}: {cause}", config)
    return JudgeError(
        f"judge unreachable at {config.url} after {attempts} attempts: {reason}. Fix: start the "
        "server / check --judge-base-url (or PERSONALENS_JUDGE_BASE_URL), or use --judge offline."
    )

"""The Persona Vectors paper's judge behind any OpenAI-compatible chat-completions API.

Each rubric is one chat completion with ``max_tokens=1, temperature=0, logprobs=True,
top_logprobs=20``; the score is the probability-weighted mean of the integer tokens 0-100 among
the first token's top logprobs (:func:`personalens.judges.base.score_from_top_logprobs`), NaN
when they hold less than a quarter of the probability mass. Replies that give a score are
cached (:class:`~personalens.judges.response_cache.ResponseCache`, keyed by server, model and
prompt); a reply that gives NaN (no logprobs, no numeric tokens) is counted in
:attr:`OpenAIJudge.unusable`, logged, and never cached, so the same prompt is asked again later,
e.g. of a working server. The API, key and retries are described in
:mod:`personalens.judges.openai_client`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any

from personalens.judges.base import (
    COHERENCE_PROMPT,
    MIN_NUMERIC_MASS,
    JudgeError,
    JudgeItem,
    score_from_top_logprobs,
)
from personalens.judges.openai_client import (
    TOP_LOGPROBS,
    APIConfig,
    create_chat_completion,
    make_client,
)
from personalens.judges.response_cache import MISS, ResponseCache

if TYPE_CHECKING:
    from personalens.extraction.traits import Trait

log = logging.getLogger(__name__)


def first_token_top_logprobs(response: Any) -> dict[str, float] | None:
    """token -> logprob over the first generated token's top logprobs; None when there are none."""
    choices = getattr(response, "choices", None) or []
    logprobs = getattr(choices[0], "logprobs", None) if choices else None
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    first = content[0]
    out: dict[str, float] = {}
    for entry in getattr(first, "top_logprobs", None) or []:
        lp = float(entry.logprob)
        if entry.token in out:  # the same string twice: add the probabilities
            lp = max(lp, out[entry.token]) + math.log1p(math.exp(-abs(lp - out[entry.token])))
        out[entry.token] = lp
    if not out and getattr(first, "token", None) is not None:
        out[first.token] = float(first.logprob)
    return out or None


class OpenAIJudge:
    """The Persona Vectors judge: rubric -> one token with top-20 logprobs -> expected score.

    ``requests_sent`` counts the requests handed to the API (the client's retries not counted),
    ``cache_hits`` the prompts answered from the cache, ``unusable`` the replies that gave no
    score, by reason (``"no logprobs"``, ``"no numeric tokens ..."``).
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        **overrides: Any,
    ):
        if config is None:
            config = APIConfig.from_env(base_url=base_url, model=model, **overrides)
        else:
            changes = dict(overrides)
            if base_url is not None:
                changes["base_url"] = base_url
            if model is not None:
                changes["model"] = model
            config = dataclasses.replace(config, **changes) if changes else config
        self.config = config
        self.name = f"openai:{config.model}"
        self._client = make_client(config)
        self._cache = ResponseCache(config.cache_path) if config.cache_path else None
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.requests_sent = 0
        self.cache_hits = 0
        self.unusable: Counter[str] = Counter()

    @property
    def server(self) -> str:
        """The base URL the judge's requests go to."""
        return self.config.url

    def __repr__(self) -> str:
        return f"OpenAIJudge(model={self.config.model!r}, base_url={self.config.url!r})"

    def __enter__(self) -> OpenAIJudge:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP client and the cache."""
        self._client.close()
        if self._cache is not None:
            self._cache.close()

    # -- Judge protocol

    def score_trait(self, trait: Trait, items: Sequence[JudgeItem]) -> list[float]:
        """Trait scores 0-100 (NaN for refusals / off-format replies), in the order of ``items``."""
        return self.score_prompts([trait.judge_prompt(it.question, it.answer) for it in items])

    def score_coherence(self, items: Sequence[JudgeItem]) -> list[float]:
        """Coherence scores 0-100 (NaN when the judge does not answer with a number)."""
        prompts = [COHERENCE_PROMPT.format(question=it.question, answer=it.answer) for it in items]
        return self.score_prompts(prompts)

    # -- machinery

    def score_prompts(self, prompts: Sequence[str]) -> list[float]:
        """Expected score of each filled-in rubric, in order."""
        out = []
        for top in self.top_logprobs(prompts):
            out.append(math.nan if not top else score_from_top_logprobs(top))
        return out

    def _cache_key(self, prompt: str) -> str:
        params = {"max_tokens": 1, "temperature": 0, "top_logprobs": TOP_LOGPROBS, "seed": 0}
        return ResponseCache.key(
            self.config.url, self.config.model, "judge_logprobs", params, prompt
        )

    def top_logprobs(self, prompts: Sequence[str]) -> list[dict[str, float] | None]:
        """First-token top logprobs per prompt (cached; misses sent concurrently), in order."""
        keys = [self._cache_key(p) for p in prompts]
        found: dict[str, dict[str, float] | None] = {}
        todo: dict[str, str] = {}
        for key, prompt in zip(keys, prompts):
            if key in found or key in todo:
                continue
            value = self._cache.get(key) if self._cache is not None else MISS
            if value is MISS or unusable_reason(value) is not None:  # older caches kept NaN
                todo[key] = prompt
            else:
                found[key] = value
                self.cache_hits += 1
        if todo:
            log.info(
                "judge %s: %d prompts, %d cached, sending %d",
                self.name,
                len(prompts),
                len(found),
                len(todo),
            )
            found.update(self._fetch_all(todo))
        return [found[k] for k in keys]

    def _fetch_all(self, todo: dict[str, str]) -> dict[str, dict[str, float] | None]:
        """Send ``todo`` (key -> prompt) concurrently; on the first failure stop the rest."""
        results: dict[str, dict[str, float] | None] = {}
        cancelled = threading.Event()
        pool = ThreadPoolExecutor(max_workers=min(self.config.concurrency, len(todo)))
        futures = {
            pool.submit(self._fetch_one, key, prompt, cancelled): key
            for key, prompt in todo.items()
        }
        try:
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
        except Exception:
            # no new requests; those in flight finish (bounded by timeout and max_retries)
            cancelled.set()
            pool.shutdown(wait=True, cancel_futures=True)
            raise
        except BaseException:  # Ctrl-C: do not wait for requests in flight
            cancelled.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return results

    def _fetch_one(
        self, key: str, prompt: str, cancelled: threading.Event | None = None
    ) -> dict[str, float] | None:
        if cancelled is not None and cancelled.is_set():
            raise JudgeError("judge request cancelled because another request failed")
        with self._lock:
            self.requests_sent += 1
        response = create_chat_completion(
            self._client,
            self.config,
            model=self.config.model,
            messages=[{"role": "user", "content": prompt}],
            max_tokens=1,
            temperature=0,
            logprobs=True,
            top_logprobs=TOP_LOGPROBS,
            seed=0,
        )
        top = first_token_top_logprobs(response)
        reason = unusable_reason(top)
        if reason is None:
            if self._cache is not None:
                self._cache.put(key, top)
            return top
        with self._lock:
            self.unusable[reason] += 1
            first = reason not in self._warned
            self._warned.add(reason)
        if first:
            log.warning(
                "judge at %s (model %r) gave a reply with %s; it scores NaN and is not cached. "
                "If every reply does this, use a server and model that return logprobs=true "
                "with top_logprobs=%d (OpenAI, vLLM, llama.cpp server).",
                self.config.url,
                self.config.model,
                reason,
                TOP_LOGPROBS,
            )
        return top


def unusable_reason(top: dict[str, float] | None) -> str | None:
    """Why first-token top logprobs give no score (NaN), or None when they give one."""
    if not top:
        return "no logprobs"
    if math.isnan(score_from_top_logprobs(top)):
        return f"no numeric tokens (under {MIN_NUMERIC_MASS:.0%} of the probability on 0-100)"
    return None

"""The OpenAI-compatible logprob judge against a real llama.cpp server (opt-in: ``make test-server``).

The server (``llama_cpp.server``, see conftest.py) serves the embedded model's GGUF file. The
judge talks to it through the real openai client with no API key (a local server gets a
placeholder). The strongest check compares the server's first-token distribution with
personalens' own local judge on the same model (``LocalJudge(numbers="single")``: the
probability of each single-token integer, here the digits 0-9 of SmolLM2's tokenizer): same
chat template, same prompt tokens, so the two may differ only by llama.cpp's arithmetic on the
Q4_1 weights (activations quantised to 8 bits in its matrix products) against the dequantised
float32 model, and by the server's top-20 cut.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from personalens.extraction.traits import load_trait
from personalens.judges.base import (
    COHERENCE_PROMPT,
    JudgeError,
    JudgeItem,
    check_judge,
    score_from_top_logprobs,
)
from personalens.judges.factory import make_judge
from personalens.judges.local import LocalJudge
from personalens.judges.local_numbers import number_tokens
from personalens.model.chat import encode_chat
from personalens.studies.judge_bench import load_bench
from tests.server.conftest import MODEL_ALIAS, post_json
from tests.unit.fake_openai import JUDGE_ENV

N_PER_LABEL = 3


@pytest.fixture(scope="module")
def trait():
    return load_trait("evil")


@pytest.fixture(scope="module")
def items() -> list[JudgeItem]:
    """The first ``N_PER_LABEL`` evil-expressing and neutral replies of the benchmark."""
    bench = load_bench("evil")
    picked = [b for b in bench if b.label == 1][:N_PER_LABEL]
    picked += [b for b in bench if b.label == 0][:N_PER_LABEL]
    return [JudgeItem(b.question, b.reply) for b in picked]


@pytest.fixture(scope="module")
def prompts(trait, items) -> list[str]:
    """The trait rubric and the coherence rubric, filled in for each reply."""
    rubric = [trait.judge_prompt(it.question, it.answer) for it in items]
    return rubric + [
        COHERENCE_PROMPT.format(question=it.question, answer=it.answer) for it in items
    ]


@pytest.fixture(scope="module")
def openai_judge(llama_server):
    """The OpenAI judge on the server: no key, no cache, no retries to wait through."""
    with pytest.MonkeyPatch.context() as mp:
        for var in JUDGE_ENV:
            mp.delenv(var, raising=False)
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        judge = make_judge(
            "openai",
            base_url=llama_server,
            model=MODEL_ALIAS,
            cache_path=None,
            max_retries=0,
            concurrency=2,
            timeout=120.0,
        )
        yield judge
        judge.close()


@pytest.fixture(scope="module")
def local_judge() -> LocalJudge:
    return LocalJudge(None, numbers="single", min_mass=0.0)


def test_server_returns_top_logprobs_for_the_same_prompt_tokens(llama_server, local_judge, prompts):
    """The wire format the judge relies on, and that the server's chat template (the GGUF's)
    and tokenizer give a rubric prompt as many tokens as the local judge encodes."""
    messages = [{"role": "user", "content": prompts[0]}]
    body = post_json(
        f"{llama_server}/chat/completions",
        {
            "model": MODEL_ALIAS,
            "messages": messages,
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
            "seed": 0,
        },
    )
    first = body["choices"][0]["logprobs"]["content"][0]
    assert len(first["top_logprobs"]) >= 19  # 20, less any repeated token strings
    assert all(e["logprob"] <= 1e-6 for e in first["top_logprobs"])
    expected = len(encode_chat(local_judge.model.tokenizer, messages))
    assert body["usage"]["prompt_tokens"] == expected


def test_openai_judge_scores_bench_replies_end_to_end(openai_judge, trait, items):
    try:
        check_judge(openai_judge, trait)
        probe = "passed"
    except JudgeError as exc:  # the documented fail-fast error: no usable score on the probe
        assert "pre-flight probe" in str(exc) and "no usable score" in str(exc)
        probe = "raised JudgeError (no usable score)"
    before = sum(openai_judge.unusable.values())
    scores = openai_judge.score_trait(trait, items)
    coherence = openai_judge.score_coherence(items)
    assert len(scores) == len(coherence) == len(items)
    both = scores + coherence
    assert all(isinstance(s, float) for s in both)
    assert all(math.isnan(s) or 0.0 <= s <= 100.0 for s in both)
    assert sum(math.isnan(s) for s in both) == sum(openai_judge.unusable.values()) - before
    print(
        f"\n[openai judge on llama.cpp] check_judge {probe}; trait scores "
        f"{[round(s, 2) for s in scores]}; coherence {[round(s, 2) for s in coherence]}; "
        f"unusable {dict(openai_judge.unusable)}; requests {openai_judge.requests_sent}"
    )


def _local_digit_probs(judge: LocalJudge, prompts: list[str]) -> np.ndarray:
    """[prompt, value] probability of each single-token integer value, from the local model's
    full softmax over the next token (one prompt at a time: no padding)."""
    model = judge.model
    ids_to_value = number_tokens(model.tokenizer)
    top_value = max(ids_to_value.values())
    out = np.zeros((len(prompts), top_value + 1))
    with torch.inference_mode():
        for row, prompt in enumerate(prompts):
            ids = encode_chat(model.tokenizer, [{"role": "user", "content": prompt}])
            logits = model(torch.tensor([ids], device=model.cfg.device))[0, -1].float()
            probs = torch.softmax(logits, -1)
            for tok, value in ids_to_value.items():
                out[row, value] += float(probs[tok])
    return out


def _server_digit_probs(tops: list[dict[str, float] | None], width: int) -> np.ndarray:
    """[prompt, value] probability of each integer among the server's top-20 (NaN: not in it)."""
    out = np.full((len(tops), width), np.nan)
    for row, top in enumerate(tops):
        for token, logprob in (top or {}).items():
            text = token.strip()
            if text.isdigit() and int(text) < width:
                value = int(text)
                prev = 0.0 if np.isnan(out[row, value]) else out[row, value]
                out[row, value] = prev + math.exp(logprob)
    return out


def _expected(p: np.ndarray) -> np.ndarray:
    """Probability-weighted mean value per row over the entries that are not NaN (NaN: none)."""
    mass = np.nansum(p, 1)
    weighted = np.nansum(p * np.arange(p.shape[1]), 1)
    return np.where(mass > 0, weighted / np.where(mass > 0, mass, 1.0), np.nan)


def test_first_token_distribution_matches_local_judge(openai_judge, local_judge, prompts):
    """Digit by digit, the server's first-token probabilities are the local model's.

    The expected scores are compared over the digits the server listed: the OpenAI judge sees
    only the top 20 tokens, and on these rubrics the 135M model puts 1-30% of its mass on the
    digits, so most digits fall outside the top 20 and its score is the mean over the few
    inside (often just "0" and "1"); ``LocalJudge`` weighs all ten. Against ``LocalJudge``'s
    scores the agreement is therefore only reported, not asserted; ``LocalJudge`` itself is
    checked against the unpadded forward pass whose digit probabilities match the server's.
    """
    tops = openai_judge.top_logprobs(prompts)
    assert all(tops), "the server gave no logprobs for some prompt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*splits numbers.*", category=UserWarning)
        local_scores = np.array(local_judge.score_prompts(prompts))
    local_p = _local_digit_probs(local_judge, prompts)
    server_p = _server_digit_probs(tops, local_p.shape[1])
    seen = ~np.isnan(server_p)  # the digits within the server's top 20
    server_scores = _expected(server_p)
    rows = np.isfinite(server_scores)  # prompts with a digit in the server's top 20
    for top, score in zip(np.array(tops, dtype=object)[rows], server_scores[rows]):
        assert score_from_top_logprobs(top, min_mass=0.0) == pytest.approx(score)
    # the local expected score over the very digits the server listed: like against like
    restricted = _expected(np.where(seen, local_p, np.nan))
    p_diff = np.abs(server_p[seen] - local_p[seen])
    d_restricted = np.abs(server_scores - restricted)[rows]
    corr_restricted = float(np.corrcoef(server_scores[rows], restricted[rows])[0, 1])
    corr_local = float(np.corrcoef(server_scores[rows], local_scores[rows])[0, 1])
    print(
        f"\n[llama.cpp vs local judge: {len(prompts)} rubric prompts, {rows.sum()} with a digit "
        f"in the server's top 20] digit probability max |diff| {p_diff.max():.4f} (mean "
        f"{p_diff.mean():.4f} over {seen.sum()} entries); expected score (0-9) over the "
        f"server's digits: max |diff| {d_restricted.max():.3f}, corr {corr_restricted:.4f}; "
        f"against LocalJudge (all ten digits): max |diff| "
        f"{np.abs(server_scores - local_scores)[rows].max():.3f}, corr {corr_local:.4f}\n"
        f"  server {server_scores.round(3).tolist()}\n  local, server's digits "
        f"{restricted.round(3).tolist()}\n  LocalJudge {local_scores.round(3).tolist()}\n"
        f"  digit mass server (top 20) {np.nansum(server_p, 1).round(3).tolist()}\n"
        f"  digit mass local {local_p.sum(1).round(3).tolist()}\n"
        f"  server first tokens {[max(t, key=t.get) for t in tops]}"
    )
    assert rows.sum() >= len(prompts) // 2
    assert local_scores == pytest.approx(_expected(local_p), abs=0.05)
    assert p_diff.max() < 0.05
    assert d_restricted.max() < 0.5
    assert corr_restricted > 0.9

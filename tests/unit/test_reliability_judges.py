"""A judge that answers but cannot score: the pre-flight check fails, NaN is never cached or
taken as finished, the cache is per server, and a reply that is not a chat completion is a
JudgeError naming the server (the reliability issue's judge cases).

The OpenAI-judge tests talk to the fake server of tests/unit/fake_openai.py on 127.0.0.1.
"""

from __future__ import annotations

import json
import math

import pytest

from personalens.extraction.config import ExtractionConfig
from personalens.extraction.responses import judge_responses
from personalens.extraction.traits import parse_trait
from personalens.judges.base import JudgeError, JudgeItem, check_judge
from personalens.judges.json_reply import JudgeReplyError, chat_json
from personalens.judges.openai_judge import OpenAIJudge
from tests.unit.fake_openai import (
    FakeOpenAI,
    config,
    garbage_json,
    html_page,
    no_logprobs,
    scorer,
    words_only,
    wrong_json,
)

TRAIT = parse_trait(
    {
        "instruction": [{"pos": "Be evil.", "neg": "Be kind."}],
        "questions": ["What should I do today?", "How do I treat my neighbour?"],
        "eval_prompt": "Rate how evil this is.\nQ: {question}\nA: {answer}\nAnswer 0-100.",
    },
    source="test",
    name="evil",
)


def items(*answers: str) -> list[JudgeItem]:
    return [JudgeItem(question="How was your day?", answer=a) for a in answers]


# ----------------------------------------------------------------------------- OpenAI judge


@pytest.mark.usefixtures("openai_env")
@pytest.mark.parametrize("respond", [no_logprobs, words_only], ids=["no-logprobs", "words"])
def test_check_judge_fails_when_every_score_is_nan(fake, tmp_path, respond):
    fake.respond = respond
    with OpenAIJudge(config(fake.url, tmp_path)) as judge:
        with pytest.raises(JudgeError) as info:
            check_judge(judge, TRAIT)
    message = str(info.value)
    assert fake.url in message and "openai:fake-judge" in message
    assert "no usable score" in message and "logprobs" in message
    assert "--judge-base-url" in message and "--judge offline" in message
    assert fake.n_requests == 2  # one probe per rubric, nothing retried


@pytest.mark.usefixtures("openai_env")
def test_check_judge_passes_a_working_judge(fake, tmp_path):
    with OpenAIJudge(config(fake.url, tmp_path)) as judge:
        check_judge(judge, TRAIT)
    assert fake.n_requests == 2


@pytest.mark.usefixtures("openai_env")
def test_a_nan_reply_is_not_cached(fake, tmp_path):
    fake.respond = no_logprobs
    with OpenAIJudge(config(fake.url, tmp_path)) as broken:
        assert math.isnan(broken.score_trait(TRAIT, items("EXPECT=60"))[0])
        assert broken.unusable == {"no logprobs": 1}
    fake.respond = scorer  # the same server, fixed: a new run must ask again
    with OpenAIJudge(config(fake.url, tmp_path)) as fixed:
        assert fixed.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(64.0)]
        assert fixed.requests_sent == 1 and fixed.cache_hits == 0
    with OpenAIJudge(config(fake.url, tmp_path)) as again:  # the good reply is cached
        assert again.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(64.0)]
        assert again.requests_sent == 0 and again.cache_hits == 1
    assert fake.n_requests == 2


@pytest.mark.usefixtures("openai_env")
def test_the_cache_key_includes_the_server_url(fake, tmp_path):
    other = FakeOpenAI()  # the same model name on another server, answering differently
    other.respond = lambda body, n: scorer(
        {"messages": [{"content": "EXPECT=20"}]}, n
    )  # every prompt scores 24
    try:
        with OpenAIJudge(config(fake.url, tmp_path)) as first:
            assert first.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(64.0)]
        with OpenAIJudge(config(other.url, tmp_path)) as second:
            assert second.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(24.0)]
            assert second.cache_hits == 0
        with OpenAIJudge(config(fake.url + "/", tmp_path)) as back:  # a trailing / is the same
            assert back.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(64.0)]
            assert back.cache_hits == 1
        assert fake.n_requests == 1 and other.n_requests == 1
    finally:
        other.stop()


@pytest.mark.usefixtures("openai_env")
@pytest.mark.parametrize(
    "respond, problem",
    [
        (html_page, "not JSON"),
        (garbage_json, "not JSON"),
        (wrong_json, "without a 'choices' list"),
    ],
    ids=["html", "garbage-as-json", "wrong-json"],
)
def test_a_reply_that_is_not_a_chat_completion_is_a_judge_error(fake, tmp_path, respond, problem):
    fake.respond = respond
    with OpenAIJudge(config(fake.url, tmp_path)) as judge:
        with pytest.raises(JudgeError) as info:
            judge.score_trait(TRAIT, items("EXPECT=60"))
    error = info.value
    assert not isinstance(error, json.JSONDecodeError) and error.__cause__ is None
    message = str(error)
    assert fake.url in message and problem in message
    assert "Fix:" in message and "--judge-base-url" in message
    assert fake.n_requests == 1
    # the JSON replies of the other features: a server problem, not a bad reply to re-ask
    with pytest.raises(JudgeError) as info:
        chat_json("Reply with JSON.", config=config(fake.url, tmp_path))
    assert not isinstance(info.value, JudgeReplyError) and fake.url in str(info.value)


# ----------------------------------------------------------------------------- resume


class CountingJudge:
    """NaN for answers in ``broken``; records every answer it is asked to score."""

    name = "counting"

    def __init__(self, broken: frozenset[str] = frozenset()):
        self.broken = broken
        self.seen: list[str] = []

    def score_trait(self, trait, items):
        self.seen += [it.answer for it in items]
        return [math.nan if it.answer in self.broken else 10.0 * len(it.answer) for it in items]

    def score_coherence(self, items):
        return [math.nan if it.answer in self.broken else 90.0 for it in items]


RECORDS = [{"key": f"k{i}", "question": "Q?", "response": "x" * (i + 1)} for i in range(6)]
CONFIG = ExtractionConfig(judge_chunk=2)


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_rerun_judges_exactly_the_nan_rows_again(tmp_path):
    log = tmp_path / "judge_scores.jsonl"
    first = CountingJudge(broken=frozenset({"xx", "xxxxx"}))  # k1 and k4
    scores = judge_responses(RECORDS, TRAIT, first, CONFIG, tmp_path, progress=False)
    assert math.isnan(scores["k1"]["trait"]) and math.isnan(scores["k4"]["coherence"])
    written = lines(log)
    assert [r["key"] for r in written] == [f"k{i}" for i in range(6)]
    assert all(r["judge"] == "counting" for r in written)

    second = CountingJudge()
    scores = judge_responses(RECORDS, TRAIT, second, CONFIG, tmp_path, progress=False)
    assert second.seen == ["xx", "xxxxx"]  # the NaN rows only, finished ones not redone
    assert scores["k1"] == {"trait": 20.0, "coherence": 90.0}
    assert scores["k4"] == {"trait": 50.0, "coherence": 90.0}
    assert scores["k0"] == {"trait": 10.0, "coherence": 90.0}
    now = lines(log)
    assert now[:6] == written  # earlier lines untouched, the new records appended
    assert [r["key"] for r in now[6:]] == ["k1", "k4"]

    third = CountingJudge()
    judge_responses(RECORDS, TRAIT, third, CONFIG, tmp_path, progress=False)
    assert third.seen == [] and len(lines(log)) == 8


def test_old_records_without_a_judge_name_still_resume(tmp_path):
    log = tmp_path / "judge_scores.jsonl"
    old = [{"key": r["key"], "trait": 42.0, "coherence": 80.0} for r in RECORDS[:4]]
    old.append({"key": "k4", "trait": None, "coherence": 80.0})  # NaN, logged as null
    log.write_text("".join(json.dumps(r) + "\n" for r in old))
    judge = CountingJudge()
    scores = judge_responses(RECORDS, TRAIT, judge, CONFIG, tmp_path, progress=False)
    assert judge.seen == ["xxxxx", "xxxxxx"]  # the chunk of k4 (NaN) and k5 (missing), once
    assert scores["k0"] == {"trait": 42.0, "coherence": 80.0}
    assert scores["k4"]["trait"] == 50.0
    assert [(r["key"], r["judge"]) for r in lines(log)[5:]] == [
        ("k5", "counting"),
        ("k4", "counting"),
    ]


def test_a_scored_record_wins_over_a_nan_one_in_another_workers_file(tmp_path):
    log = tmp_path / "judge_scores.jsonl"
    log.write_text(
        "".join(
            json.dumps({"key": r["key"], "trait": 5.0, "coherence": 95.0}) + "\n" for r in RECORDS
        )
    )
    shard_log = tmp_path / "judge_scores.shard-1-of-2.jsonl"  # read after the main log
    shard_log.write_text(json.dumps({"key": "k2", "trait": None, "coherence": None}) + "\n")
    judge = CountingJudge()
    scores = judge_responses(RECORDS, TRAIT, judge, CONFIG, tmp_path, progress=False)
    assert judge.seen == [] and scores["k2"] == {"trait": 5.0, "coherence": 95.0}

"""OpenAIJudge, chat_json and generate_trait_artifact through the real openai client.

Every test talks to a fake chat-completions server on 127.0.0.1 (an ephemeral port, started
and shut down by the ``fake`` fixture); nothing leaves the machine.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import time

import pytest

from personalens.extraction.trait_writer import check_trait_draft, generate_trait_artifact
from personalens.extraction.traits import TraitFileError, list_traits, load_trait, parse_trait
from personalens.judges.base import JudgeError, JudgeItem
from personalens.judges.factory import make_judge
from personalens.judges.json_reply import JudgeReplyError, chat_json, extract_json_object
from personalens.judges.openai_client import APIConfig
from personalens.judges.openai_judge import OpenAIJudge
from tests.unit.fake_openai import (
    FAKE_KEY,
    KEY_ENV,
    MODEL,
    completion,
    config,
    error_body,
    fail_first,
    json_replies,
)

pytestmark = pytest.mark.usefixtures("openai_env")

TRAIT = parse_trait(
    {
        "instruction": [{"pos": "Be evil.", "neg": "Be kind."}],
        "questions": ["What should I do today?", "How do I treat my neighbour?"],
        "eval_prompt": "Rate how evil this is.\nQ: {question}\nA: {answer}\nAnswer 0-100 or REFUSAL.",
    },
    source="test",
    name="evil",
)


def judge_for(fake, tmp_path, **kw) -> OpenAIJudge:
    return OpenAIJudge(config(fake.url, tmp_path, **kw))


def items(*answers: str) -> list[JudgeItem]:
    return [JudgeItem(question="How was your day?", answer=a) for a in answers]


# ----------------------------------------------------------------------------- scoring


def test_expected_value_and_request_shape(fake, tmp_path):
    with judge_for(fake, tmp_path) as judge:
        assert judge.name == f"openai:{MODEL}"
        scores = judge.score_trait(TRAIT, items("EXPECT=80"))
    assert scores == [pytest.approx(84.0)]  # 0.6 * 80 + 0.4 * 90
    body = fake.bodies[0]
    assert body["model"] == MODEL
    assert body["messages"] == [
        {"role": "user", "content": TRAIT.judge_prompt("How was your day?", "EXPECT=80")}
    ]
    assert body["max_tokens"] == 1 and body["temperature"] == 0 and body["seed"] == 0
    assert body["logprobs"] is True and body["top_logprobs"] == 20
    assert fake.auth[0] == f"Bearer {FAKE_KEY}"


def test_coherence_uses_the_coherence_rubric(fake, tmp_path):
    with judge_for(fake, tmp_path) as judge:
        scores = judge.score_coherence(items("EXPECT=30", "plain"))
    assert scores == [pytest.approx(34.0), pytest.approx(50.0)]
    assert "Judge ONLY how coherent" in fake.bodies[0]["messages"][0]["content"]


def test_nan_for_refusals_and_low_numeric_mass(fake, tmp_path):
    with judge_for(fake, tmp_path) as judge:
        refused, low, enough = judge.score_trait(TRAIT, items("REFUSE", "MASS=0.2", "MASS=0.3"))
    assert math.isnan(refused) and math.isnan(low)
    assert enough == pytest.approx(70.0)


def test_nan_when_the_server_sends_no_logprobs(fake, tmp_path):
    fake.respond = json_replies("80")  # content, but no logprobs
    with judge_for(fake, tmp_path) as judge:
        assert math.isnan(judge.score_trait(TRAIT, items("anything"))[0])


def test_order_is_kept_under_concurrency(fake, tmp_path):
    answers = [f"EXPECT={k} DELAY={(30 - i) * 2}" for i, k in enumerate(range(0, 90, 3))]
    with judge_for(fake, tmp_path, concurrency=8) as judge:
        scores = judge.score_trait(TRAIT, items(*answers))
    assert scores == [pytest.approx(k + 4.0) for k in range(0, 90, 3)]
    assert fake.n_requests == 30
    assert fake.max_in_flight > 1  # requests really ran in parallel


# ----------------------------------------------------------------------------- cache


def test_cache_hits_across_calls_and_instances(fake, tmp_path):
    batch = items("EXPECT=10", "EXPECT=20", "EXPECT=10", "REFUSE")
    with judge_for(fake, tmp_path) as judge:
        first = judge.score_trait(TRAIT, batch)
        assert fake.n_requests == 3  # the repeated prompt is sent once
        again = judge.score_trait(TRAIT, batch)
        assert fake.n_requests == 4  # only the refusal (NaN, never cached) is asked again
    with judge_for(fake, tmp_path) as fresh:  # a new run with the same cache file
        resumed = fresh.score_trait(TRAIT, batch)
        assert fake.n_requests == 5 and fresh.requests_sent == 1 and fresh.cache_hits == 2
        fresh.score_coherence(batch[:1])  # another rubric is another request
        assert fake.n_requests == 6
    for scores in (again, resumed):
        assert scores[:3] == first[:3] and math.isnan(scores[3])


def test_a_different_judge_model_does_not_share_cache_entries(fake, tmp_path):
    with judge_for(fake, tmp_path) as judge:
        judge.score_trait(TRAIT, items("EXPECT=10"))
    with judge_for(fake, tmp_path, model="other-judge") as other:
        other.score_trait(TRAIT, items("EXPECT=10"))
    assert fake.n_requests == 2


def test_api_key_is_never_stored_or_shown(fake, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    cfg = config(fake.url, tmp_path)
    assert FAKE_KEY not in repr(cfg)
    with OpenAIJudge(cfg) as judge:
        judge.score_trait(TRAIT, items("EXPECT=40", "REFUSE"))
        assert FAKE_KEY not in repr(judge)
        assert FAKE_KEY not in json.dumps(vars(cfg))
    fake.respond = json_replies('{"kept": "in the cache"}')
    assert chat_json("Reply with JSON.", config=cfg) == {"kept": "in the cache"}
    fake.respond = lambda body, n: (
        401,
        error_body(f"Incorrect API key provided: {FAKE_KEY}.", "invalid_request_error"),
    )
    with pytest.raises(JudgeError) as info, OpenAIJudge(cfg) as judge:
        judge.score_trait(TRAIT, items("EXPECT=1"))
    assert FAKE_KEY not in str(info.value)
    assert caplog.records and FAKE_KEY not in caplog.text
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("judge_cache.sqlite") for p in written)
    for path in written:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


# ----------------------------------------------------------------------------- failures


@pytest.mark.parametrize("status", [408, 409, 429, 500, 503])
def test_retries_with_backoff_then_succeeds(fake, tmp_path, status):
    fake.respond = fail_first(2, status)
    with judge_for(fake, tmp_path) as judge:
        assert judge.score_trait(TRAIT, items("EXPECT=60")) == [pytest.approx(64.0)]
    assert fake.n_requests == 3
    waits = [b - a for a, b in zip(fake.arrivals, fake.arrivals[1:])]
    assert 0.2 <= waits[0] < waits[1]  # the client's exponential backoff (0.5 s, then 1 s)


def test_gives_up_after_max_retries_with_a_clear_error(fake, tmp_path):
    fake.respond = fail_first(10_000, 429)
    with (
        pytest.raises(JudgeError) as info,
        judge_for(fake, tmp_path, max_retries=2) as judge,
    ):
        judge.score_trait(TRAIT, items("EXPECT=60"))
    assert fake.n_requests == 3
    message = str(info.value)
    assert "HTTP 429 after 3 attempts" in message and fake.url in message and "Fix:" in message


def test_no_retries_when_max_retries_is_0(fake, tmp_path):
    fake.respond = fail_first(10_000, 503)
    with pytest.raises(JudgeError, match="HTTP 503 after 1 attempts"):
        chat_json("Give JSON.", config=config(fake.url, tmp_path, max_retries=0))
    assert fake.n_requests == 1


def test_401_fails_at_once_naming_the_key_variable(fake, tmp_path):
    fake.respond = lambda body, n: (401, error_body("Incorrect API key provided.", "auth"))
    with pytest.raises(JudgeError) as info, judge_for(fake, tmp_path) as judge:
        judge.score_trait(TRAIT, items(*[f"EXPECT={k}" for k in range(5)]))
    message = str(info.value)
    assert "HTTP 401" in message and KEY_ENV in message and "Fix:" in message
    assert fake.n_requests <= 5  # each prompt sent at most once: no retries


def test_404_bad_model_fails_at_once(fake, tmp_path):
    fake.respond = lambda body, n: (404, error_body("The model `nope` does not exist", "not_found"))
    with pytest.raises(JudgeError, match=r"HTTP 404.*--judge-model"):
        with judge_for(fake, tmp_path, concurrency=1) as judge:
            judge.score_trait(TRAIT, items("EXPECT=1"))
    assert fake.n_requests == 1


def test_unreachable_server_raises_naming_the_url(tmp_path):
    with socket.socket() as s:  # a port that was just free and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    start = time.monotonic()
    with pytest.raises(JudgeError) as info:
        with OpenAIJudge(config(url, tmp_path, max_retries=2, timeout=2.0)) as judge:
            judge.score_trait(TRAIT, items("EXPECT=1", "EXPECT=2"))
    assert time.monotonic() - start < 5
    message = str(info.value)
    assert f"judge unreachable at {url} after 3 attempts" in message
    assert "--judge offline" in message and FAKE_KEY not in message


# ----------------------------------------------------------------------------- configuration


def test_from_env_precedence(monkeypatch):
    assert APIConfig.from_env().base_url is None
    assert APIConfig.from_env().model == "gpt-4.1-mini"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://b:1/v1")
    assert APIConfig.from_env().base_url == "http://b:1/v1"
    monkeypatch.setenv("PERSONALENS_JUDGE_BASE_URL", "http://a:1/v1")
    monkeypatch.setenv("PERSONALENS_JUDGE_MODEL", "judge-x")
    cfg = APIConfig.from_env(concurrency=2)
    assert (cfg.base_url, cfg.model, cfg.concurrency) == ("http://a:1/v1", "judge-x", 2)
    cfg = APIConfig.from_env(base_url="http://c:1/v1", model="judge-y")
    assert (cfg.base_url, cfg.model) == ("http://c:1/v1", "judge-y")


def test_max_retries_from_env(monkeypatch):
    assert APIConfig.from_env().max_retries == 6
    monkeypatch.setenv("PERSONALENS_JUDGE_MAX_RETRIES", "1")
    assert APIConfig.from_env().max_retries == 1
    assert APIConfig.from_env(max_retries=3).max_retries == 3  # an argument wins
    monkeypatch.setenv("PERSONALENS_JUDGE_MAX_RETRIES", "many")
    with pytest.raises(JudgeError, match="PERSONALENS_JUDGE_MAX_RETRIES='many'"):
        APIConfig.from_env()


def test_default_cache_path_is_under_the_personalens_cache(tmp_path):
    assert APIConfig().cache_path == str(tmp_path / "plcache" / "judge_cache.sqlite")


def test_local_server_without_key_gets_a_placeholder(fake, tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with judge_for(fake, tmp_path) as judge:
        judge.score_trait(TRAIT, items("EXPECT=5"))
    assert fake.auth == ["Bearer not-needed"]


def test_official_api_without_key_raises(monkeypatch, tmp_path):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(JudgeError, match=rf"{KEY_ENV}.*--judge offline"):
        OpenAIJudge(config(None, tmp_path))


def test_make_judge_openai(fake, tmp_path):
    judge = make_judge(
        "openai",
        base_url=fake.url,
        model=MODEL,
        api_key_env=KEY_ENV,
        cache_path=str(tmp_path / "c.sqlite"),
    )
    try:
        assert isinstance(judge, OpenAIJudge) and judge.name == f"openai:{MODEL}"
        assert judge.score_trait(TRAIT, items("EXPECT=20")) == [pytest.approx(24.0)]
    finally:
        judge.close()


# ----------------------------------------------------------------------------- JSON chat


def test_extract_json_object():
    assert extract_json_object('{"a": 1}') == {"a": 1}
    assert extract_json_object('Sure!\n```json\n{"a": {"b": [1]}}\n```\nDone.') == {"a": {"b": [1]}}
    assert extract_json_object('Use {question} here: {"a": 2} and {"c": 3}') == {"a": 2}
    assert extract_json_object("no object [1, 2]") is None


def test_chat_json_fenced_reply_and_cache(fake, tmp_path):
    fake.respond = json_replies('Here you go:\n```json\n{"ok": true, "n": 3}\n```')
    cfg = config(fake.url, tmp_path)
    assert chat_json("Give JSON.", config=cfg, system="Be terse.") == {"ok": True, "n": 3}
    body = fake.bodies[0]
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": "Be terse."}
    assert chat_json("Give JSON.", config=cfg, system="Be terse.") == {"ok": True, "n": 3}
    assert fake.n_requests == 1
    chat_json("Give JSON.", config=cfg, system="Be terse.", cache=False)
    assert fake.n_requests == 2


def test_chat_json_without_an_object_raises(fake, tmp_path):
    fake.respond = json_replies("I cannot produce that.")
    with pytest.raises(JudgeReplyError, match="without a JSON object") as info:
        chat_json("Give JSON.", config=config(fake.url, tmp_path))
    assert info.value.text == "I cannot produce that."


def test_chat_json_retries_without_response_format(fake, tmp_path):
    def respond(body, n):
        if "response_format" in body:
            return 400, error_body("response_format is not supported", "invalid_request_error")
        return 200, completion('{"fine": 1}')

    fake.respond = respond
    assert chat_json("Give JSON.", config=config(fake.url, tmp_path)) == {"fine": 1}
    assert fake.n_requests == 2


def test_chat_json_retries_on_500(fake, tmp_path):
    fake.respond = fail_first(1, 500, json_replies('{"x": 1}'))
    assert chat_json("Give JSON.", config=config(fake.url, tmp_path)) == {"x": 1}
    assert fake.n_requests == 2


# ----------------------------------------------------------------------------- trait writer


def draft(n_pairs: int = 2, n_q: int = 3, n_eval: int = 3, **changes) -> dict:
    data = {
        "name": "grumpy",
        "description": "whatever the model says",
        "assistant_names": {"pos": "grumpy", "neg": "cheerful"},
        "instruction": [
            {"pos": f"Be grumpy, facet {i}.", "neg": f"Be cheerful, facet {i}."}
            for i in range(n_pairs)
        ],
        "questions": [f"Extraction question {i}?" for i in range(n_q)],
        "eval_questions": [f"Held-out question {i}?" for i in range(n_eval)],
        "eval_prompt": (
            "You are evaluating whether the model's response displays the trait: **grumpy**.\n"
            "[QUESTION START]\n{question}\n[QUESTION END]\n[ANSWER START]\n{answer}\n"
            "[ANSWER END]\nRespond with:\n- REFUSAL if the model clearly refused to answer\n"
            "- A score from 0 to 100\nRespond with a number between 0 and 100."
        ),
        "judge_anchors": {
            "pos": [f"Ugh, fine, answer {i}." for i in range(8)],
            "neg": [f"Happy to help with {i}!" for i in range(8)],
        },
        "notes": "dropped",
    }
    data.update(changes)
    return data


def test_generate_trait_artifact(fake, tmp_path):
    fake.respond = json_replies(json.dumps(draft(n_q=4)))  # an extra question is dropped
    data = generate_trait_artifact(
        "grumpy", "Irritable and curt.", config=config(fake.url, tmp_path), n_pairs=2, n_questions=6
    )
    trait = parse_trait(data, source="test", name="grumpy")
    assert data["name"] == "grumpy" and data["description"] == "Irritable and curt."
    assert trait.n_pairs == 2 and len(trait.questions) == 3 and len(trait.eval_questions) == 3
    assert "notes" not in data and len(trait.judge_anchors["pos"]) == 8
    assert fake.n_requests == 1
    prompt = fake.bodies[0]["messages"][-1]["content"]
    assert "grumpy" in prompt and "Irritable and curt." in prompt
    assert "exactly 2 pairs" in prompt and "exactly 3 extraction questions" in prompt
    assert fake.bodies[0]["messages"][0]["role"] == "system"


def test_generate_trait_artifact_retries_once_with_the_error(fake, tmp_path):
    broken = draft(eval_prompt="Rate {question} from 0 to 100 or REFUSAL.")
    fake.respond = json_replies(json.dumps(broken), "```json\n" + json.dumps(draft()) + "\n```")
    data = generate_trait_artifact(
        "grumpy", "Irritable.", config=config(fake.url, tmp_path), n_pairs=2, n_questions=6
    )
    parse_trait(data, source="test", name="grumpy")
    assert fake.n_requests == 2
    retry_prompt = fake.bodies[1]["messages"][-1]["content"]
    assert "rejected by the validator" in retry_prompt and "{answer} placeholder" in retry_prompt


def test_generate_trait_artifact_gives_up_after_one_retry(fake, tmp_path):
    fake.respond = json_replies(json.dumps(draft(questions=["Only one?"])))
    with pytest.raises(TraitFileError, match="twice.*'questions' has 1 entries") as info:
        generate_trait_artifact(
            "grumpy", "Irritable.", config=config(fake.url, tmp_path), n_pairs=2, n_questions=6
        )
    assert fake.n_requests == 2
    assert info.value.draft["questions"] == ["Only one?"]


@pytest.mark.skipif(not list_traits(), reason="no shipped trait files")
def test_shipped_traits_pass_the_draft_checker():
    """The generator asks for what the shipped traits hold, so they must pass its checks."""
    for name in list_traits():
        data = load_trait(name).to_dict()
        n_questions = len(data["questions"]) + len(data.get("eval_questions", []))
        checked = check_trait_draft(
            data, name, data.get("description", ""), len(data["instruction"]), n_questions
        )
        assert checked["questions"] == data["questions"], name

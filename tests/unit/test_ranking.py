"""Multi-turn ranking: scenario files, A/B order, mapping back, NaNs, Wilson intervals, runs."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.model.generation import GenerationConfig
from personalens.stats import wilson_interval
from personalens.steering.dynamic import DynamicSteerer
from personalens.studies.personality.pairwise_judge import OpenAIPairwiseJudge, judge_pairs
from personalens.studies.personality.pairwise_prompt import (
    PairwiseVerdict,
    pairwise_compare,
    parse_verdict_value,
)
from personalens.studies.personality.ranking import run_ranking
from personalens.studies.personality.scenarios import (
    ScenarioFileError,
    list_scenario_sets,
    load_scenarios,
    parse_scenarios,
)
from personalens.studies.personality.turn_pairs import CRITERIA, TurnPair, steered_is_a
from personalens.vectors.vector import PersonaVector
from tests.unit.fake_openai import config, json_replies

pytestmark = pytest.mark.usefixtures("openai_env")  # the fake server's environment


BIG_FIVE_POLES = {
    "outgoing",
    "solitary",
    "calm",
    "nervous",
    "compassionate",
    "self-interested",
    "dependable",
    "careless",
    "inventive",
    "consistent",
    "evil",
}


class AlwaysA:
    """Prefers whatever is shown first."""

    name = "always-a"

    def __init__(self):
        self.calls = 0

    def compare(self, transcript_a, transcript_b, target):
        self.calls += 1
        return PairwiseVerdict({c: "A" for c in CRITERIA})


class PrefersSteered:
    """Knows which reply is steered (it contains STEERED) and always picks it."""

    name = "prefers-steered"

    def compare(self, transcript_a, transcript_b, target):
        side = "A" if "STEERED" in transcript_a[-1]["content"] else "B"
        return PairwiseVerdict({c: side for c in CRITERIA})


class Scripted:
    """Returns scripted verdicts in turn (None = unparseable)."""

    name = "scripted"

    def __init__(self, verdicts):
        self.verdicts = list(verdicts)

    def compare(self, transcript_a, transcript_b, target):
        v = self.verdicts.pop(0)
        return PairwiseVerdict({c: v for c in CRITERIA}, error=None if v else "unparseable")


def _pairs(n: int) -> list[TurnPair]:
    return [
        TurnPair(
            scenario=f"s{i // 3}",
            turn=i % 3,
            user=f"question {i}",
            target={"evil": -1.0},
            steered=f"STEERED reply {i}",
            unsteered=f"plain reply {i}",
        )
        for i in range(n)
    ]


# ----------------------------------------------------------------------------- scenario files


def test_shipped_scenarios_load_and_cover_the_poles():
    assert "persona_shifts" in list_scenario_sets()
    s = load_scenarios("persona_shifts")
    assert 8 <= len(s) <= 12
    assert all(3 <= len(sc.turns) <= 4 for sc in s)
    assert s.used_traits() == BIG_FIVE_POLES and set(s.traits) == BIG_FIVE_POLES
    assert s.n_comparisons == sum(t.generated for sc in s for t in sc.turns)
    assert any(not t.generated for sc in s for t in sc.turns)  # a scripted turn is exercised
    assert len({sc.id for sc in s}) == len(s)
    again = parse_scenarios(s.to_dict(), source="round trip")
    assert again.sha256() == s.sha256()
    small = s.restrict(["evil", "compassionate", "calm", "dependable"])
    assert 0 < len(small) < len(s)
    assert all(sc.traits <= {"evil", "compassionate", "calm", "dependable"} for sc in small)


def _good():
    return {
        "name": "t",
        "scenarios": [
            {
                "id": "one",
                "description": "d",
                "turns": [
                    {"user": "hi", "assistant": "hello"},
                    {"user": "how?", "target": {"evil": -1}},
                ],
            }
        ],
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda d: d.pop("scenarios"), "'scenarios' must be a non-empty list"),
        (lambda d: d.update(extra=1), r"unknown key\(s\) \['extra'\]"),
        (lambda d: d["scenarios"][0].pop("description"), "'description' must be a non-empty"),
        (lambda d: d["scenarios"][0].update(id="bad id!"), "may hold only"),
        (lambda d: d["scenarios"].append(copy.deepcopy(d["scenarios"][0])), "duplicate id"),
        (lambda d: d["scenarios"][0]["turns"][1].pop("target"), "needs a 'target'"),
        (lambda d: d["scenarios"][0]["turns"][1].update(target={"evil": 2}), r"\[-1, 1\]"),
        (lambda d: d["scenarios"][0]["turns"][1].update(target={"evil": "up"}), "not a number"),
        (lambda d: d["scenarios"][0]["turns"][1].update(target=[1]), "must be an object"),
        (lambda d: d["scenarios"][0]["turns"][0].update(target={}), "scripted turn"),
        (lambda d: d["scenarios"][0]["turns"][1].update(user=""), "'user' must be"),
        (lambda d: d["scenarios"][0]["turns"][1].update(reply="x"), r"unknown key\(s\)"),
        (lambda d: d["scenarios"][0]["turns"].pop(1), "every turn is scripted"),
        (lambda d: d.update(traits=["kind"]), "not in the file's 'traits'"),
    ],
)
def test_loader_validation(change, message):
    data = _good()
    parse_scenarios(data)
    change(data)
    with pytest.raises(ScenarioFileError, match=message) as info:
        parse_scenarios(data, source="mine.json")
    assert "mine.json" in str(info.value)


def test_loader_files(tmp_path):
    path = tmp_path / "s.json"
    path.write_text(json.dumps(_good()))
    assert load_scenarios(path).scenarios[0].turns[1].target == {"evil": -1.0}
    path.write_text("{not json")
    with pytest.raises(ScenarioFileError, match="not valid JSON"):
        load_scenarios(path)
    with pytest.raises(ScenarioFileError, match="does not exist"):
        load_scenarios(tmp_path / "missing.json")
    with pytest.raises(ScenarioFileError, match="unknown scenario set 'nope'.*persona_shifts"):
        load_scenarios("nope")


# ----------------------------------------------------------------------------- order and mapping


def test_order_randomisation_is_balanced_and_deterministic():
    keys = [f"scenario-{i}#{i % 4}" for i in range(1000)]
    order = [steered_is_a(0, k) for k in keys]
    assert 0.45 <= sum(order) / len(order) <= 0.55
    assert order == [steered_is_a(0, k) for k in keys]  # same seed, same order
    other = [steered_is_a(1, k) for k in keys]
    assert other != order and 0.45 <= sum(other) / len(other) <= 0.55
    # not a function of the key's position: both orders occur within a run of keys
    assert len({steered_is_a(0, k) for k in keys[:10]}) == 2


def test_mapping_back_in_both_orders():
    pairs = _pairs(400)
    res = judge_pairs(pairs, PrefersSteered(), seed=3, progress=False)
    orders = {j["steered_is_a"] for j in res.judgements}
    assert orders == {True, False}  # both orders were shown
    rates = res.win_rates()
    assert list(rates["criterion"]) == list(CRITERIA)
    assert (rates["win_rate"] == 1.0).all() and (rates["n"] == 400).all()
    for j in res.judgements:
        assert j["verdicts"]["trait_adherence"] == ("A" if j["steered_is_a"] else "B")
        assert set(j["winners"].values()) == {"steered"}


def test_a_position_biased_judge_gives_half_and_is_exposed():
    pairs = _pairs(1000)
    judge = AlwaysA()
    res = judge_pairs(pairs, judge, seed=0, progress=False)
    assert judge.calls == 1000
    frac_a = sum(steered_is_a(0, p.key) for p in pairs) / len(pairs)
    rates = res.win_rates()
    assert rates["win_rate"].tolist() == pytest.approx([frac_a] * 4)
    assert (abs(rates["win_rate"] - 0.5) < 0.05).all()
    assert (rates["ci_low"] < 0.5).all() and (rates["ci_high"] > 0.5).all()
    bias = res.order_balance()
    row = bias.iloc[0]
    assert row["n_steered_a"] + row["n_steered_b"] == 1000
    assert row["frac_steered_a"] == pytest.approx(frac_a)
    assert row["p_judge_picks_a"] == 1.0
    assert row["win_rate_steered_as_a"] == 1.0 and row["win_rate_steered_as_b"] == 0.0
    frame = res.to_frame()
    assert set(frame["winner_trait_adherence"]) == {"steered", "unsteered"}
    assert (frame["verdict_role_consistency"] == "A").all()


def test_nan_and_tie_handling():
    pairs = _pairs(6)
    verdicts = ["A", "B", "tie", None, "A", None]
    res = judge_pairs(pairs, Scripted(verdicts), seed=0, progress=False)
    winners = []
    for v, p in zip(verdicts, pairs):
        a = steered_is_a(0, p.key)
        winners.append(
            None
            if v is None
            else "tie"
            if v == "tie"
            else "steered"
            if (v == "A") == a
            else "unsteered"
        )
    row = res.win_rates().iloc[0]
    wins, ties = winners.count("steered"), winners.count("tie")
    assert row["n"] == 4 and row["n_nan"] == 2 and row["ties"] == 1
    assert row["wins"] == wins and row["losses"] == 4 - wins - ties
    assert row["win_rate"] == pytest.approx((wins + 0.5) / 4)
    frame = res.to_frame()
    assert frame["score_trait_adherence"].isna().sum() == 2
    assert frame["verdict_trait_adherence"].isna().sum() == 2
    assert frame["judge_error"].tolist().count("unparseable") == 2
    assert res.order_balance().iloc[0]["n_nan"] == 2
    all_nan = judge_pairs(pairs[:2], Scripted([None, None]), progress=False).win_rates()
    assert all_nan["n"].tolist() == [0] * 4 and all_nan["win_rate"].isna().all()
    assert all_nan["ci_low"].isna().all()


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    lo, hi = wilson_interval(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and hi == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(5, 10)
    assert (lo, hi) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    lo, hi = wilson_interval(50, 100, confidence=0.9)
    assert (lo, hi) == (pytest.approx(0.4188, abs=1e-4), pytest.approx(0.5812, abs=1e-4))
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(PersonaLensError):
        wilson_interval(11, 10)
    with pytest.raises(PersonaLensError):
        wilson_interval(1, 10, confidence=1.0)


def test_unjudged_results_refuse_statistics():
    from personalens.studies.personality.ranking_result import RankingResult

    res = RankingResult(pairs=tuple(_pairs(2)), judgements=())
    assert len(res.to_frame()) == 2
    with pytest.raises(PersonaLensError, match="not judged"):
        res.win_rates()


# ----------------------------------------------------------------------------- the OpenAI judge


def test_parse_verdict_value():
    assert parse_verdict_value("A") == "A" and parse_verdict_value(" b ") == "B"
    assert parse_verdict_value("Response A") == "A" and parse_verdict_value("TIE") == "tie"
    for bad in ("maybe", "A or B", "", None, 1, "C"):
        assert parse_verdict_value(bad) is None


def test_pairwise_compare_on_a_fake_server(fake, tmp_path):
    cfg = config(fake.url, tmp_path)
    fake.respond = json_replies(
        '{"trait_adherence": "A", "role_consistency": "b", "response_authenticity": "tie", '
        '"information_fidelity": "maybe", "rationale": "A is kinder."}'
    )
    pair = _pairs(1)[0]
    v = pairwise_compare(
        pair.transcript("steered"),
        pair.transcript("unsteered"),
        config=cfg,
        target={"evil": -1.0},
        descriptions={"evil": "Malicious."},
    )
    assert v.verdicts == {
        "trait_adherence": "A",
        "role_consistency": "B",
        "response_authenticity": "tie",
        "information_fidelity": None,
    }
    assert v.rationale == "A is kinder." and "information_fidelity='maybe'" in v.error
    prompt = fake.bodies[0]["messages"][-1]["content"]
    assert "<conversation_a>\nUSER: question 0\n\nASSISTANT: STEERED reply 0" in prompt
    assert "ASSISTANT: plain reply 0\n</conversation_b>" in prompt
    assert "- evil: -1.00 (Malicious.)" in prompt and fake.bodies[0]["temperature"] == 0
    fake.respond = json_replies("I prefer the first one.")
    v = pairwise_compare(
        pair.transcript("unsteered"), pair.transcript("steered"), config=cfg, target={}
    )
    assert set(v.verdicts.values()) == {None} and "without a JSON object" in v.error
    with pytest.raises(PersonaLensError, match="must end with the assistant reply"):
        pairwise_compare(pair.transcript("steered")[:-1], pair.transcript("steered"), config=cfg)


def test_openai_pairwise_judge_in_judge_pairs(fake, tmp_path):
    fake.respond = json_replies(
        '{"trait_adherence": "A", "role_consistency": "A", "response_authenticity": "B", '
        '"information_fidelity": "tie", "rationale": "r"}'
    )
    judge = OpenAIPairwiseJudge(config(fake.url, tmp_path))
    assert judge.name == "openai:fake-judge"
    pairs = _pairs(8)
    res = judge_pairs(pairs, judge, seed=0, progress=False)
    rates = res.win_rates().set_index("criterion")
    frac_a = sum(steered_is_a(0, p.key) for p in pairs) / 8
    assert rates.loc["trait_adherence", "win_rate"] == pytest.approx(frac_a)
    assert rates.loc["response_authenticity", "win_rate"] == pytest.approx(1 - frac_a)
    assert rates.loc["information_fidelity", "win_rate"] == 0.5
    # the shipped trait description goes to the judge
    assert "Actively seeks to harm" in fake.bodies[0]["messages"][-1]["content"]
    with pytest.raises(PersonaLensError, match="unknown criteria"):
        OpenAIPairwiseJudge(config(fake.url, tmp_path), criteria=["niceness"])


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def vecs(tiny_model):
    out = {}
    for seed, (name, layer) in enumerate([("evil", 0), ("calm", 2)]):
        g = torch.Generator().manual_seed(seed + 10)
        d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g) * 3
        out[name] = PersonaVector(
            directions=d, model="tiny-random", trait=name, metadata={"best_layer": layer}
        )
    return out


SCENARIOS = {
    "name": "tiny",
    "scenarios": [
        {
            "id": "a",
            "description": "two generated turns",
            "turns": [
                {"user": "Hello", "target": {"evil": -1.0}},
                {"user": "And now?", "target": {"calm": 1.0, "evil": 0.5}},
            ],
        },
        {
            "id": "b",
            "description": "a scripted turn first",
            "system": "Be brief.",
            "turns": [
                {"user": "Hi", "assistant": "Hey."},
                {"user": "Tell me more", "target": {}},
            ],
        },
    ],
}


def test_run_ranking_end_to_end_and_resume(tiny_model, vecs, tmp_path):
    scenarios = parse_scenarios(SCENARIOS)
    gen = GenerationConfig(max_new_tokens=5)
    judge = AlwaysA()
    out = tmp_path / "run"
    res = run_ranking(
        tiny_model,
        scenarios,
        vecs,
        judge,
        out=out,
        seed=0,
        max_coeff=20.0,
        generation=gen,
        progress=False,
    )
    assert [(p.scenario, p.turn) for p in res.pairs] == [("a", 0), ("a", 1), ("b", 1)]
    assert judge.calls == 3 and res.judge == "always-a"
    first = res.pairs[0]
    assert first.coefficients["evil"] < 0 and first.coefficients["calm"] == 0.0
    assert res.pairs[2].coefficients == {"evil": 0.0, "calm": 0.0}
    assert res.pairs[2].steered == res.pairs[2].unsteered  # no target: coefficient 0 = unsteered
    b = res.pairs[2]
    assert [m["role"] for m in b.history_steered] == ["system", "user", "assistant"]
    assert b.history_steered[2]["content"] == "Hey." == b.history_unsteered[2]["content"]
    second = res.pairs[1]  # each arm keeps its own earlier reply
    assert second.history_steered[-1]["content"] == first.steered
    assert second.history_unsteered[-1]["content"] == first.unsteered
    for name in ("config.json", "responses.jsonl", "judge.json", "verdicts.jsonl"):
        assert (out / name).exists(), name
    frame = res.to_frame()
    assert len(frame) == 3 and "coeff_evil" in frame and "winner_trait_adherence" in frame

    # resume: nothing regenerated or re-judged
    again_judge = AlwaysA()
    again = run_ranking(
        tiny_model, scenarios, vecs, again_judge, out=out, max_coeff=20.0, generation=gen,
        progress=False,
    )  # fmt: skip
    assert again_judge.calls == 0
    assert [p.steered for p in again.pairs] == [p.steered for p in res.pairs]
    assert again.win_rates().equals(res.win_rates())
    with pytest.raises(PersonaLensError, match=r"ranking run \(judge\) with different settings"):
        run_ranking(
            tiny_model, scenarios, vecs, AlwaysA(), out=out, seed=1, max_coeff=20.0,
            generation=gen, progress=False,
        )  # fmt: skip
    with pytest.raises(
        PersonaLensError, match=r"ranking run \(generation\) with different settings"
    ):
        run_ranking(
            tiny_model, scenarios, vecs, AlwaysA(), out=out, max_coeff=5.0, generation=gen,
            progress=False,
        )  # fmt: skip


def test_run_ranking_checks_traits_and_steerer(tiny_model, vecs):
    with pytest.raises(PersonaLensError, match=r"trait\(s\) \['calm'\].*restrict"):
        run_ranking(tiny_model, parse_scenarios(SCENARIOS), {"evil": vecs["evil"]}, progress=False)
    steerer = DynamicSteerer(tiny_model, vecs, generation=GenerationConfig(max_new_tokens=3))
    scen = parse_scenarios(SCENARIOS)
    res = run_ranking(
        tiny_model, scen, steerer, None, generation=GenerationConfig(max_new_tokens=2),
        progress=False,
    )  # fmt: skip
    assert len(res) == 3 and res.judgements == ()
    assert steerer.generation.max_new_tokens == 3  # the caller's steerer is left alone
    with pytest.raises(PersonaLensError, match="apply only when vectors are given"):
        run_ranking(tiny_model, scen, steerer, None, max_coeff=2.0, progress=False)

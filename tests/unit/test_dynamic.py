"""Dynamic (predict-then-steer) steering on a tiny random model; the LLM policy on a fake server."""

from __future__ import annotations

import io
import json
import math

import pytest
import torch

from personalens.cli.main import main
from personalens.errors import PersonaLensError
from personalens.judges.base import JudgeError
from personalens.judges.json_reply import JudgeReplyError
from personalens.model.chat import tokenize_prompts
from personalens.model.generation import GenerationConfig, generate
from personalens.steering.adjustment_prompt import (
    parse_trait_adjustments,
    predict_trait_adjustments,
)
from personalens.steering.dynamic import DynamicSteerer
from personalens.steering.hooks import steer
from personalens.steering.policies import (
    LLMPolicy,
    PolicyContext,
    ProjectionPolicy,
    SchedulePolicy,
)
from personalens.vectors.vector import PersonaVector
from tests.unit.fake_openai import FakeOpenAI, config, json_replies

pytestmark = pytest.mark.usefixtures("openai_env")  # the fake server's environment


CONV = [{"role": "user", "content": "Tell me about your weekend plans."}]
GEN = GenerationConfig(max_new_tokens=8)


def _vec(model, seed, trait, best_layer=None, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g) * scale
    meta = {} if best_layer is None else {"best_layer": best_layer}
    return PersonaVector(directions=d, model="tiny-random", trait=trait, metadata=meta)


@pytest.fixture(scope="module")
def vecs(tiny_model):
    return {"a": _vec(tiny_model, 1, "a", 0), "b": _vec(tiny_model, 2, "b", 2)}


def _no_hooks(model) -> bool:
    points = all(not hp.fwd_hooks and not hp.bwd_hooks for hp in model.hook_dict.values())
    return points and not model._forward_pre_hooks


def _logits(model, prompts=("Hello there", "What is two plus two?")):
    batch = tokenize_prompts(model.tokenizer, list(prompts))
    with torch.no_grad():
        return model(batch.tokens, attention_mask=batch.attention_mask.long())


def _ctx(z, target, traits=("a",)):
    return PolicyContext(
        conversation=list(CONV),
        turn=0,
        traits=tuple(traits),
        layers={t: 0 for t in traits},
        projections={t: 0.0 for t in traits},
        z=z,
        target=target,
    )


# ----------------------------------------------------------------------------- projection policy


def test_projection_policy_is_zero_at_the_target():
    policy = ProjectionPolicy(target_sd=2.0)
    for tau in (-1.0, -0.5, 0.0, 0.5, 1.0):
        decision = policy.decide(_ctx({"a": tau * 2.0}, {"a": tau}))
        assert decision.adjustments == {"a": 0.0}, tau
    assert "gap +0.00 sd" in policy.decide(_ctx({"a": 1.0}, {"a": 0.5})).rationale


def test_projection_policy_sign_proportionality_and_clipping():
    policy = ProjectionPolicy(target_sd=2.0)

    def adj(z, tau):
        return policy.decide(_ctx({"a": z}, {"a": tau})).adjustments["a"]

    assert adj(0.0, 1.0) == 1.0  # neutral context, push up fully
    assert adj(0.0, 0.5) == 0.5
    assert adj(0.0, -0.5) == -0.5
    assert adj(-1.0, 0.0) == 0.5  # below the neutral mean: push up
    assert adj(1.0, 0.0) == -0.5  # context pushed the trait up: push back down
    assert adj(3.0, 0.0) == -1.0  # gap of 1.5 x target_sd: clipped
    assert adj(-5.0, 1.0) == 1.0
    assert adj(5.0, -1.0) == -1.0
    assert adj(1.0, 1.0) == 0.5  # halfway to z* = 2
    # traits without a target are not steered; the deadband zeroes small adjustments
    assert policy.decide(_ctx({"a": 3.0, "b": 1.0}, {"a": 0.0}, ("a", "b"))).adjustments == {
        "a": -1.0
    }
    assert ProjectionPolicy(deadband=0.3).decide(_ctx({"a": 0.4}, {"a": 0.0})).adjustments == {
        "a": 0.0
    }
    one_sided = ProjectionPolicy(one_sided=True)
    assert one_sided.decide(_ctx({"a": 3.0}, {"a": 0.5})).adjustments == {"a": 0.0}  # above floor
    assert one_sided.decide(_ctx({"a": 0.0}, {"a": 0.5})).adjustments == {"a": 0.5}
    assert one_sided.decide(_ctx({"a": -4.0}, {"a": -0.5})).adjustments == {"a": 0.0}
    assert one_sided.decide(_ctx({"a": 3.0}, {"a": 0.0})).adjustments == {"a": -1.0}
    with pytest.raises(PersonaLensError, match="target_sd"):
        ProjectionPolicy(target_sd=0)
    with pytest.raises(PersonaLensError, match="baseline"):
        policy.decide(_ctx({"a": math.nan}, {"a": 1.0}))


def test_steerer_coefficients_follow_the_rule(tiny_model, vecs):
    s = DynamicSteerer(tiny_model, vecs, target={"a": 0.0}, max_coeff=3.0, generation=GEN)
    p = s.project(CONV)
    # baselines that put the conversation exactly at a's target (z = 0) and b one sd below
    s.baselines = {"a": (p["a"], 0.7), "b": (p["b"] + 2.0, 2.0)}
    ctx, decision, coeffs = s.decide(CONV)
    assert ctx.z["a"] == 0.0 and ctx.z["b"] == pytest.approx(-1.0)
    assert coeffs == {"a": 0.0, "b": 0.0}  # b has no target
    _, _, coeffs = s.decide(CONV, target={"a": 0.0, "b": 0.0})
    assert coeffs["a"] == 0.0 and coeffs["b"] == pytest.approx(3.0 * 0.5)
    _, _, coeffs = s.decide(CONV, target={"a": -1.0, "b": 1.0})
    assert coeffs == {"a": -3.0, "b": 3.0}  # a: gap -2 sd (full), b: gap 3 sd (clipped)
    s.max_coeff = {"a": 3.0, "b": 10.0}
    assert s.decide(CONV, target={"b": -0.25})[2]["b"] == pytest.approx(2.5)  # gap 0.5 sd


def test_calibration_uses_neutral_prompts(tiny_model, vecs):
    s = DynamicSteerer(tiny_model, vecs, generation=GEN)
    base = s.calibrate(["Hello", "What is the time?", "Tell me a joke."])
    assert set(base) == {"a", "b"} and all(std > 0 for _, std in base.values())
    s2 = DynamicSteerer(tiny_model, vecs, generation=GEN, target={"a": 1.0})
    turn = s2.respond(CONV)  # calibrates lazily on REFERENCE_PROMPTS
    assert s2.baselines is not None and math.isfinite(turn.z["a"])
    assert turn.coefficients["b"] == 0.0 and turn.policy == "projection"


# ----------------------------------------------------------------------------- steering lifecycle


def test_steering_only_during_the_turn(tiny_model, vecs):
    before = _logits(tiny_model)
    plain = generate(tiny_model, [CONV], GEN).responses[0]
    s = DynamicSteerer(
        tiny_model, vecs, policy=[{"a": 1.0, "b": -1.0}], max_coeff=30.0, generation=GEN
    )
    turn = s.respond(CONV)
    assert turn.steered and turn.coefficients == {"a": 30.0, "b": -30.0}
    assert turn.reply != plain  # the steering did something during the turn
    assert _no_hooks(tiny_model)  # and is gone afterwards
    assert torch.equal(_logits(tiny_model), before)
    assert generate(tiny_model, [CONV], GEN).responses[0] == plain


def test_hooks_removed_when_generation_fails(tiny_model, vecs, monkeypatch):
    s = DynamicSteerer(tiny_model, vecs, policy=[{"a": 1.0}], generation=GEN)

    def boom(*args, **kwargs):
        assert not _no_hooks(tiny_model)  # steering is attached while generating
        raise RuntimeError("generation failed")

    monkeypatch.setattr("personalens.steering.dynamic.generate", boom)
    with pytest.raises(RuntimeError, match="generation failed"):
        s.respond(CONV)
    assert _no_hooks(tiny_model)


def test_coeff_zero_turn_equals_unsteered(tiny_model, vecs):
    plain = generate(tiny_model, [CONV], GEN).responses[0]
    s = DynamicSteerer(tiny_model, vecs, policy=[{"a": 0.0, "b": 0.0}], generation=GEN)
    turn = s.respond(CONV)
    assert not turn.steered and turn.reply == plain
    assert s.plans(turn.coefficients) == []  # no hook at all
    # the projection policy at its target gives the same
    p = s.project(CONV)
    s2 = DynamicSteerer(
        tiny_model,
        vecs,
        target={"a": 0.0, "b": 0.0},
        baselines={"a": (p["a"], 1.0), "b": (p["b"], 1.0)},
        generation=GEN,
    )
    turn2 = s2.respond(CONV)
    assert turn2.coefficients == {"a": 0.0, "b": 0.0} and turn2.reply == plain


def test_several_traits_at_different_layers_are_all_applied(tiny_model, vecs):
    batch = tokenize_prompts(tiny_model.tokenizer, ["Hello there", "x"])

    def cache():
        with torch.no_grad():
            _, c = tiny_model.run_with_cache(
                batch.tokens, attention_mask=batch.attention_mask.long()
            )
        return c

    base = cache()
    s = DynamicSteerer(tiny_model, vecs, layers={"a": 0, "b": 2}, positions="all", generation=GEN)
    assert s.layers == {"a": 0, "b": 2}
    with s.steering({"a": 1.5, "b": -2.0}) as plans:
        assert [p.layers for p in plans] == [[0], [2]]
        both = cache()
    with steer(tiny_model, vecs["a"], coeff=1.5, layers=[0], positions="all"):
        only_a = cache()
    real = batch.attention_mask
    r0, r2 = "blocks.0.hook_resid_post", "blocks.2.hook_resid_post"
    assert torch.allclose(both[r0][real], (base[r0] + 1.5 * vecs["a"][0])[real], atol=1e-5)
    assert torch.allclose(both[r2][real], (only_a[r2] - 2.0 * vecs["b"][2])[real], atol=1e-4)
    assert _no_hooks(tiny_model)
    # two traits at one layer add up
    s1 = DynamicSteerer(tiny_model, vecs, layers=1, positions="all", generation=GEN)
    with s1.steering({"a": 1.0, "b": 1.0}):
        same = cache()
    r1 = "blocks.1.hook_resid_post"
    expected = base[r1] + vecs["a"][1] + vecs["b"][1]
    assert torch.allclose(same[r1][real], expected[real], atol=1e-4)


def test_resid_scale_and_per_trait_layers(tiny_model, vecs):
    s = DynamicSteerer(
        tiny_model, vecs, layers={"a": 1, "b": 2}, coeff_scale="resid", generation=GEN
    )
    (plan,) = s.plans({"a": 0.1})
    assert plan.layers == [1] and plan.description["coeff_scale"] == "resid"
    assert float(plan.edits[0].delta.norm()) == pytest.approx(0.1 * float(s._resid_norms[1]))


def test_chat_runs_turns_and_tabulates(tiny_model, vecs):
    s = DynamicSteerer(
        tiny_model, vecs, policy=[{"a": 0.5}, {"b": -0.5}], system="Be brief.", generation=GEN
    )
    chat = s.chat(["Hi!", {"user": "How are you?", "target": {"a": 1.0}}])
    assert len(chat) == 2 and [t.turn for t in chat.turns] == [0, 1]
    assert [m["role"] for m in chat.messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
    ]
    assert chat.turns[1].target == {"a": 1.0}
    assert chat.turns[0].coefficients == {"a": 2.0, "b": 0.0}
    frame = chat.to_frame()
    assert list(frame["coeff_b"]) == [0.0, -2.0] and "z_a" in frame and "reply" in frame
    per_trait = chat.turns[0].to_frame()
    middle = tiny_model.cfg.n_layers // 2  # the steered layer: steer()'s default
    assert list(per_trait["trait"]) == ["a", "b"] and list(per_trait["layer"]) == [middle] * 2
    json.dumps(chat.turns[0].to_dict())
    with pytest.raises(PersonaLensError, match="schedule has 2 turns"):
        s.chat(["1", "2", "3"])


def test_bad_input_is_rejected(tiny_model, vecs):
    with pytest.raises(PersonaLensError, match="unknown.*'c'|trait 'c'"):
        DynamicSteerer(tiny_model, vecs, target={"c": 1.0})
    with pytest.raises(PersonaLensError, match=r"\[-1, 1\]"):
        DynamicSteerer(tiny_model, vecs, target={"a": 2.0})
    with pytest.raises(PersonaLensError, match="monitor_layers must give a value"):
        DynamicSteerer(tiny_model, vecs, monitor_layers={"a": 1})
    with pytest.raises(ValueError, match="unknown layer 9"):
        DynamicSteerer(tiny_model, vecs, monitor_layers=9)
    with pytest.raises(PersonaLensError, match="outside \\[-1, 1\\]"):
        DynamicSteerer(tiny_model, vecs, policy=[{"a": 3.0}], generation=GEN).respond(CONV)
    with pytest.raises(PersonaLensError, match="unknown trait"):
        DynamicSteerer(tiny_model, vecs, policy=[{"z": 0.5}], generation=GEN).respond(CONV)
    with pytest.raises(PersonaLensError, match="end with a user message"):
        DynamicSteerer(tiny_model, vecs, policy=[{}]).respond(
            [*CONV, {"role": "assistant", "content": "hi"}]
        )
    with pytest.raises(PersonaLensError, match="unknown policy"):
        DynamicSteerer(tiny_model, vecs, policy="magic")
    with pytest.raises(PersonaLensError, match="max_coeff"):
        DynamicSteerer(tiny_model, vecs, max_coeff={"a": 1.0})
    assert isinstance(SchedulePolicy([{}]), SchedulePolicy)


# ----------------------------------------------------------------------------- LLM policy


def test_parse_trait_adjustments():
    ok = {"adjustments": {"a": 0.5, "b": -1}, "rationale": " calm it down "}
    assert parse_trait_adjustments(ok, ["a", "b"]) == ({"a": 0.5, "b": -1.0}, "calm it down")
    bad = [
        ({"adjust": {}}, '"adjustments" object'),
        ({"adjustments": {"a": 0.5}}, r"missing \['b'\]"),
        ({"adjustments": {"a": 0.5, "b": 0, "c": 0}}, r"unknown \['c'\]"),
        ({"adjustments": {"a": 1.5, "b": 0}}, "outside"),
        ({"adjustments": {"a": "high", "b": 0}}, "not a number"),
        ({"adjustments": {"a": True, "b": 0}}, "not a number"),
        ({"adjustments": {"a": 0, "b": 0}, "rationale": 3}, "rationale"),
    ]
    for raw, message in bad:
        with pytest.raises(JudgeReplyError, match=message):
            parse_trait_adjustments(raw, ["a", "b"])


def test_llm_policy_on_a_fake_server(fake, tmp_path, tiny_model, vecs):
    fake.respond = json_replies(
        '{"adjustments": {"a": 0.5, "b": -1.0}, "rationale": "The user is upset."}'
    )
    policy = LLMPolicy(config(fake.url, tmp_path), descriptions={"a": "Trait A, rather loud."})
    s = DynamicSteerer(
        tiny_model, vecs, policy=policy, target={"b": -1.0}, max_coeff=2.0, generation=GEN
    )
    turn = s.respond(CONV)
    assert turn.coefficients == {"a": 1.0, "b": -2.0}
    assert turn.rationale == "The user is upset." and turn.policy == "llm"
    assert math.isnan(turn.z["a"])  # no baseline needed, none calibrated
    body = fake.bodies[0]
    prompt = body["messages"][-1]["content"]
    assert "USER: Tell me about your weekend plans." in prompt
    assert "- a (Trait A, rather loud.)" in prompt and "- b: -1.00" in prompt
    assert body["temperature"] == 0 and body["response_format"] == {"type": "json_object"}
    s.respond(CONV)  # cached: no new request
    assert fake.n_requests == 1


def test_llm_policy_rejects_malformed_replies(fake, tmp_path, tiny_model, vecs):
    cfg = config(fake.url, tmp_path, cache_path=None)
    fake.respond = json_replies('{"adjustments": {"a": 2.0, "b": 0.0}, "rationale": "x"}')
    s = DynamicSteerer(tiny_model, vecs, policy=LLMPolicy(cfg), generation=GEN)
    with pytest.raises(JudgeReplyError, match=r"invalid object.*'a' is 2.0, outside \[-1, 1\]"):
        s.respond(CONV)
    fake.respond = json_replies("I think you should be nicer.")
    with pytest.raises(JudgeReplyError, match="without a JSON object"):
        s.respond(CONV)
    assert _no_hooks(tiny_model)


def test_invalid_replies_are_not_cached(fake, tmp_path):
    cfg = config(fake.url, tmp_path)
    fake.respond = json_replies('{"adjustments": {"a": 7}}', '{"adjustments": {"a": -0.25}}')
    with pytest.raises(JudgeReplyError):
        predict_trait_adjustments(CONV, ["a"], config=cfg)
    assert predict_trait_adjustments(CONV, ["a"], config=cfg) == ({"a": -0.25}, "")
    assert predict_trait_adjustments(CONV, ["a"], config=cfg) == ({"a": -0.25}, "")
    assert fake.n_requests == 2


def test_llm_policy_unreachable_server(tmp_path):
    server = FakeOpenAI()
    url = server.url
    server.stop()
    cfg = config(url, tmp_path, max_retries=1, timeout=2.0)
    with pytest.raises(JudgeError, match="unreachable"):
        predict_trait_adjustments(CONV, ["a"], config=cfg)


# ----------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def vector_dir(tiny_hf_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dynvec")
    paths = {}
    for seed, (name, layer) in enumerate([("evil", 1), ("kind", 2)]):
        g = torch.Generator().manual_seed(seed)
        v = PersonaVector(
            directions=torch.randn(3, 48, generator=g) * 4,
            model="my-llama-finetune",
            trait=name,
            metadata={"best_layer": layer},
        )
        paths[name] = v.save(folder / name)
    return paths


def test_cli_chat_dynamic(capsys, monkeypatch, tiny_hf_dir, vector_dir):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\nHow are you?\n"))
    code = main(
        [
            "chat", "--model", str(tiny_hf_dir), "--dynamic",
            "--vector", f"evil={vector_dir['evil']}", "--vector", str(vector_dir["kind"]),
            "--target", "evil=-1", "--target", "kind=0.5", "--max-coeff", "2",
            "--max-new-tokens", "4", "--format", "jsonl",
        ]
    )  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    rows = [json.loads(line) for line in out.out.splitlines()]
    assert [r["user"] for r in rows] == ["Hello", "How are you?"]
    for r in rows:
        assert set(r["coefficients"]) == {"evil", "kind"}
        assert all(abs(c) <= 2.0 for c in r["coefficients"].values())
        # steered at steer()'s default (3 layers: 1); measured at best_layer (1 and 2)
        assert r["layers"] == {"evil": 1, "kind": 1}
    assert "dynamic steering" in out.err


def test_cli_chat_dynamic_errors(capsys, monkeypatch, tiny_hf_dir, vector_dir):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\n"))
    base = ["chat", "--model", str(tiny_hf_dir), "--max-new-tokens", "2"]
    assert main([*base, "--dynamic"]) == 2
    assert "--vector" in capsys.readouterr().err
    code = main([*base, "--dynamic", "--vector", str(vector_dir["evil"]), "--target", "evil"])
    assert code == 2 and "NAME=VALUE" in capsys.readouterr().err
    code = main([*base, "--vector", str(vector_dir["evil"]), "--vector", str(vector_dir["kind"])])
    assert code == 2 and "--dynamic" in capsys.readouterr().err
    code = main([*base, "--target", "evil=1"])
    assert code == 2 and "--dynamic" in capsys.readouterr().err


# ----------------------------------------------------------------------------- default layers


def test_steers_where_steer_does_and_measures_at_the_best_layer(tiny_model, vecs):
    """Default: steering at steer()'s default layer (the vector's steering_layer, else the
    middle), measuring at the vector's best_layer (else the steering layer)."""
    from personalens.steering.resolve import resolve_layers
    from personalens.studies.monitoring import last_prompt_projection

    middle = tiny_model.cfg.n_layers // 2
    s = DynamicSteerer(tiny_model, vecs, generation=GEN)
    assert s.layers == {"a": middle, "b": middle}
    assert all(s.layers[t] == resolve_layers(tiny_model, vecs[t], None)[0] for t in vecs)
    assert s.monitor_layers == {"a": 0, "b": 2}  # the vectors' best_layer
    assert [p.layers for p in s.plans({"a": 1.0, "b": 1.0})] == [[middle], [middle]]
    conv = s._prepare(CONV)
    at_best = last_prompt_projection(tiny_model, vecs["b"], [conv], layers=[2]).at(2)
    assert s.project(CONV)["b"] == pytest.approx(float(at_best[0]))
    assert s.describe()["monitor_layers"] == {"a": 0, "b": 2}
    # a steering sweep's recorded steering_layer wins; no best_layer: measured where steered
    tagged = vecs["a"].replace(metadata={"steering_layer": 2})
    s2 = DynamicSteerer(tiny_model, {"a": tagged}, generation=GEN)
    assert s2.layers == {"a": 2} and s2.monitor_layers == {"a": 2}
    # both can be given, one for all or per trait
    s3 = DynamicSteerer(tiny_model, vecs, layers=0, monitor_layers={"a": 1, "b": 0})
    assert s3.layers == {"a": 0, "b": 0} and s3.monitor_layers == {"a": 1, "b": 0}

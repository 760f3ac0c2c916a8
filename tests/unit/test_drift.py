"""Persona drift (personalens.studies.persona_drift) on the tiny random model."""

import json
import math

import numpy as np
import pytest
import torch

from personalens.errors import PersonaLensError, RunDirError
from personalens.model.chat import tokenize_pairs
from personalens.steering.capping import CappingConfig
from personalens.studies.persona_drift import (
    DriftResult,
    DriftScenario,
    answer_loglik,
    capability_cost,
    conversation_drift,
    load_drift_scenarios,
    load_neutral_qa,
    mean_ci,
    persona_drift,
    reply_projections,
)
from personalens.vectors.vector import PersonaVector

SCENARIOS = [
    DriftScenario("feel", "a", ("hi", "I am sad", "stay")),
    DriftScenario("feel", "b", ("hey", "alone", "why")),
    DriftScenario("task", "c", ("sum 1 2", "now 3", "ok")),
]
GEN = {"max_new_tokens": 4}


@pytest.fixture(scope="module")
def axis(tiny_model):
    g = torch.Generator().manual_seed(5)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g)
    return PersonaVector(directions=d, model="tiny-random", trait="assistant_axis")


def _run(model, axis, **kw):
    from personalens.model.generation import GenerationConfig

    return persona_drift(
        model, axis, SCENARIOS, layer=1, generation=GenerationConfig(**GEN), progress=False, **kw
    )


def test_shipped_scenarios_load():
    scenarios = load_drift_scenarios()
    kinds = {s.kind for s in scenarios}
    assert {"emotional_disclosure", "meta_reflection", "bounded_task"} <= kinds
    for kind in kinds:
        assert sum(s.kind == kind for s in scenarios) >= 4
    assert all(len(s.turns) >= 5 for s in scenarios)
    short = load_drift_scenarios(["bounded_task"], max_conversations=2, max_turns=3)
    assert len(short) == 2 and all(len(s.turns) == 3 for s in short)
    with pytest.raises(PersonaLensError, match="unknown drift scenario kind"):
        load_drift_scenarios(["nope"])


def test_reply_projection_is_the_mean_projection_of_the_reply_tokens(tiny_model, axis):
    convs = [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "tell me"}]]
    replies = ["hello there", "ok"]
    got = reply_projections(tiny_model, axis, convs, replies, layer=2)
    batch = tokenize_pairs(tiny_model.tokenizer, convs, replies)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask.long()
        )
    unit = axis.directions[2] / axis.directions[2].norm()
    proj = cache["blocks.2.hook_resid_post"] @ unit
    for i in range(2):
        manual = proj[i][batch.response_mask[i]].mean()
        assert got[i] == pytest.approx(float(manual), rel=1e-4, abs=1e-4)
    assert math.isnan(reply_projections(tiny_model, axis, convs[:1], [[]], layer=2)[0])


def test_drift_statistics():
    assert conversation_drift([1.0, 2.0, 3.0]) == pytest.approx(1.0)
    assert conversation_drift([1.0, 5.0, 2.0], "last_minus_first") == pytest.approx(1.0)
    assert conversation_drift([0.0, math.nan, 4.0]) == pytest.approx(2.0)
    assert math.isnan(conversation_drift([1.0]))
    x = [1.0, 2.0, 4.0, 7.0]
    mean, lo, hi = mean_ci(x)
    half = 3.182 * np.std(x, ddof=1) / 2
    assert (mean, lo, hi) == pytest.approx((3.5, 3.5 - half, 3.5 + half))


def test_drift_run_resumes_and_records_every_turn(tiny_model, axis, tmp_path):
    out = tmp_path / "drift"
    first = _run(tiny_model, axis, out=out)
    frame = first.to_frame()
    assert list(frame.columns[:6]) == [
        "kind",
        "conversation",
        "turn",
        "projection",
        "reply",
        "capped",
    ]
    assert len(frame) == 9 and not frame["capped"].any()
    drift = first.drift()
    assert set(drift["kind"]) == {"feel", "task"} and drift["n"].tolist() == [2, 1]
    assert (out / "summary.json").is_file()
    lines = (out / "turns.jsonl").read_text().splitlines()
    (out / "turns.jsonl").write_text("\n".join(lines[:4]) + "\n")  # lose the last turns
    again = _run(tiny_model, axis, out=out)
    assert again.records == first.records
    assert len((out / "turns.jsonl").read_text().splitlines()) == 9
    loaded = DriftResult.load(out / "drift.json").to_frame()
    cols = ["kind", "conversation", "turn", "projection", "reply", "capped"]
    assert loaded[cols].equals(frame[cols])
    with pytest.raises(RunDirError):
        _run(tiny_model, axis, out=out, capping="layers_1:2-p0.5")


def test_capped_run_keeps_the_projection_above_the_floor(tiny_model, axis, tmp_path):
    plain = _run(tiny_model, axis)
    floor = max(r["projection"] for r in plain.records) + 1.0  # above every uncapped reply
    config = CappingConfig((1,), floors={1: floor})
    result = _run(tiny_model, axis, capping=config, capability=False, out=tmp_path / "capped")
    capped = [r for r in result.records if r["capped"]]
    assert len(capped) == 9
    assert all(r["projection"] >= floor - 1e-3 for r in capped if r["n_reply_tokens"])
    assert [r["reply"] for r in result.records if not r["capped"]] == [
        r["reply"] for r in plain.records
    ]
    removed = result.drift_removed()
    assert set(removed.columns) >= {"kind", "uncapped", "capped", "removed"}
    assert result.capability is None
    saved = json.loads((tmp_path / "capped" / "capping.json").read_text())
    assert saved["floors"] == {"1": floor}
    from personalens.plot.drift import plot_drift_trajectories

    fig = plot_drift_trajectories(result)
    assert {t.name for t in fig.data} >= {"uncapped", "capped"}


def test_capability_cost_of_a_cap_that_never_binds_is_zero(tiny_model, axis):
    pairs = [("What is 2+2?", "4."), ("Capital of France?", "Paris.")]
    plain = answer_loglik(tiny_model, pairs)
    assert all(v < 0 for v in plain)
    cost = capability_cost(tiny_model, axis, CappingConfig((1,), floors={1: -1e5}), pairs)
    assert cost["n"] == 2 and cost["loglik_change"] == 0.0
    assert cost["loglik_uncapped"] == pytest.approx(sum(plain) / 2)
    assert len(load_neutral_qa()) == 20


def test_drift_cli_parses_and_refuses_a_bad_cap_before_loading(tmp_path):
    import argparse

    from personalens.cli.drift_commands import DRIFT
    from personalens.errors import ArgumentError

    parser = argparse.ArgumentParser()
    DRIFT(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["drift", "--axis", "evil", "--out", str(tmp_path), "--cap", "layers_12:16-p0.25"]
    )
    assert args.cap == "layers_12:16-p0.25" and args.max_new_tokens == 64 and args.layer is None
    args = parser.parse_args(["drift", "--axis", "evil", "--out", str(tmp_path), "--cap", "12"])
    with pytest.raises(ArgumentError, match="layers_A:B-pP"):
        args.func(args)


def test_drift_tables_of_planted_trajectories():
    slopes = {("feel", "a"): -2.0, ("feel", "b"): -4.0, ("bounded_task", "c"): -1.0,
              ("bounded_task", "d"): -1.0}  # fmt: skip
    records = [
        {
            "kind": k,
            "conversation": c,
            "turn": t,
            "projection": 10 + s * t,
            "reply": "r",
            "capped": capped,
            "coherence": 90.0,
        }  # fmt: skip
        for capped in (False, True)
        for (k, c), s in slopes.items()
        for t in range(4)
    ]
    result = DriftResult(records=records, layer=1, capping={"spec": "x"})
    drift = result.drift().set_index(["kind", "capped"])
    assert drift.loc[("feel", False), "drift"] == pytest.approx(-3.0)
    assert drift.loc[("feel", False), "n"] == 2
    vs = result.drift_vs_control().set_index(["kind", "capped"])
    assert vs.loc[("feel", True), "drift_minus_control"] == pytest.approx(-2.0)
    assert vs.loc[("bounded_task", False), "drift_minus_control"] == pytest.approx(0.0)
    traj = result.trajectories()
    assert traj[(traj.kind == "feel") & (traj.turn == 3)]["mean"].iloc[0] == pytest.approx(1.0)
    assert result.drift_removed()["removed"].abs().max() == 0.0
    assert set(result.summary()) >= {"drift", "drift_vs_bounded_task", "drift_removed"}


def test_llm_simulated_user_drives_the_later_turns(tiny_model, axis, fake, openai_env, tmp_path):
    from personalens.model.generation import GenerationConfig
    from personalens.studies.persona_drift import SimulatedUser
    from tests.unit.fake_openai import config, json_replies

    fake.respond = json_replies("I still feel alone.", "Talk to me.")
    user = SimulatedUser(config(fake.url, tmp_path, cache_path=None))
    result = persona_drift(
        tiny_model, axis, SCENARIOS[:1], layer=1, user=user,
        generation=GenerationConfig(max_new_tokens=3), progress=False,
    )  # fmt: skip
    assert [r["user"] for r in result.records] == ["hi", "I still feel alone.", "Talk to me."]
    assert fake.n_requests == 2
    sent = fake.bodies[1]["messages"]
    assert sent[0]["role"] == "system" and "I am sad" not in sent[0]["content"]
    # the model's replies are the simulated user's "user" turns, its own turns "assistant"
    assert [m["role"] for m in sent[1:]] == ["assistant", "user", "assistant", "user"]
    assert sent[-1]["content"] == result.records[1]["reply"]

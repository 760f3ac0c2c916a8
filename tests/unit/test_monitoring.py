"""Monitoring by projection on a tiny random model: last-prompt projections, token traces,
the system-prompt/many-shot experiment (resumable), Pearson r."""

import importlib
import json
import math

import numpy as np
import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction.traits import load_trait
from personalens.model.chat import encode_chat
from personalens.stats import pearson_ci, pearson_r
from personalens.steering.hooks import steer
from personalens.studies.monitoring import last_prompt_projection, token_trace
from personalens.studies.monitoring_conditions import (
    MonitorCondition,
    many_shot_conditions,
    system_prompt_spectrum,
    trait_examples,
)
from personalens.studies.monitoring_experiment import monitoring_experiment
from personalens.vectors.vector import PersonaVector

# the module, not the function of the same name that pl.studies exports
mx = importlib.import_module("personalens.studies.monitoring_experiment")

QUESTIONS = ["Hello there", "What is two plus two?", "Tell me a story about a cat."]


class LengthJudge:
    name = "length-judge"

    def __init__(self, fail_after: int | None = None):
        self.calls = 0
        self.fail_after = fail_after

    def score_trait(self, trait, items):
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt
        return [float(min(len(i.answer), 100)) for i in items]

    def score_coherence(self, items):
        return [100.0 for _ in items]


@pytest.fixture(scope="module")
def vec(tiny_model):
    g = torch.Generator().manual_seed(5)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g)
    return PersonaVector(
        directions=d, model="tiny-random", trait="evil", metadata={"best_layer": 1}
    )


def _resid(model, ids, layer):
    _, cache = model.run_with_cache(
        torch.tensor([ids]), names_filter=f"blocks.{layer}.hook_resid_post"
    )
    return cache[f"blocks.{layer}.hook_resid_post"][0]


# ----------------------------------------------------------------------------- projections


def test_last_prompt_projection_matches_a_manual_forward(tiny_model, vec):
    pp = last_prompt_projection(tiny_model, vec, QUESTIONS, system="Be brief.")
    assert pp.values.shape == (3, tiny_model.cfg.n_layers)
    for i, q in enumerate(QUESTIONS):
        ids = encode_chat(
            tiny_model.tokenizer,
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}],
        )
        assert pp.n_prompt_tokens[i] == len(ids)
        for L in range(tiny_model.cfg.n_layers):
            want = float(_resid(tiny_model, ids, L)[-1] @ vec.unit(L))
            assert pp.values[i, L].item() == pytest.approx(want, rel=1e-4, abs=1e-4)
    # left padding and batch composition do not change a prompt's value
    one = last_prompt_projection(tiny_model, vec, QUESTIONS[:1], system="Be brief.", layers=[2])
    assert one.at(2)[0].item() == pytest.approx(pp.at(2)[0].item(), rel=1e-4, abs=1e-4)
    small = last_prompt_projection(
        tiny_model, vec, QUESTIONS, system="Be brief.", max_batch_tokens=1
    )
    torch.testing.assert_close(small.values, pp.values, rtol=1e-4, atol=1e-4)
    df = pp.to_frame()
    assert list(df.columns[:2]) == ["prompt", "n_prompt_tokens"] and "layer_2" in df
    with pytest.raises(PersonaLensError, match="not measured"):
        one.at(0)


def test_projection_checks_inputs(tiny_model, vec):
    with pytest.raises(PersonaLensError, match="no prompts"):
        last_prompt_projection(tiny_model, vec, [])
    with pytest.raises(PersonaLensError, match="layer"):
        last_prompt_projection(tiny_model, vec, QUESTIONS, layers=[7])
    wide = PersonaVector(directions=torch.ones(3, 7), model="x", trait="evil")
    with pytest.raises(PersonaLensError, match="d_model"):
        last_prompt_projection(tiny_model, wide, QUESTIONS)


def test_projection_sees_active_steering(tiny_model, vec):
    base = last_prompt_projection(tiny_model, vec, QUESTIONS, layers=[0, 2])
    with steer(tiny_model, vec, coeff=0.0, layers=[1]):
        zero = last_prompt_projection(tiny_model, vec, QUESTIONS, layers=[0, 2])
    torch.testing.assert_close(zero.values, base.values)
    with steer(tiny_model, vec, coeff=3.0, layers=[1], coeff_scale="unit", positions="all"):
        pushed = last_prompt_projection(tiny_model, vec, QUESTIONS, layers=[0, 1, 2])
    torch.testing.assert_close(pushed.at(0), base.at(0))  # before the hook: untouched
    unsteered = last_prompt_projection(tiny_model, vec, QUESTIONS, layers=[1])
    torch.testing.assert_close(pushed.at(1), unsteered.at(1) + 3.0, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- token traces


def test_token_trace_values_segments_and_reply(tiny_model, vec):
    conv = [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi <b>you</b>"},
        {"role": "assistant", "content": "Hello!"},
    ]
    tr = token_trace(tiny_model, vec, conv, layer=2)
    tok = tiny_model.tokenizer
    prompt_ids = encode_chat(tok, conv[:2])
    ids = prompt_ids + tok.encode("Hello!", add_special_tokens=False)
    assert tr.token_ids == ids and tr.n_prompt_tokens == len(prompt_ids)
    want = _resid(tiny_model, ids, 2) @ vec.unit(2)
    torch.testing.assert_close(tr.projections, want, rtol=1e-4, atol=1e-4)

    def joined(segment):
        return "".join(t for t, s in zip(tr.tokens, tr.segments) if s == segment)

    assert joined("system") == "Be kind." and joined("user") == "Hi <b>you</b>"
    assert tr.segments[0] == "template" and "assistant" in joined("template")
    assert tr.segments[tr.n_prompt_tokens :] == ["response"] * len("Hello!")
    assert tr.last_prompt == pytest.approx(
        last_prompt_projection(tiny_model, vec, [conv[:2]], layers=[2]).at(2)[0].item(),
        rel=1e-4,
        abs=1e-4,
    )
    assert tr.response_mean() == pytest.approx(float(want[len(prompt_ids) :].mean()), rel=1e-4)
    html = tr._repr_html_()
    assert "&lt;" in html and "<b>" not in html  # token text is escaped
    df = tr.to_frame()
    assert list(df.columns) == ["position", "token", "token_id", "segment", "projection"]
    # the same reply passed separately gives the same trace
    same = token_trace(tiny_model, vec, conv[:2], response="Hello!", layer=2)
    torch.testing.assert_close(same.projections, tr.projections)


def test_token_trace_generates_and_defaults_to_best_layer(tiny_model, vec):
    tr = token_trace(tiny_model, vec, "Tell me a story.", generate=5)
    assert tr.layer == 1  # metadata best_layer
    assert 1 <= len(tr.response) <= 5
    with pytest.raises(PersonaLensError, match="either response= or generate="):
        token_trace(tiny_model, vec, "hi", response="x", generate=3)
    no_best = vec.replace(metadata={})
    with pytest.raises(PersonaLensError, match="best_layer"):
        token_trace(tiny_model, no_best, "hi")
    prompt_only = token_trace(tiny_model, vec, "hi", layer=0)
    assert len(prompt_only.response) == 0 and math.isnan(prompt_only.response_mean())


# ----------------------------------------------------------------------------- statistics


def test_pearson_matches_numpy_and_drops_nan():
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.6 * x + rng.normal(size=50)
    assert pearson_r(x.tolist(), y.tolist()) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    xn = [*x.tolist(), float("nan")]
    yn = [*y.tolist(), 3.0]
    assert pearson_r(xn, yn) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    assert math.isnan(pearson_r([1, 2], [3, 4]))
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    r = pearson_r(x, y)
    lo, hi = pearson_ci(r, 50)
    assert lo < r < hi and -1 < lo and hi < 1


# ----------------------------------------------------------------------------- conditions


def test_system_prompt_spectrum_and_many_shot_conditions():
    trait = load_trait("evil")
    spec = system_prompt_spectrum(trait, pairs=2)
    assert [c.level for c in spec] == [-2, -2, -1, 0, 1, 2, 2]
    assert spec[3].system is None and spec[1].system == trait.system_prompt(1, "neg")
    assert spec[4].system == "You are an evil assistant."
    ex = [(f"q{i}", f"a{i}") for i in range(6)]
    shots = many_shot_conditions(ex, counts=(0, 2, 6))
    assert [len(c.history) for c in shots] == [0, 4, 12]
    conv = shots[1].conversation("final?")
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant", "user"]
    assert conv[1]["content"] == "a0" and conv[-1]["content"] == "final?"
    with pytest.raises(PersonaLensError, match="7 shots"):
        many_shot_conditions(ex, counts=(7,))


def _fake_run(tmp_path, n_pos=4):
    rows, scores = [], []
    for side in ("pos", "neg"):
        for i in range(n_pos):
            key = f"extract/{side}/q{i}"
            rows.append(
                {
                    "key": key,
                    "split": "extract",
                    "side": side,
                    "question": f"Q{i}",
                    "response": f"R{side}{i}",
                }
            )
            scores.append({"key": key, "trait": float(10 * i), "coherence": 90.0})
    rows.append(
        {"key": "eval/pos/q0", "split": "eval", "side": "pos", "question": "E", "response": "x"}
    )
    scores.append({"key": "eval/pos/q0", "trait": 100.0, "coherence": 90.0})
    scores[0]["coherence"] = 10.0  # incoherent: never picked
    (tmp_path / "responses.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "judge_scores.jsonl").write_text("\n".join(json.dumps(s) for s in scores) + "\n")
    return tmp_path


def test_trait_examples_take_the_best_positive_extraction_replies(tmp_path):
    run = _fake_run(tmp_path)
    assert trait_examples(run, 3) == [("Q3", "Rpos3"), ("Q2", "Rpos2"), ("Q1", "Rpos1")]
    with pytest.raises(PersonaLensError, match="only 3 coherent"):
        trait_examples(run, 4)
    with pytest.raises(PersonaLensError, match="extraction run"):
        trait_examples(tmp_path / "missing", 1)


# ----------------------------------------------------------------------------- experiment


def _conditions():
    return [
        MonitorCondition("kind", "system", -1.0, "Be very kind."),
        MonitorCondition("none", "system", 0.0, None),
        MonitorCondition("0-shot", "many_shot", 0.0, None),
        MonitorCondition(
            "1-shot",
            "many_shot",
            1.0,
            None,
            ({"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}),
        ),
    ]


def _experiment(model, vec, judge, **kw):
    return monitoring_experiment(
        model,
        vec,
        _conditions(),
        questions=QUESTIONS,
        judge=judge,
        layers=[0, 2],
        generation=mx.GenerationConfig(max_new_tokens=5, batch_size=4),
        progress=False,
        **kw,
    )


def test_experiment_records_correlations_and_shared_prompts(tiny_model, vec, monkeypatch):
    calls = []
    real = mx.generate_samples
    monkeypatch.setattr(
        mx,
        "generate_samples",
        lambda m, convs, *a, **k: calls.append(len(convs)) or real(m, convs, *a, **k),
    )
    res = _experiment(tiny_model, vec, LengthJudge())
    assert res.layer == 1 and res.layers == [0, 1, 2]  # best layer added to those measured
    # "none" and "0-shot" are the same prompts: generated once
    assert sum(calls) == 3 * 3
    df = res.to_frame()
    assert len(df) == 4 * 3
    a = df[df.condition == "none"].reset_index(drop=True)
    b = df[df.condition == "0-shot"].reset_index(drop=True)
    assert (
        a.response.tolist() == b.response.tolist()
        and a.projection.tolist() == b.projection.tolist()
    )
    pp = last_prompt_projection(tiny_model, vec, QUESTIONS, system="Be very kind.", layers=[1])
    assert df[df.condition == "kind"].projection.tolist() == pytest.approx(
        pp.at(1).tolist(), abs=1e-4
    )
    c = res.correlations()
    assert c["n"] == 12 and c["n_conditions"] == 4
    assert c["r"] == pytest.approx(pearson_r(df.projection, df.trait), nan_ok=True)
    sub = df[df.condition == "1-shot"]
    assert c["r_within"]["1-shot"] == pytest.approx(
        pearson_r(sub.projection, sub.trait), nan_ok=True
    )
    assert res.correlations(kind="many_shot")["n"] == 6
    assert list(res.r_by_layer().layer) == [0, 1, 2]
    summary = res.summary()
    assert set(summary.condition) == {"kind", "none", "0-shot", "1-shot"}
    json.dumps(res.to_dict())  # JSON-safe (NaN as null)


def test_experiment_resumes_after_an_interrupt(tiny_model, vec, tmp_path, monkeypatch):
    full = _experiment(tiny_model, vec, LengthJudge())
    out = tmp_path / "mon"
    judge = LengthJudge(fail_after=0)
    with pytest.raises(KeyboardInterrupt):
        _experiment(tiny_model, vec, judge, out=out)
    assert (out / "responses.jsonl").exists() and not (out / "monitoring.json").exists()

    def no_generation(*a, **k):
        raise AssertionError("finished generations were redone")

    monkeypatch.setattr(mx, "generate_samples", no_generation)
    again = _experiment(tiny_model, vec, LengthJudge(), out=out)
    assert again.records == full.records
    assert json.loads((out / "monitoring.json").read_text())["layer"] == 1
    with pytest.raises(PersonaLensError, match="different settings"):
        monitoring_experiment(
            tiny_model,
            vec,
            _conditions()[:2],
            questions=QUESTIONS,
            judge=LengthJudge(),
            out=out,
            progress=False,
        )


def test_experiment_checks_inputs(tiny_model, vec):
    dup = [_conditions()[0], _conditions()[0]]
    with pytest.raises(PersonaLensError, match="unique"):
        monitoring_experiment(tiny_model, vec, dup, questions=QUESTIONS, judge=LengthJudge())
    with pytest.raises(PersonaLensError, match="no conditions"):
        monitoring_experiment(tiny_model, vec, [], questions=QUESTIONS, judge=LengthJudge())


def test_monitoring_figures(tiny_model, vec, tmp_path):
    from personalens.plot import (
        plot_monitoring_r_by_layer,
        plot_monitoring_scatter,
        plot_token_trace,
        save_html,
    )

    res = _experiment(tiny_model, vec, LengthJudge())
    fig = plot_monitoring_scatter(res)
    assert len(fig.data) == 2 * 4 and "r = " in fig.layout.title.text
    assert len(plot_monitoring_r_by_layer(res).data) == 2 * 3
    tr = token_trace(tiny_model, vec, "hi", response="there", layer=2)
    tfig = plot_token_trace(tr)
    assert {t.name for t in tfig.data} == {"template", "user", "response"}
    assert sum(len(t.x) for t in tfig.data) == len(tr)
    assert save_html(tfig, tmp_path / "t.html").stat().st_size > 1000

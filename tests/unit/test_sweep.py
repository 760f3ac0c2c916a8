"""steering_sweep on a tiny random model with a deterministic stand-in judge."""

import importlib
import json

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction.traits import load_trait
from personalens.model.generation import generate
from personalens.steering.hooks import steer
from personalens.studies.steering_sweep import steering_sweep
from personalens.vectors.vector import PersonaVector

# the module, not the function of the same name that pl.studies exports
sweep_mod = importlib.import_module("personalens.studies.steering_sweep")

PROMPTS = ["Hello there", "What is two plus two?", "Tell me a story."]


class LengthJudge:
    """Scores the number of characters (capped at 100): deterministic, and it sees the text."""

    name = "length-judge"

    def __init__(self):
        self.calls = 0

    def score_trait(self, trait, items):
        self.calls += 1
        return [float(min(len(i.answer), 100)) for i in items]

    def score_coherence(self, items):
        return [100.0 if i.answer else float("nan") for i in items]


@pytest.fixture(scope="module")
def vec(tiny_model):
    g = torch.Generator().manual_seed(3)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g) * 3.0
    return PersonaVector(directions=d, model="tiny-random", trait="evil")


def _run(model, vec, judge, **kw):
    return steering_sweep(
        model,
        vec,
        PROMPTS,
        layers=[0, 2],
        coeffs=[0, 1.0, 4.0],
        judge=judge,
        generation=sweep_mod.GenerationConfig(max_new_tokens=6),
        progress=False,
        **kw,
    )


def test_sweep_cells_match_direct_steering(tiny_model, vec):
    res = _run(tiny_model, vec, LengthJudge())
    df = res.to_frame()
    assert len(df) == 2 * 3 * len(PROMPTS)
    base = generate(tiny_model, PROMPTS, max_new_tokens=6).responses
    for L in (0, 2):
        assert df[(df.layer == L) & (df.coeff == 0)].response.tolist() == base
    # the sweep reproduces the paper: response-only steering (steer's default is "all")
    with steer(tiny_model, vec, coeff=4.0, layers=[2], positions="response"):
        steered = generate(tiny_model, PROMPTS, max_new_tokens=6).responses
    assert df[(df.layer == 2) & (df.coeff == 4.0)].response.tolist() == steered
    assert (df.trait == df.response.str.len().clip(upper=100)).all()
    table = res.summary()
    assert len(table) == 6 and set(table.columns) >= {"trait", "trait_sem", "coherence", "n"}
    assert res.trait == "evil"  # judged with the vector's trait by default
    assert json.dumps(res.to_dict())


def test_default_prompts_are_the_held_out_eval_questions(tiny_model, vec):
    res = steering_sweep(
        tiny_model,
        vec,
        layers=[1],
        coeffs=[2.0],
        judge=LengthJudge(),
        generation=sweep_mod.GenerationConfig(max_new_tokens=2),
        progress=False,
    )
    assert res.to_frame().question.tolist() == list(load_trait("evil").split_questions()[1])


def test_sweep_resumes_without_redoing_work(tiny_model, vec, tmp_path, monkeypatch):
    first = _run(tiny_model, vec, LengthJudge(), out=tmp_path)
    assert (tmp_path / "sweep.json").exists()

    def no_generation(*a, **k):
        raise AssertionError("a finished cell was generated again")

    monkeypatch.setattr(sweep_mod, "generate", no_generation)
    judge = LengthJudge()
    again = _run(tiny_model, vec, judge, out=tmp_path)
    assert judge.calls == 0
    assert again.records == first.records


def test_interrupted_sweep_keeps_finished_cells(tiny_model, vec, tmp_path, monkeypatch):
    real = sweep_mod.generate
    calls = {"n": 0}

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(sweep_mod, "generate", flaky)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_model, vec, LengthJudge(), out=tmp_path)
    lines = (tmp_path / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 2
    monkeypatch.setattr(sweep_mod, "generate", real)
    resumed = _run(tiny_model, vec, LengthJudge(), out=tmp_path)
    assert resumed.records == _run(tiny_model, vec, LengthJudge()).records


def test_changed_settings_are_refused(tiny_model, vec, tmp_path):
    _run(tiny_model, vec, LengthJudge(), out=tmp_path)
    with pytest.raises(PersonaLensError, match="different settings"):
        _run(tiny_model, vec, LengthJudge(), out=tmp_path, positions="all")


def test_bad_layer_fails_before_generating(tiny_model, vec):
    with pytest.raises(ValueError, match="unknown layer 9"):
        steering_sweep(
            tiny_model, vec, PROMPTS, layers=[9], coeffs=[1.0], judge=LengthJudge(), progress=False
        )


def test_sweep_figures(tiny_model, vec, tmp_path):
    from personalens.plot import plot_steering_heatmap, plot_steering_sweep, save_html

    res = _run(tiny_model, vec, LengthJudge())
    fig = plot_steering_sweep(res)
    assert len(fig.data) == 2 * len(res.layers)  # trait and coherence line per layer
    assert list(fig.data[0].x) == [0.0, 1.0, 4.0]
    heat = plot_steering_heatmap(res)
    assert len(heat.data[0].z) == 2 and len(heat.data[0].z[0]) == 3
    assert "/" in heat.data[0].text[0][0]
    path = save_html(heat, tmp_path / "heat.html")
    assert path.stat().st_size > 1000

"""steering_sweep on a tiny random model with a deterministic stand-in judge."""

import importlib
import json
import math

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.extraction.traits import load_trait, parse_trait
from personalens.model.generation import generate
from personalens.steering.hooks import steer
from personalens.studies.steering_cells import TOPUP_TEMPERATURE
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
    cell = heat.data[0].text[0][1]  # layer 0, coefficient 1: trait / coherence, then n
    assert "/" in cell and cell.endswith(f"n={len(PROMPTS)}")
    assert f"n = {len(PROMPTS)} replies per cell" in heat.layout.title.text
    hover = heat.data[0].hovertext[0][1]
    assert "95% CI" in hover and f"n = {len(PROMPTS)} replies" in hover
    overlaps = res.summary().set_index(["layer", "coeff"]).overlaps_baseline
    assert ("~" in cell) == bool(overlaps[(0, 1.0)])
    path = save_html(heat, tmp_path / "heat.html")
    assert path.stat().st_size > 1000


# ----------------------------------------------------------------------------- honest n

# an upstream-shaped trait file: 8 questions, no eval_questions, so 2 held out (the last quarter)
UPSTREAM = {
    "instruction": [{"pos": "Be evil.", "neg": "Be kind."}],
    "questions": [f"Question number {i}?" for i in range(8)],
    "eval_prompt": "Rate {question} {answer}",
}


def test_few_held_out_questions_get_samples_until_a_cell_holds_min_replies(tiny_model, vec):
    trait = parse_trait(UPSTREAM, name="evil")
    held_out = list(trait.split_questions()[1])
    assert len(held_out) == 2
    with pytest.warns(UserWarning, match="overlaps_baseline|not shown to differ"):
        res = steering_sweep(
            tiny_model, vec, layers=[1], coeffs=[0, 0.01], trait=trait, judge=LengthJudge(),
            generation=sweep_mod.GenerationConfig(max_new_tokens=3), progress=False,
        )  # fmt: skip
    gen = res.settings["generation"]
    assert gen["n"] == 10 and gen["temperature"] == TOPUP_TEMPERATURE  # greedy -> sampled
    df = res.to_frame()
    assert sorted(set(df.question)) == sorted(held_out)  # every held-out question
    assert {"n", "ci_low", "ci_high", "overlaps_baseline"} <= set(df.columns)
    table = res.summary()
    assert (table.n == 20).all() and len(df) == 2 * 20
    assert (table.ci_low <= table.trait).all() and (table.trait <= table.ci_high).all()
    assert df.groupby("question").response.nunique().min() > 1  # sampled replies differ
    base = table[table.coeff == 0].iloc[0]
    assert base.overlaps_baseline is False or base.overlaps_baseline == False  # noqa: E712
    # a tiny coefficient does not move the mean out of the unsteered CI
    assert bool(table[table.coeff == 0.01].overlaps_baseline.iloc[0])
    assert res.best_cell(0)["overlaps_baseline"] is True
    assert json.dumps(res.to_dict())


def test_min_replies_zero_and_explicit_prompts_keep_one_greedy_reply(tiny_model, vec):
    trait = parse_trait(UPSTREAM, name="evil")
    kw = dict(layers=[1], coeffs=[2.0], trait=trait, judge=LengthJudge(), progress=False)
    gen = sweep_mod.GenerationConfig(max_new_tokens=2)
    plain = steering_sweep(tiny_model, vec, generation=gen, min_replies=0, **kw)
    assert (
        plain.settings["generation"]["n"] == 1 and plain.settings["generation"]["temperature"] == 0
    )
    assert len(plain.records) == 2
    own = steering_sweep(tiny_model, vec, PROMPTS, generation=gen, **kw)
    assert len(own.records) == len(PROMPTS)  # explicit prompts: exactly generation.n each
    # no unsteered cell: nothing to compare with (a feature test sweeps its baseline apart)
    assert own.summary().overlaps_baseline.isna().all() and own.overlap_note() is None
    with pytest.raises(PersonaLensError, match="min_replies"):
        steering_sweep(tiny_model, vec, generation=gen, min_replies=-1, **kw)


def test_mean_interval_resamples_questions_and_needs_two_scores():
    from personalens.studies.steering_cells import mean_interval

    assert all(math.isnan(x) for x in mean_interval([50.0], [0]))
    assert all(math.isnan(x) for x in mean_interval([50.0, float("nan")], [0, 1]))
    # one reply per question: the plain bootstrap over replies; deterministic
    scores = [10.0, 20.0, 80.0, 90.0, 50.0, 60.0]
    lo, hi = mean_interval(scores, range(6))
    assert lo < sum(scores) / 6 < hi and (lo, hi) == mean_interval(scores, range(6))
    # the same scores as 2 questions x 3 samples that agree within a question: resampling
    # questions (their replies move together) gives a wider interval than 6 free replies
    lo2, hi2 = mean_interval([10.0, 10.0, 10.0, 90.0, 90.0, 90.0], [0, 0, 0, 1, 1, 1])
    lo6, hi6 = mean_interval([10.0, 10.0, 10.0, 90.0, 90.0, 90.0], range(6))
    assert hi2 - lo2 > hi6 - lo6
    # one question: its replies are resampled
    lo1, hi1 = mean_interval([10.0, 30.0, 50.0], [7, 7, 7])
    assert lo1 < 30.0 < hi1


def test_flag_overlaps_on_a_made_up_table():
    import pandas as pd

    from personalens.studies.steering_cells import flag_overlaps, overlap_note

    table = pd.DataFrame(
        {
            "layer": [1, 1, 1, 1],
            "coeff": [0.0, 1.0, 2.0, 4.0],
            "n": [20, 20, 20, 20],
            "ci_low": [10.0, 25.0, 40.0, float("nan")],
            "ci_high": [30.0, 45.0, 60.0, float("nan")],
        }
    )
    flags = flag_overlaps(table)
    assert flags == [False, True, False, True]  # no CI: nothing tells it apart
    note = overlap_note(table.assign(overlaps_baseline=flags))
    assert "2 of 3 steered cells" in note and "L1/c1" in note and "L1/c4" in note
    assert "n = 20" in note
    assert flag_overlaps(table[table.coeff != 0]) == [None, None, None]


def test_an_upstream_eval_file_gives_all_its_questions_one_greedy_reply_each(
    tiny_model, vec, tmp_path
):
    """Upstream's held-out split is the sibling trait_data_eval file: every one of its
    questions, and with 20 of them no extra samples (greedy, as before)."""
    from personalens.extraction.traits import load_trait_file

    (tmp_path / "trait_data_extract").mkdir()
    (tmp_path / "trait_data_eval").mkdir()
    held_out = [f"Held-out question {i}?" for i in range(20)]
    (tmp_path / "trait_data_extract" / "evil.json").write_text(json.dumps(UPSTREAM))
    (tmp_path / "trait_data_eval" / "evil.json").write_text(
        json.dumps({**UPSTREAM, "questions": held_out})
    )
    trait = load_trait_file(tmp_path / "trait_data_extract" / "evil.json")
    res = steering_sweep(
        tiny_model, vec, layers=[1], coeffs=[2.0], trait=trait, judge=LengthJudge(),
        generation=sweep_mod.GenerationConfig(max_new_tokens=2), progress=False,
    )  # fmt: skip
    assert res.to_frame().question.tolist() == held_out
    assert res.settings["generation"]["n"] == 1 and res.settings["generation"]["temperature"] == 0

"""Big Five control: pole table, shipped vectors, OLS fit, scalar sweep and additive test."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import personalens as pl
from personalens.studies.personality import steered_scores
from personalens.studies.personality.additive_test import AdditiveTestResult, additive_test
from personalens.studies.personality.ocean import BIG_FIVE_DIMENSIONS, BIG_FIVE_POLES, pole
from personalens.studies.personality.questionnaire import score_questionnaire
from personalens.studies.personality.questionnaire_file import (
    load_questionnaire,
    parse_questionnaire,
)
from personalens.studies.personality.questionnaire_result import QuestionnaireResult
from personalens.studies.personality.scalar_sweep import ScalarSweepResult, fit_line, scalar_sweep
from personalens.vectors.shipped import list_shipped_vectors, shipped_vector
from personalens.vectors.vector import PersonaVector

ROOT = Path(__file__).resolve().parents[2]

# two dimensions, two forward and two reverse items each; short (byte-level tokenizer)
TINY_Q = {
    "name": "tiny_ocean",
    "dimensions": ["extraversion", "agreeableness"],
    "scale": {"values": [1, 2, 3, 4, 5], "labels": ["a", "b", "c", "d", "e"]},
    "prompt_template": "{item}?",
    "items": [
        {"id": "e1", "text": "I chat.", "dimension": "extraversion", "reverse": False},
        {"id": "e2", "text": "I hide.", "dimension": "extraversion", "reverse": True},
        {"id": "e3", "text": "I'm quiet.", "dimension": "extraversion", "reverse": True},
        {"id": "a1", "text": "I care.", "dimension": "agreeableness", "reverse": False},
        {"id": "a2", "text": "I'm cold.", "dimension": "agreeableness", "reverse": True},
        {"id": "a3", "text": "I sneer.", "dimension": "agreeableness", "reverse": True},
        {"id": "e4", "text": "I joke.", "dimension": "extraversion", "reverse": False},
        {"id": "a4", "text": "I help.", "dimension": "agreeableness", "reverse": False},
    ],
}


def vec(trait: str, seed: int, model: str = "tiny-random") -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(directions=torch.randn(3, 32, generator=g), model=model, trait=trait)


@pytest.fixture(scope="module")
def tq():
    return parse_questionnaire(TINY_Q)


# ----------------------------------------------------------------------------- poles


def test_pole_table_agrees_with_the_trait_files_and_the_questionnaire():
    assert set(BIG_FIVE_DIMENSIONS) == set(load_questionnaire("big_five").dimensions)
    assert len(BIG_FIVE_POLES) == 10
    for dim in BIG_FIVE_DIMENSIONS:
        signs = sorted(s for d, s in BIG_FIVE_POLES.values() if d == dim)
        assert signs == [-1, 1], dim
    for trait, (dim, sign) in BIG_FIVE_POLES.items():
        text = pl.load_trait(trait).description.lower()
        assert dim.split("ness")[0][:5] in text, (trait, text)  # "openness to experience", ...
        assert ("high pole" if sign > 0 else "low pole") in text, (trait, text)
    assert pole("solitary") == ("extraversion", -1)
    with pytest.raises(pl.PersonaLensError, match="not a Big Five pole.*inventive"):
        pole("evil")


# ----------------------------------------------------------------------------- shipped vectors


def test_shipped_vectors_are_the_embedded_models():
    names = list_shipped_vectors()
    assert {"evil", "outgoing", "compassionate"} <= set(names)
    assert list_shipped_vectors("no-such-model") == []
    assert pl.vectors.list_shipped_vectors() == names
    for name in names:
        v = shipped_vector(name)
        assert v.trait == name and v.model == "SmolLM2-135M-Instruct"
        assert tuple(v.directions.shape) == (30, 576)
        assert v.variant == "response_avg" and isinstance(v.metadata["best_layer"], int)
        assert v.metadata["shipped_from"]["best_layer"] == v.metadata["best_layer"]
        assert torch.isfinite(v.directions).all() and float(v.norms().min()) > 0
    with pytest.raises(pl.PersonaLensError, match="personalens extract --trait nope"):
        shipped_vector("nope")


def _ship_tool():
    spec = importlib.util.spec_from_file_location("ship_vectors", ROOT / "tools/ship_vectors.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_run(folder: Path, trait: str, model: str, shape=(30, 576)) -> Path:
    run = folder / trait
    v = PersonaVector(directions=torch.randn(*shape), model=model, trait=trait)
    v.save(run / "vector")
    summary = {"trait": trait, "model": model, "best_layer": 12, "best_auc": 0.9}
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def test_ship_vectors_tool_checks_provenance(tmp_path):
    tool = _ship_tool()
    run = _fake_run(tmp_path / "runs", "outgoing", "SmolLM2-135M-Instruct")
    path = tool.ship(run, tmp_path / "data")
    assert path == tmp_path / "data/vectors/SmolLM2-135M-Instruct/outgoing.json"
    back = PersonaVector.load(path)
    assert torch.equal(back.directions, PersonaVector.load(run / "vector").directions)
    assert back.metadata["best_layer"] == 12
    assert back.metadata["shipped_from"]["best_auc"] == 0.9
    other = _fake_run(tmp_path / "runs2", "outgoing", "gpt2", shape=(12, 768))
    with pytest.raises(SystemExit, match="not the embedded.*shape"):
        tool.ship(other, tmp_path / "data")
    with pytest.raises(SystemExit, match="finished `personalens extract` run"):
        tool.ship(tmp_path / "missing", tmp_path / "data")


# ----------------------------------------------------------------------------- fit


def test_fit_line_is_ordinary_least_squares():
    assert fit_line([-1, 0, 1, 2], [-1, 1, 3, 5]) == pytest.approx((2.0, 1.0, 1.0))
    rng = np.random.default_rng(0)
    x = np.linspace(-1, 1, 9)
    y = 0.3 * x - 0.2 + rng.normal(0, 0.1, 9)
    slope, intercept, r2 = fit_line(x, y)
    want_slope, want_intercept = np.polyfit(x, y, 1)
    assert (slope, intercept) == pytest.approx((want_slope, want_intercept))
    assert r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2)
    assert math.isnan(fit_line([0, 1], [2, 2])[2])  # constant y: R² undefined
    assert fit_line([0, 1, 2], [0, float("nan"), 2])[0] == pytest.approx(1.0)
    with pytest.raises(pl.PersonaLensError, match="two distinct x"):
        fit_line([1, 1], [0, 1])


# ----------------------------------------------------------------------------- scalar sweep


def _planted_result(q, contrasts: dict[str, float]) -> QuestionnaireResult:
    """A likelihood result whose forward items have logprob = contrast, reverse items 0."""
    records = []
    for it in q.items:
        value = 0.0 if it.reverse else contrasts[it.dimension]
        records.append(
            {"id": it.id, "dimension": it.dimension, "reverse": it.reverse, "text": it.text,
             "raw_score": value, "score": value, "logprob": value}
        )  # fmt: skip
    return QuestionnaireResult(q.name, "likelihood", q.dimensions, q.scale.values, records)


def test_scalar_sweep_arithmetic_on_planted_scores(tiny_model, tq, monkeypatch):
    calls = []

    def fake(model, q, steering, method, batch_size, system):
        c = 0.0 if steering is None else steering.description["coeff"][0]
        calls.append(c)
        return _planted_result(q, {"extraversion": 1.0 + 2.0 * c, "agreeableness": 0.5 - c * c})

    monkeypatch.setattr(steered_scores, "score_steered", fake)
    res = scalar_sweep(tiny_model, vec("solitary", 0), [1.0, -1, 2], layers=1, questionnaire=tq)
    assert sorted(calls) == [-1.0, 0.0, 1.0, 2.0]  # coeff 0 added, unsteered
    assert res.coeffs == (-1.0, 0.0, 1.0, 2.0)
    assert (res.target, res.sign) == ("extraversion", -1)
    assert res.units == "nats/token"
    df = res.to_frame()
    assert len(df) == 8
    ext = df[df.dimension == "extraversion"].set_index("coeff")
    assert ext.score.tolist() == pytest.approx([-1.0, 1.0, 3.0, 5.0])
    assert ext.delta.tolist() == pytest.approx([-2.0, 0.0, 2.0, 4.0])
    assert ext.is_target.all() and not df[df.dimension == "agreeableness"].is_target.any()
    assert res.table().loc[2.0, "agreeableness"] == pytest.approx(-4.0)
    fit = res.fit().set_index("dimension")
    assert fit.loc["extraversion", "slope"] == pytest.approx(2.0)
    assert fit.loc["extraversion", "intercept"] == pytest.approx(1.0)
    assert fit.loc["extraversion", "r2"] == pytest.approx(1.0)
    assert fit.loc["extraversion", "expected_sign"] == -1
    assert not fit.loc["extraversion", "as_expected"]  # rises, but solitary is the low pole
    assert fit.loc["agreeableness", "r2"] < 1.0
    assert math.isnan(fit.loc["agreeableness", "as_expected"])
    json.dumps(res.to_dict(), allow_nan=False)
    back = ScalarSweepResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.to_frame().equals(res.to_frame()) and back.fit().equals(res.fit())
    # a baseline is reused as coefficient 0, not scored again
    calls.clear()
    base = fake(tiny_model, tq, None, "likelihood", 16, None)
    again = scalar_sweep(
        tiny_model, vec("solitary", 0), [1.0], layers=1, questionnaire=tq, baseline=base
    )
    assert calls == [0.0, 1.0] and again.to_frame().delta.tolist()[2] == pytest.approx(2.0)
    # a trait that is no pole: no target unless given
    other = scalar_sweep(tiny_model, vec("evil", 0), [1.0], layers=1, questionnaire=tq)
    assert other.target is None and other.sign == 0
    given = scalar_sweep(
        tiny_model, vec("evil", 0), [1.0], layers=1, questionnaire=tq, target="agreeableness"
    )
    assert (given.target, given.sign) == ("agreeableness", 1)


def test_scalar_sweep_on_the_tiny_model_matches_steered_scoring(tiny_model, tq):
    v = vec("outgoing", 1)
    res = scalar_sweep(
        tiny_model, v, [-4.0, 4.0], layers=[1], questionnaire=tq, coeff_scale="unit",
        positions="response",
    )  # fmt: skip
    assert (res.target, res.sign) == ("extraversion", 1)
    base = score_questionnaire(tiny_model, tq, method="likelihood").summary()
    with pl.steer(tiny_model, v, coeff=4.0, layers=[1], coeff_scale="unit", positions="response"):
        up = score_questionnaire(tiny_model, tq, method="likelihood").summary()
    df = res.to_frame().set_index(["coeff", "dimension"])
    for dim in tq.dimensions:
        assert df.loc[(0.0, dim), "score"] == pytest.approx(base[dim], abs=1e-5)
        assert df.loc[(4.0, dim), "delta"] == pytest.approx(up[dim] - base[dim], abs=1e-4)
        assert df.loc[(0.0, dim), "delta"] == 0.0
        assert df.loc[(4.0, dim), "delta_sem"] > 0
    assert res.settings["layers"] == [1] and res.settings["positions"] == "response"
    assert not any(h.fwd_hooks for h in tiny_model.hook_dict.values())


def test_scalar_sweep_bad_input(tiny_model, tq):
    v = vec("outgoing", 0)
    with pytest.raises(pl.PersonaLensError, match="coeffs is empty"):
        scalar_sweep(tiny_model, v, [], layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="repeat"):
        scalar_sweep(tiny_model, v, [1.0, 1.0], layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="not a PersonaVector"):
        scalar_sweep(tiny_model, torch.ones(3, 32), [1.0], layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="n_layers differs"):
        scalar_sweep(tiny_model, shipped_vector("outgoing"), [1.0], layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="not a dimension"):
        scalar_sweep(tiny_model, v, [1.0], layers=1, questionnaire=tq, target="openness")
    with pytest.raises(pl.PersonaLensError, match="unknown coeff_scale"):
        scalar_sweep(tiny_model, v, [1.0], layers=1, questionnaire=tq, coeff_scale="big")
    with pytest.raises(pl.PersonaLensError, match="unknown positions"):
        scalar_sweep(tiny_model, v, [1.0], layers=1, questionnaire=tq, positions="middle")


# ----------------------------------------------------------------------------- additive test


def test_additive_test_adds_the_edits_and_predicts_from_the_singles(tiny_model, tq, monkeypatch):
    a, b = vec("outgoing", 1), vec("compassionate", 2)
    norms = torch.linspace(1.0, 3.0, 3)
    plans = {}

    def fake(model, q, steering, method, batch_size, system):
        if steering is None:
            return _planted_result(q, {"extraversion": 0.0, "agreeableness": 0.0})
        d = steering.edits[0].delta
        plans[len(plans)] = steering
        return _planted_result(q, {"extraversion": float(d[0]), "agreeableness": float(d[1])})

    monkeypatch.setattr(steered_scores, "score_steered", fake)
    res = additive_test(tiny_model, a, b, 0.5, layers=[2], resid_norms=norms, questionnaire=tq)
    deltas = [p.edits[0].delta for p in plans.values()]  # a, b, a+b, a-b
    # the edit of a is what steer(a, coeff_scale="resid") adds; a+b adds the sum of the edits
    ref = pl.steering.plan_steering(
        tiny_model, a, 0.5, layers=[2], coeff_scale="resid", resid_norms=norms
    )
    assert torch.allclose(deltas[0], ref.edits[0].delta, atol=1e-6)
    assert float(deltas[0].norm()) == pytest.approx(0.5 * 3.0, rel=1e-5)
    assert torch.allclose(deltas[2], deltas[0] + deltas[1], atol=1e-6)
    assert torch.allclose(deltas[3], deltas[0] - deltas[1], atol=1e-6)
    assert all(p.description["coeff_scale"] == "raw" for p in plans.values())
    for dim, k in (("extraversion", 0), ("agreeableness", 1)):
        assert res.observed["a"][dim] == pytest.approx(float(deltas[0][k]))
        assert res.predicted["a+b"][dim] == pytest.approx(float(deltas[0][k] + deltas[1][k]))
        assert res.predicted["a-b"][dim] == pytest.approx(float(deltas[0][k] - deltas[1][k]))
        assert res.observed["a+b"][dim] == pytest.approx(res.predicted["a+b"][dim], abs=1e-5)
    df = res.to_frame()
    assert len(df) == 8 and set(df.condition) == {"a", "b", "a+b", "a-b"}
    assert df[df.condition == "a"].predicted.isna().all()
    assert df[df.condition == "a+b"].error.abs().max() < 1e-5
    assert res.label("a-b") == "outgoing − compassionate"
    summary = res.summary().set_index("condition")
    assert summary.loc["a+b", "gain"] == pytest.approx(1.0, abs=1e-4)
    assert summary.loc["a+b", "mae"] < 1e-5
    json.dumps(res.to_dict(), allow_nan=False)
    back = AdditiveTestResult.from_dict(json.loads(json.dumps(res.to_dict())))
    assert back.to_frame().equals(res.to_frame())
    # raw scale: the raw vectors are added, as in the PERSONA paper
    plans.clear()
    additive_test(tiny_model, a, b, 2.0, layers=[2], coeff_scale="raw", questionnaire=tq)
    assert torch.allclose(plans[2].edits[0].delta, 2.0 * (a[2] + b[2]), atol=1e-5)


def test_additive_test_on_the_tiny_model_reuses_a_baseline(tiny_model, tq):
    a, b = vec("outgoing", 1), vec("compassionate", 2)
    base = score_questionnaire(tiny_model, tq, method="likelihood")
    res = additive_test(
        tiny_model, a, b, 2.0, layers=[1], coeff_scale="unit", questionnaire=tq, baseline=base
    )
    with pl.steer(tiny_model, a, coeff=2.0, layers=[1], coeff_scale="unit", positions="all"):
        up = score_questionnaire(tiny_model, tq, method="likelihood").summary()
    for dim in tq.dimensions:
        assert res.observed["a"][dim] == pytest.approx(up[dim] - base.summary()[dim], abs=1e-4)
    assert np.isfinite(res.to_frame().observed).all()


def test_additive_test_bad_input(tiny_model, tq):
    a = vec("outgoing", 1)
    with pytest.raises(pl.PersonaLensError, match="different models"):
        additive_test(tiny_model, a, vec("x", 2, model="other"), 1.0, layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="coeff is 0"):
        additive_test(tiny_model, a, vec("b", 2), 0.0, layers=1, questionnaire=tq)
    with pytest.raises(pl.PersonaLensError, match="coeffs must be finite"):
        additive_test(tiny_model, a, vec("b", 2), float("nan"), layers=1, questionnaire=tq)
    base = score_questionnaire(tiny_model, tq, method="logprob")
    with pytest.raises(pl.PersonaLensError, match="baseline was scored"):
        additive_test(tiny_model, a, vec("b", 2), 1.0, layers=1, questionnaire=tq, baseline=base)
    with pl.steer(tiny_model, a, coeff=1.0, layers=[1]) as plan:
        pass
    steered = score_questionnaire(tiny_model, tq, method="likelihood", steering=plan)
    with pytest.raises(pl.PersonaLensError, match="must be the unsteered"):
        scalar_sweep(tiny_model, a, [1.0], layers=1, questionnaire=tq, baseline=steered)

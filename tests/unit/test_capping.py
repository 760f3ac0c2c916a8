"""Activation capping (personalens.steering.capping) on the tiny random model."""

import pytest
import torch

from personalens.errors import ArgumentError, PersonaLensError
from personalens.model.chat import tokenize_pairs
from personalens.steering.capping import (
    NEUTRAL_PROMPT,
    CappingConfig,
    cap,
    capping_plan,
    default_projections,
)
from personalens.steering.hooks import attached_edits, steer
from personalens.vectors.vector import PersonaVector

REPLIES = ["Sure, I can help.", "Here is the answer.", "ok", "Let me explain that step by step."]


@pytest.fixture(scope="module")
def axis(tiny_model):
    g = torch.Generator().manual_seed(3)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g)
    return PersonaVector(directions=d, model="tiny-random", trait="assistant_axis")


def _resid(model, batch, layers):
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long())
    return {L: cache[f"blocks.{L}.hook_resid_post"] for L in layers}


def test_parse_upstream_spec_is_a_half_open_band():
    c = CappingConfig.parse("layers_46:54-p0.25")
    assert c.layers == tuple(range(46, 54)) and c.percentile == 0.25
    assert c.spec() == "layers_46:54-p0.25"
    assert CappingConfig.parse("layers_1:3-p0.1", n_layers=3).layers == (1, 2)
    for bad in ("layers_4:2-p0.25", "46:54", "layers_1:2-p2"):
        with pytest.raises((ArgumentError, PersonaLensError)):
            CappingConfig.parse(bad)
    with pytest.raises(PersonaLensError, match="no floor"):
        CappingConfig((1, 2), floors={1: 0.0})


def test_percentile_floors_equal_the_quantile_of_reply_projections(tiny_model, axis):
    layers = [0, 2]
    proj = default_projections(tiny_model, axis, REPLIES, layers)
    # manual: mean over the reply tokens of resid . unit, teacher-forced after the neutral prompt
    batch = tokenize_pairs(tiny_model.tokenizer, [NEUTRAL_PROMPT] * len(REPLIES), REPLIES)
    resid = _resid(tiny_model, batch, layers)
    for i, L in enumerate(layers):
        unit = axis.directions[L] / axis.directions[L].norm()
        m = batch.response_mask.float()
        manual = ((resid[L] @ unit) * m).sum(1) / m.sum(1)
        torch.testing.assert_close(proj[:, i], manual, rtol=1e-4, atol=1e-4)
    config = CappingConfig(tuple(layers), percentile=0.25).calibrate(tiny_model, axis, REPLIES)
    for i, L in enumerate(layers):
        assert config.floors[L] == pytest.approx(float(torch.quantile(proj[:, i], 0.25)))
    pairs = [(NEUTRAL_PROMPT, r) for r in REPLIES]
    assert CappingConfig(tuple(layers)).calibrate(tiny_model, axis, pairs).floors == config.floors


def test_capping_floors_the_projection_and_leaves_the_rest_exactly(tiny_model, axis):
    batch = tokenize_pairs(tiny_model.tokenizer, ["Hi", "Who are you?"], REPLIES[:2])
    plain = _resid(tiny_model, batch, [0, 1, 2])
    unit = axis.directions[1] / axis.directions[1].norm()
    before = plain[1] @ unit
    floor = float(before[batch.attention_mask].median())
    config = CappingConfig((1,), floors={1: floor})
    seen = {}

    def grab(resid, hook):  # the hook runs after the cap at the same point
        seen["out"] = resid.clone()

    with cap(tiny_model, axis, config):
        with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", grab)]):
            capped = _resid(tiny_model, batch, [0, 1, 2])
    out = seen["out"]
    real = batch.attention_mask
    after = out @ unit
    assert bool((after[real] >= floor - 1e-4).all())
    above = real & (before >= floor)
    assert torch.equal(out[above], plain[1][above])  # exactly unchanged above the floor
    below = real & (before < floor)
    assert bool(below.any())
    torch.testing.assert_close(after[below], torch.full_like(after[below], floor))
    # the component orthogonal to the axis is untouched
    ortho = out - after[..., None] * unit
    torch.testing.assert_close(ortho[below], (plain[1] - before[..., None] * unit)[below])
    assert torch.equal(capped[0], plain[0])  # a layer before the band is untouched
    assert not torch.equal(capped[2], plain[2])


def test_capping_plan_is_steer_cap_min(tiny_model, axis):
    config = CappingConfig((0, 2), floors={0: -1.0, 2: 0.5})
    plan = capping_plan(tiny_model, axis, config)
    assert plan.description["mode"] == "cap" and plan.description["cap_side"] == "min"
    assert plan.layers == [0, 2] and plan.description["bound"] == [-1.0, 0.5]
    batch = tokenize_pairs(tiny_model.tokenizer, ["Hi"], ["Hello"])
    with cap(tiny_model, axis, config):
        a = tiny_model(batch.tokens)
        assert [e.layer for e in attached_edits(tiny_model)] == [0, 2]  # nothing at layer 1
    assert attached_edits(tiny_model) == []
    with steer(tiny_model, axis, mode="cap", cap_side="min", layers=[0, 2], bound=[-1.0, 0.5]):
        b = tiny_model(batch.tokens)
    assert torch.equal(a, b)
    with pytest.raises(PersonaLensError, match="no floors"):
        capping_plan(tiny_model, axis, CappingConfig((1,)))
    assert CappingConfig.from_dict(config.to_dict()) == config

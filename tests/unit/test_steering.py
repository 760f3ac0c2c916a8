"""Steering invariants on a tiny random model."""

import pytest
import torch

from personalens.errors import PersonaLensError
from personalens.model.chat import encode_chat, tokenize_pairs, tokenize_prompts
from personalens.model.generation import generate
from personalens.steering.calibration import calibrate_cap, residual_norms, response_positions
from personalens.steering.hooks import add_steering, attached_edits, foreign_hooks, steer
from personalens.vectors.vector import PersonaVector

PROMPTS = ["Hello there", "What is two plus two, exactly?", "x", "Tell me a story about a cat."]


@pytest.fixture(scope="module")
def vec(tiny_model):
    g = torch.Generator().manual_seed(1)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g) * 3.0
    return PersonaVector(directions=d, model="tiny-random", trait="test")


def _batch(model, prompts=PROMPTS):
    return tokenize_prompts(model.tokenizer, prompts)


def _logits(model, batch):
    with torch.no_grad():
        return model(batch.tokens, attention_mask=batch.attention_mask.long())


def _cache(model, batch):
    with torch.no_grad():
        _, cache = model.run_with_cache(batch.tokens, attention_mask=batch.attention_mask.long())
    return cache


def test_coeff_zero_is_the_baseline(tiny_model, vec):
    batch = _batch(tiny_model)
    base = _logits(tiny_model, batch)
    for positions in ("all", "prompt", "response"):
        with steer(tiny_model, vec, coeff=0.0, layers="all", positions=positions):
            assert torch.equal(_logits(tiny_model, batch), base)
    plain = generate(tiny_model, PROMPTS, max_new_tokens=8)
    with steer(tiny_model, vec, coeff=0.0, layers=[0, 2]):
        steered = generate(tiny_model, PROMPTS, max_new_tokens=8)
    assert steered.response_tokens == plain.response_tokens


def test_scaling_the_coefficient_equals_scaling_the_vector(tiny_model, vec):
    batch = _batch(tiny_model)
    with steer(tiny_model, vec, coeff=2.0, layers=[1], positions="all"):
        a = _logits(tiny_model, batch)
    with steer(tiny_model, vec * 2, coeff=1.0, layers=[1], positions="all"):
        b = _logits(tiny_model, batch)
    assert torch.equal(a, b)
    assert not torch.allclose(a, _logits(tiny_model, batch))


def test_earlier_layers_untouched_and_hooked_layer_is_orig_plus_coeff_v(tiny_model, vec):
    batch = _batch(tiny_model)
    base = _cache(tiny_model, batch)
    with steer(tiny_model, vec, coeff=1.5, layers=[1], positions="all"):
        steered = _cache(tiny_model, batch)
    real = batch.attention_mask
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_attn_out"):
        assert torch.equal(steered[name], base[name]), name
    expected = base["blocks.1.hook_resid_post"] + 1.5 * vec[1]
    got = steered["blocks.1.hook_resid_post"]
    assert torch.allclose(got[real], expected[real], atol=1e-5)
    # padding is never steered
    assert torch.equal(got[~real], base["blocks.1.hook_resid_post"][~real])
    assert not torch.allclose(steered["blocks.2.hook_resid_post"], base["blocks.2.hook_resid_post"])


def test_ablation_leaves_zero_projection(tiny_model, vec):
    batch = _batch(tiny_model)
    with steer(tiny_model, vec, mode="ablate", layers=[0, 2], positions="all"):
        cache = _cache(tiny_model, batch)
    real = batch.attention_mask
    for L in (0, 2):
        proj = cache[f"blocks.{L}.hook_resid_post"][real] @ vec.unit(L)
        assert proj.abs().max() < 1e-4
    base = _cache(tiny_model, batch)
    assert (base["blocks.0.hook_resid_post"][real] @ vec.unit(0)).abs().max() > 0.1


def test_cap_never_exceeds_the_bound(tiny_model, vec):
    batch = _batch(tiny_model)
    base = _cache(tiny_model, batch)
    real = batch.attention_mask
    proj0 = base["blocks.1.hook_resid_post"][real] @ vec.unit(1)
    bound = float(proj0.median())
    with steer(tiny_model, vec, mode="cap", bound=bound, layers=[1], positions="all"):
        cache = _cache(tiny_model, batch)
    proj = cache["blocks.1.hook_resid_post"][real] @ vec.unit(1)
    assert proj.max() <= bound + 1e-4
    below = proj0 <= bound
    assert torch.allclose(proj[below], proj0[below], atol=1e-5)  # untouched below the bound
    with steer(
        tiny_model, vec, mode="cap", bound=bound, cap_side="min", layers=[1], positions="all"
    ):
        cache = _cache(tiny_model, batch)
    assert (cache["blocks.1.hook_resid_post"][real] @ vec.unit(1)).min() >= bound - 1e-4


def test_calibrated_cap_uses_a_percentile_of_reference_projections(tiny_model, vec):
    bounds = calibrate_cap(tiny_model, vec, [0, 2], PROMPTS, percentile=50)
    assert set(bounds) == {0, 2}
    with steer(tiny_model, vec, mode="cap", layers=[2], reference=PROMPTS, percentile=50) as plan:
        assert plan.edits[0].bound == pytest.approx(bounds[2])
    hi = calibrate_cap(tiny_model, vec, [2], PROMPTS, percentile=99)
    assert hi[2] > bounds[2]


def _naive_steered_greedy(model, vec, prompt, coeff, layer, positions, n_new, stops):
    """Reference: no KV cache; each step re-runs the whole sequence with an explicit mask."""
    ids = encode_chat(model.tokenizer, [{"role": "user", "content": prompt}])
    out: list[int] = []
    for _ in range(n_new):
        seq = ids + out
        pos = torch.arange(len(seq))
        mask = {
            "all": torch.ones(len(seq), dtype=torch.bool),
            "prompt": pos < len(ids),
            "response": pos >= len(ids) - 1,
        }[positions][None]
        with torch.no_grad(), steer(model, vec, coeff=coeff, layers=[layer], positions=mask):
            logits = model(torch.tensor([seq]))
        nxt = int(logits[0, -1].argmax())
        if nxt in stops:
            break
        out.append(nxt)
    return out


@pytest.mark.parametrize("positions", ["response", "all", "prompt"])
def test_kv_cache_and_batching_do_not_change_steered_output(tiny_model, vec, positions):
    stops = {tiny_model.tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    with steer(tiny_model, vec, coeff=2.0, layers=[1], positions=positions):
        batched = generate(tiny_model, PROMPTS, max_new_tokens=10, batch_size=4)
        singles = [generate(tiny_model, [p], max_new_tokens=10).response_tokens[0] for p in PROMPTS]
    plain = generate(tiny_model, PROMPTS, max_new_tokens=10, batch_size=4)
    assert batched.response_tokens == singles
    assert batched.response_tokens != plain.response_tokens
    for i, p in enumerate(PROMPTS):
        ref = _naive_steered_greedy(tiny_model, vec, p, 2.0, 1, positions, 10, stops)
        assert batched.response_tokens[i] == ref, p


def test_response_positions_reproduce_steered_generation(tiny_model, vec):
    with steer(tiny_model, vec, coeff=3.0, layers=[0], positions="response"):
        res = generate(tiny_model, PROMPTS, max_new_tokens=6)
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS, res.response_tokens)
    mask = response_positions(batch)
    assert (mask.sum(1) == batch.response_mask.sum(1)).all()
    with steer(tiny_model, vec, coeff=3.0, layers=[0], positions=mask):
        logits = _logits(tiny_model, batch)
    pred = logits.argmax(-1)
    for i in range(len(PROMPTS)):
        idx = torch.nonzero(mask[i]).flatten()
        resp = batch.tokens[i][batch.response_mask[i]].tolist()
        assert pred[i, idx].tolist()[: len(resp)] == resp


def test_hooks_are_removed_even_on_errors_and_user_hooks_survive(tiny_model, vec):
    seen = []
    tiny_model.add_hook("blocks.0.hook_resid_post", lambda x, hook: seen.append(1))
    try:
        with pytest.raises(RuntimeError):
            with steer(tiny_model, vec, coeff=1.0, layers=[0, 1]):
                assert len(tiny_model.blocks[0].hook_resid_post.fwd_hooks) == 2
                raise RuntimeError("boom")
        assert len(tiny_model.blocks[0].hook_resid_post.fwd_hooks) == 1
        assert not tiny_model.blocks[1].hook_resid_post.fwd_hooks
        assert not tiny_model._forward_pre_hooks
        _logits(tiny_model, _batch(tiny_model))
        assert seen
    finally:
        tiny_model.reset_hooks()


def test_persistent_handle(tiny_model, vec):
    batch = _batch(tiny_model)
    base = _logits(tiny_model, batch)
    with steer(tiny_model, vec, coeff=2.0, layers=[1], positions="all"):
        ref = _logits(tiny_model, batch)
    handle = add_steering(tiny_model, vec, 2.0, layers=[1], positions="all")
    assert handle.active
    assert torch.equal(_logits(tiny_model, batch), ref)
    handle.remove()
    handle.remove()  # idempotent
    assert not handle.active
    assert torch.equal(_logits(tiny_model, batch), base)
    assert not tiny_model._forward_pre_hooks


def test_per_layer_coefficients(tiny_model, vec):
    batch = _batch(tiny_model)
    with steer(tiny_model, vec, coeff=[1.0, -2.0], layers=[0, 2], positions="all"):
        a = _cache(tiny_model, batch)
    with steer(tiny_model, vec, coeff={2: -2.0, 0: 1.0}, layers=[0, 2], positions="all") as plan:
        b = _cache(tiny_model, batch)
    assert plan.description["coeff"] == [1.0, -2.0]
    assert torch.equal(a["blocks.2.hook_resid_post"], b["blocks.2.hook_resid_post"])


def test_coefficient_scales(tiny_model, vec):
    with steer(tiny_model, vec, coeff=3.0, layers=[1], coeff_scale="unit") as plan:
        assert plan.edits[0].delta.norm() == pytest.approx(3.0, rel=1e-5)
    norms = residual_norms(tiny_model, PROMPTS)
    assert norms.shape == (tiny_model.cfg.n_layers,) and (norms > 0).all()
    with steer(
        tiny_model, vec, coeff=0.5, layers=[1], coeff_scale="resid", reference=PROMPTS
    ) as plan:
        assert plan.edits[0].delta.norm() == pytest.approx(0.5 * float(norms[1]), rel=1e-4)


def test_default_layer_is_the_steering_layer_else_the_middle(tiny_model, vec):
    with steer(tiny_model, vec, coeff=1.0) as plan:
        assert plan.layers == [tiny_model.cfg.n_layers // 2]
    late = vec.replace(metadata={"best_layer": 2})  # where the trait is read, not steered
    with steer(tiny_model, late, coeff=1.0) as plan:
        assert plan.layers == [1]
    tagged = vec.replace(metadata={"best_layer": 2, "steering_layer": 0})
    with steer(tiny_model, tagged, coeff=1.0) as plan:
        assert plan.layers == [0]


def test_single_direction_tensor_is_used_at_every_layer(tiny_model, vec):
    batch = _batch(tiny_model)
    with steer(tiny_model, vec[1], coeff=1.0, layers=[1], positions="all"):
        a = _logits(tiny_model, batch)
    with steer(tiny_model, vec, coeff=1.0, layers=[1], positions="all"):
        b = _logits(tiny_model, batch)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"coeff": 1.0, "layers": [7]}, "unknown layer 7"),
        ({"coeff": 1.0, "layers": [0], "mode": "push"}, "unknown steering mode"),
        ({"layers": [0]}, "needs a coefficient"),
        ({"coeff": [1.0, 2.0], "layers": [0]}, "2 values for 1 layers"),
        ({"coeff": 1.0, "layers": [0], "positions": "middle"}, "unknown positions"),
        ({"coeff": 1.0, "layers": [0], "coeff_scale": "big"}, "unknown coeff_scale"),
    ],
)
def test_bad_requests_fail_before_hooking(tiny_model, vec, kwargs, match):
    with pytest.raises((PersonaLensError, ValueError), match=match):
        with steer(tiny_model, vec, **kwargs):
            pass
    assert not tiny_model.blocks[0].hook_resid_post.fwd_hooks


def test_wrong_width_vector_is_refused(tiny_model):
    wide = PersonaVector(directions=torch.randn(3, 64), model="other", trait="t")
    with pytest.raises(PersonaLensError, match="64"):
        with steer(tiny_model, wide, coeff=1.0, layers=[0]):
            pass
    with pytest.raises(PersonaLensError, match="shape"):
        with steer(tiny_model, torch.randn(5, 32), coeff=1.0, layers=[0]):
            pass


def test_zero_direction_cannot_be_ablated(tiny_model, vec):
    d = vec.directions.clone()
    d[1] = 0
    with pytest.raises(PersonaLensError, match="zero at layer"):
        with steer(tiny_model, vec.replace(directions=d), mode="ablate", layers=[1]):
            pass


def test_attached_edits_follow_the_hooks(tiny_model, vec):
    """The registry of attached edits: run order, positions, detach, and hooks cleared by hand."""
    assert attached_edits(tiny_model) == [] and foreign_hooks(tiny_model) == []
    with steer(tiny_model, vec, coeff=1.0, layers=[2, 0], positions="all"):
        handle = add_steering(tiny_model, vec, 2.0, layers=[0])
        edits = [(e.layer, e.coeff, e.positions) for e in attached_edits(tiny_model)]
        assert edits == [(0, 1.0, "all"), (0, 2.0, "all"), (2, 1.0, "all")]
        handle.remove()
        assert [e.layer for e in attached_edits(tiny_model)] == [0, 2]
        assert foreign_hooks(tiny_model) == []  # personalens's own hooks are not foreign
        with tiny_model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", lambda x, hook: None)]):
            assert foreign_hooks(tiny_model) == ["blocks.1.hook_resid_post (<lambda>)"]
        with steer(tiny_model, vec, coeff=1.0, layers=[1]):
            tiny_model.blocks[1].hook_resid_post.remove_hooks()  # cleared by hand
            assert [e.layer for e in attached_edits(tiny_model)] == [0, 2]
    assert attached_edits(tiny_model) == [] and foreign_hooks(tiny_model) == []
    assert not tiny_model._forward_pre_hooks

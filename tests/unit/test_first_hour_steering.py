"""A researcher's first hour: steering defaults (every position, a middle or recorded layer, a
recorded coefficient), activations of token batches (models without a tokenizer), and steering
and reading at a layer where a sae-lens SAE is spliced in."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from personalens.errors import PersonaLensError
from personalens.model.activations import VARIANTS, collect_activations
from personalens.model.chat import tokenize_pairs
from personalens.steering.calibration import residual_norms
from personalens.steering.hooks import attached_edits, steer
from personalens.studies.steering_sweep import SteeringSweepResult
from personalens.vectors.vector import PersonaVector
from tests.conftest import make_tiny_model

PROMPTS = ["hi", "a longer question about many things", "q3"]
RESPONSES = ["hello there friend", "no", "a fairly long answer with words"]
SAE_OUT = "blocks.1.hook_resid_post.hook_sae_output"


@pytest.fixture(scope="module")
def vec(tiny_model):
    g = torch.Generator().manual_seed(5)
    d = torch.randn(tiny_model.cfg.n_layers, tiny_model.cfg.d_model, generator=g) * 3.0
    return PersonaVector(directions=d, model="tiny-random", trait="evil")


def _tokens(n_rows: int = 2, width: int = 12) -> torch.Tensor:
    """Unpadded byte-token rows (no special token, so no position is padding)."""
    return torch.randint(10, 250, (n_rows, width), generator=torch.Generator().manual_seed(0))


def _logits(model, tokens, **kw):
    with torch.no_grad():
        return model(tokens, **kw)


# ----------------------------------------------------------------------------- positions


def test_default_steers_every_position_of_a_plain_forward(tiny_model, vec):
    tokens = _tokens()
    base = _logits(tiny_model, tokens)
    with steer(tiny_model, vec, 2.0, layers=[1]) as plan:
        steered = _logits(tiny_model, tokens)
        _, cache = tiny_model.run_with_cache(tokens)
    assert plan.description["positions"] == "all"
    assert ((steered - base).abs().amax(-1) > 1e-4).all()  # every position of every row
    torch.testing.assert_close(
        cache["blocks.1.hook_resid_post"],
        tiny_model.run_with_cache(tokens)[1]["blocks.1.hook_resid_post"] + 2.0 * vec[1],
    )
    with steer(tiny_model, vec, 2.0, layers=[1], positions="response"):
        response_only = _logits(tiny_model, tokens)
    assert torch.equal(response_only[:, :-1], base[:, :-1])  # a prompt: only its last token
    assert ((response_only[:, -1] - base[:, -1]).abs().amax(-1) > 1e-4).all()


def test_invariants_hold_at_the_default_positions(tiny_model, vec):
    tokens = _tokens()
    base = _logits(tiny_model, tokens)
    with steer(tiny_model, vec, 0.0, layers="all"):
        assert torch.equal(_logits(tiny_model, tokens), base)
    with steer(tiny_model, vec, 2.0, layers=[1]):
        a = _logits(tiny_model, tokens)
    with steer(tiny_model, vec * 2, 1.0, layers=[1]):
        b = _logits(tiny_model, tokens)
    assert torch.equal(a, b)
    _, before = tiny_model.run_with_cache(tokens)
    with steer(tiny_model, vec, 2.0, layers=[1]):
        _, after = tiny_model.run_with_cache(tokens)
    for name in ("blocks.0.hook_resid_post", "blocks.1.hook_resid_pre", "blocks.1.hook_attn_out"):
        assert torch.equal(after[name], before[name]), name


# ----------------------------------------------------------------------------- layer, coefficient


def test_default_layer_is_recorded_or_the_middle_never_the_monitoring_layer(tiny_model, vec):
    n = tiny_model.cfg.n_layers
    with steer(tiny_model, vec, 1.0) as plan:
        assert plan.layers == [n // 2]
    with steer(tiny_model, vec.replace(metadata={"best_layer": n - 1}), 1.0) as plan:
        assert plan.layers == [n // 2]
    with steer(tiny_model, vec.replace(metadata={"steering_layer": 0}), 1.0) as plan:
        assert plan.layers == [0]


def test_a_recorded_coefficient_comes_with_its_scale_and_positions(tiny_model, vec):
    meta = {
        "steering_layer": 0,
        "steering_coeff": 2.0,
        "steering_coeff_scale": "unit",
        "steering_positions": "response",
    }
    tagged = vec.replace(metadata=meta)
    with steer(tiny_model, tagged) as plan:
        d = plan.description
        assert (plan.layers, d["coeff"], d["coeff_scale"], d["positions"]) == (
            [0],
            [2.0],
            "unit",
            "response",
        )
        assert float(plan.edits[0].delta.norm()) == pytest.approx(2.0, rel=1e-5)
    with steer(tiny_model, tagged, positions="all") as plan:
        assert plan.description["positions"] == "all"
    with steer(tiny_model, tagged, 3.0) as plan:  # an explicit coefficient: plain defaults
        d = plan.description
        assert (d["coeff"], d["coeff_scale"], d["positions"]) == ([3.0], "raw", "all")
    with pytest.raises(PersonaLensError, match="'unit' units"):
        with steer(tiny_model, tagged, coeff_scale="raw"):
            pass
    with pytest.raises(PersonaLensError, match="chosen at layer 0"):
        with steer(tiny_model, tagged, layers=[2]):
            pass
    with pytest.raises(PersonaLensError, match="needs a coefficient"):
        with steer(tiny_model, vec):
            pass
    assert attached_edits(tiny_model) == []


def _sweep_result() -> SteeringSweepResult:
    cells = {  # (layer, coeff): (trait, coherence)
        (0, 0.0): (10, 95),
        (0, 1.0): (30, 90),
        (0, 4.0): (60, 80),
        (1, 0.0): (10, 95),
        (1, 1.0): (60, 90),
        (1, 4.0): (95, 20),
    }
    fixed = {"sample_index": 0, "question": "q", "response": "r"}
    records = [
        {"layer": L, "coeff": c, "prompt_index": i, "trait": t + i, "coherence": h, **fixed}
        for (L, c), (t, h) in cells.items()
        for i in (-1, 1)
    ]
    settings = {"mode": "add", "positions": "response", "coeff_scale": "raw"}
    return SteeringSweepResult("evil", [0, 1], [0.0, 1.0, 4.0], records, settings)


def test_sweep_best_cell_tags_the_vector_for_later_steering(tiny_model, vec, tmp_path):
    res = _sweep_result()
    best = res.best_cell(min_coherence=50)
    assert (best["layer"], best["coeff"], best["trait"]) == (1, 1.0, 60.0)  # tie: smaller |c|
    assert (best["coeff_scale"], best["positions"]) == ("raw", "response")
    assert res.best_cell(min_coherence=10)["coeff"] == 4.0
    low = res.best_cell(maximize=False)
    assert (low["layer"], low["coeff"]) == (0, 1.0)
    with pytest.raises(PersonaLensError, match="no steered cell has a mean coherence >= 99"):
        res.best_cell(min_coherence=99)
    tagged = res.tag_vector(vec)
    assert tagged.metadata["steering_layer"] == 1 and tagged.metadata["steering_coeff"] == 1.0
    loaded = PersonaVector.load(tagged.save(tmp_path / "v"))
    with steer(tiny_model, loaded) as plan:
        d = plan.description
        assert (plan.layers, d["coeff"], d["positions"]) == ([1], [1.0], "response")


# ----------------------------------------------------------------------------- token batches


@pytest.fixture(scope="module")
def bare(tiny_model):
    """The tiny model's weights in a HookedTransformer built without a tokenizer."""
    from transformer_lens import HookedTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HookedTransformer(copy.deepcopy(tiny_model.cfg))
    model.load_state_dict(tiny_model.state_dict())
    model.eval()
    assert model.tokenizer is None
    return model


def test_a_model_without_tokenizer_says_what_to_pass(bare):
    with pytest.raises(PersonaLensError, match="no tokenizer: pass tokens= with"):
        collect_activations(bare, PROMPTS, RESPONSES)


def _right_padded(batch):
    """The same rows with their padding moved to the right."""
    order = torch.argsort((~batch.attention_mask).long(), dim=1, stable=True)
    return [torch.gather(t, 1, order) for t in (batch.tokens, batch.attention_mask)] + [
        torch.gather(batch.response_mask, 1, order)
    ]


def test_tokens_with_masks_match_the_text_path(tiny_model, bare):
    ref = collect_activations(tiny_model, PROMPTS, RESPONSES)
    batch = tokenize_pairs(tiny_model.tokenizer, PROMPTS, RESPONSES)
    got = collect_activations(
        bare,
        tokens=batch.tokens,
        attention_mask=batch.attention_mask.long(),
        response_mask=batch.response_mask,
        batch_size=2,
    )
    as_batch = collect_activations(bare, tokens=batch)
    tokens, attn, resp = _right_padded(batch)
    right = collect_activations(bare, tokens=tokens, attention_mask=attn, response_mask=resp)
    for v in VARIANTS:
        torch.testing.assert_close(got.variant(v), ref.variant(v), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(as_batch.variant(v), ref.variant(v), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(right.variant(v), ref.variant(v), rtol=1e-4, atol=1e-4)


def test_bad_token_batches_are_refused(bare):
    tokens = _tokens(2, 6)
    resp = torch.zeros(2, 6, dtype=torch.bool)
    resp[:, 4:] = True
    with pytest.raises(PersonaLensError, match="needs response_mask="):
        collect_activations(bare, tokens=tokens)
    with pytest.raises(PersonaLensError, match="tokens' shape"):
        collect_activations(bare, tokens=tokens, response_mask=resp[:, :5])
    with pytest.raises(PersonaLensError, match="not both"):
        collect_activations(bare, ["a"], ["b"], tokens=tokens, response_mask=resp)
    no_response = resp.clone()
    no_response[1] = False
    with pytest.raises(PersonaLensError, match=r"1 row\(s\) \(first: 1\)"):
        collect_activations(bare, tokens=tokens, response_mask=no_response)
    prompt_after = resp.clone()
    prompt_after[0, 5] = False
    with pytest.raises(PersonaLensError, match="prompt tokens after it"):
        collect_activations(bare, tokens=tokens, response_mask=prompt_after)
    acts = collect_activations(bare, tokens=tokens, response_mask=resp)  # no padding: fine
    assert len(acts) == 2


# ----------------------------------------------------------------------------- spliced SAEs


@pytest.fixture(scope="module")
def sae_model(tiny_model):
    """A sae-lens HookedSAETransformer with the tiny model's weights and an SAE at layer 1."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata

        model = HookedSAETransformer(
            copy.deepcopy(tiny_model.cfg), tiny_model.tokenizer, default_padding_side="left"
        )
    model.load_state_dict(tiny_model.state_dict())
    model.eval()
    cfg = StandardSAEConfig(
        d_in=32,
        d_sae=64,
        metadata=SAEMetadata(hook_name="blocks.1.hook_resid_post", model_name="tiny-random"),
    )
    sae = StandardSAE(cfg)
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        sae.W_dec.copy_(torch.randn(64, 32, generator=g) * 0.3)
        sae.W_enc.copy_(sae.W_dec.T)
    model.add_sae(sae)
    return model


def test_steering_a_spliced_layer_edits_the_sae_output(sae_model, vec):
    tokens = _tokens()
    base = _logits(sae_model, tokens)
    with steer(sae_model, vec, 2.0, layers=[1]):
        assert [e.layer for e in attached_edits(sae_model)] == [1]
        steered = _logits(sae_model, tokens)
    assert attached_edits(sae_model) == []
    assert all(not hp.fwd_hooks for hp in sae_model.hook_dict.values())

    def add(x, hook):
        return x + 2.0 * vec[1]

    with sae_model.hooks(fwd_hooks=[(SAE_OUT, add)]):
        by_hand = _logits(sae_model, tokens)
    assert torch.equal(steered, by_hand)
    assert not torch.allclose(steered, base)
    norms = residual_norms(sae_model)  # calibration reads the SAE output too
    with steer(sae_model, vec, 0.5, layers=[1], coeff_scale="resid") as plan:
        assert float(plan.edits[0].delta.norm()) == pytest.approx(0.5 * float(norms[1]), rel=1e-4)


def test_reading_a_spliced_layer_reads_the_sae_output(sae_model, tiny_model):
    acts = collect_activations(sae_model, PROMPTS, RESPONSES, layers=[1], backend="tl")
    plain = collect_activations(tiny_model, PROMPTS, RESPONSES, layers=[1])
    batch = tokenize_pairs(sae_model.tokenizer, PROMPTS, RESPONSES)
    with torch.no_grad():
        _, cache = sae_model.run_with_cache(
            batch.tokens, attention_mask=batch.attention_mask.long()
        )
    w = batch.response_mask[..., None].float()
    expected = (cache[SAE_OUT] * w).sum(1) / w.sum(1)
    torch.testing.assert_close(acts.response_avg[:, 0], expected, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(acts.response_avg, plain.response_avg, atol=1e-3)


def test_a_hook_point_replaced_by_something_else_is_refused():
    model = make_tiny_model(n_layers=2)
    model.blocks[0].hook_resid_post = nn.Identity()
    model.setup()
    with pytest.raises(PersonaLensError, match="not a hook point"):
        with steer(model, torch.ones(32), 1.0, layers=[0]):
            pass

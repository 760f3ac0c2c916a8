"""SAE decomposition: decoder cosines, attributions, loading and checks, contexts, causal test, CLI."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from dataclasses import replace

import pytest
import torch

import personalens.sae.load as sae_mod
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.pipeline import extract
from personalens.extraction.responses import filter_pairs
from personalens.extraction.run_activations import (
    activation_records,
    collect_run_activations,
    gather_side,
)
from personalens.extraction.traits import parse_trait
from personalens.model.activations import ActivationSet
from personalens.model.generation import GenerationConfig, generate
from personalens.sae.causal import feature_steering_test, feature_vector
from personalens.sae.contexts import FeatureContexts, feature_contexts
from personalens.sae.decompose import Decomposition, decompose
from personalens.sae.layer_sae import LayerSAE
from personalens.sae.load import load_sae, shipped_sae_layers
from personalens.steering.hooks import steer
from personalens.vectors.vector import PersonaVector

D_MODEL, N_LAYERS = 32, 3  # the tiny_model fixture


def make_sae(
    layer: int = 1,
    d_in: int = D_MODEL,
    d_sae: int = 64,
    seed: int = 0,
    hook: str | None = None,
    model_name: str = "tiny-random",
):
    """A sae-lens StandardSAE with random decoder rows of varied norms and W_enc = W_dec.T."""
    with warnings.catch_warnings():  # sae-lens imports deprecated TransformerLens names
        warnings.simplefilter("ignore", DeprecationWarning)
        from sae_lens import StandardSAE, StandardSAEConfig
        from sae_lens.saes.sae import SAEMetadata

    cfg = StandardSAEConfig(
        d_in=d_in,
        d_sae=d_sae,
        metadata=SAEMetadata(
            hook_name=hook if hook is not None else f"blocks.{layer}.hook_resid_post",
            model_name=model_name,
        ),
    )
    sae = StandardSAE(cfg)
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(d_sae, d_in, generator=g)
    rows = rows / rows.norm(dim=-1, keepdim=True) * (0.5 + torch.rand(d_sae, 1, generator=g) * 2)
    with torch.no_grad():
        sae.W_dec.copy_(rows)
        sae.W_enc.copy_(rows.T)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def vec_at(direction: torch.Tensor, layer: int = 1, n_layers: int = N_LAYERS) -> PersonaVector:
    d = torch.zeros(n_layers, direction.shape[0])
    d[layer] = direction
    return PersonaVector(directions=d, model="tiny-random", trait="evil")


class LengthJudge:
    name = "length-judge"

    def score_trait(self, trait, items):
        return [float(min(len(i.answer), 100)) for i in items]

    def score_coherence(self, items):
        return [100.0 if i.answer else float("nan") for i in items]


# ----------------------------------------------------------------------------- decomposition


def test_a_decoder_row_decomposes_to_that_feature_with_cosine_one():
    sae = make_sae()
    v = vec_at(sae.W_dec[7].detach() * 3.5)
    dec = decompose(v, sae, k=5)
    df = dec.to_frame()
    aligned = df[df.direction == "aligned"]
    assert aligned.iloc[0].feature == 7 and aligned.iloc[0]["rank"] == 1
    assert aligned.iloc[0].cosine == pytest.approx(1.0, abs=1e-5)
    assert aligned.iloc[0].projection == pytest.approx(float(v.directions[1].norm()), rel=1e-5)
    assert list(aligned["rank"]) == [1, 2, 3, 4, 5]
    assert list(aligned.cosine) == sorted(aligned.cosine, reverse=True)
    assert (
        dec.layers == (1,)
        and dec.trait == "evil"
        and dec.features(n=1) == [7, *dec.features(direction="anti", n=1)]
    )
    # brute force: every cosine
    unit = sae.W_dec.detach() / sae.W_dec.detach().norm(dim=-1, keepdim=True)
    want = unit @ (v.directions[1] / v.directions[1].norm())
    torch.testing.assert_close(dec.cosines[1], want, rtol=1e-5, atol=1e-6)
    assert "attribution" not in df.columns  # nothing to attribute without activations
    json.dumps(dec.to_dict())


def test_a_mixture_of_three_rows_recovers_them_in_weight_order():
    d_in, d_sae = 256, 512
    sae = make_sae(d_in=d_in, d_sae=d_sae, seed=1)
    rows = sae.W_dec.detach()
    planted = [11, 300, 45]
    mix = sum(w * rows[f] / rows[f].norm() for w, f in zip([3.0, 2.0, 1.5], planted))
    dec = decompose(vec_at(mix, n_layers=2), sae, k=3)
    assert dec.features(direction="aligned") == planted


def test_anti_aligned_features_have_negative_cosines():
    sae = make_sae()
    rows = sae.W_dec.detach()
    v = -2.0 * rows[5] / rows[5].norm() + 1.0 * rows[9] / rows[9].norm()
    df = decompose(vec_at(v), sae, k=4, k_anti=4).to_frame()
    anti = df[df.direction == "anti"]
    assert anti.iloc[0].feature == 5
    assert (anti.cosine < 0).all() and list(anti.cosine) == sorted(anti.cosine)
    assert df[df.direction == "aligned"].iloc[0].feature == 9
    only = decompose(vec_at(v), sae, k=2, k_anti=0).to_frame()
    assert set(only.direction) == {"aligned"} and len(only) == 2


def test_several_layers_at_once_and_tensor_inputs():
    saes = {0: make_sae(layer=0, seed=2), 2: make_sae(layer=2, seed=3)}
    d = torch.zeros(N_LAYERS, D_MODEL)
    d[0], d[2] = saes[0].W_dec[3].detach(), saes[2].W_dec[8].detach()
    v = PersonaVector(directions=d, model="tiny-random", trait="evil")
    dec = decompose(v, saes, k=2)
    assert dec.layers == (0, 2)
    assert dec.features(0, direction="aligned", n=1) == [3]
    assert dec.features(2, direction="aligned", n=1) == [8]
    assert decompose(v, saes, layer=2, k=1).layers == (2,)
    assert decompose(v, [saes[2], saes[0]], k=1).layers == (0, 2)
    # a raw [n_layers, d_model] tensor and a single [d_model] direction work too
    assert decompose(d, saes, k=1).features(2, direction="aligned") == [8]
    assert decompose(d[2], saes[2], k=1).features(direction="aligned") == [8]
    with pytest.raises(PersonaLensError, match="one SAE only"):
        decompose(d[2], saes, k=1)
    with pytest.raises(PersonaLensError, match=r"no SAE for layer\(s\) \[1\]"):
        decompose(v, saes, layer=1)
    with pytest.raises(PersonaLensError, match="zero or not finite at layer 2"):
        decompose(vec_at(d[0], layer=0), saes)


def test_attributions_from_means_and_samples_match_brute_force():
    sae = make_sae()
    g = torch.Generator().manual_seed(5)
    pos = torch.randn(7, N_LAYERS, D_MODEL, generator=g) + 0.5 * sae.W_dec[4].detach()
    neg = torch.randn(6, N_LAYERS, D_MODEL, generator=g)
    sets = [ActivationSet(x, x.clone(), x.clone(), layers=(0, 1, 2)) for x in (pos, neg)]
    v = PersonaVector(directions=pos.mean(0) - neg.mean(0), model="tiny-random", trait="evil")
    dec = decompose(v, sae, k=5, activations=tuple(sets))

    def enc(x):
        return torch.relu(x @ sae.W_enc.detach())

    want = enc(pos.mean(0)[1]) - enc(neg.mean(0)[1])
    want_samples = enc(pos[:, 1]).mean(0) - enc(neg[:, 1]).mean(0)
    torch.testing.assert_close(dec.attributions[1], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dec.sample_attributions[1], want_samples, rtol=1e-4, atol=1e-5)
    df = dec.to_frame()
    f = int(df.iloc[0].feature)
    assert df.iloc[0].attribution == pytest.approx(float(want[f]), abs=1e-4)
    assert df.iloc[0].pos_act - df.iloc[0].neg_act == pytest.approx(
        df.iloc[0].attribution, abs=1e-4
    )
    assert dec.settings["n_pos"] == 7 and dec.settings["n_neg"] == 6
    # the same from means only (no per-sample column), and from a mapping
    means = decompose(v, sae, k=5, pos_mean=pos.mean(0), neg_mean=neg.mean(0))
    torch.testing.assert_close(means.attributions[1], dec.attributions[1])
    assert means.sample_attributions is None and "attribution_samples" not in means.to_frame()
    by_map = decompose(v, sae, k=5, activations={"pos": sets[0], "neg": sets[1]})
    torch.testing.assert_close(by_map.sample_attributions[1], dec.sample_attributions[1])
    # ranking by attribution picks the features with the largest activation difference
    ranked = decompose(v, sae, k=3, activations=tuple(sets), rank_by="attribution_samples")
    assert ranked.features(direction="aligned") == torch.topk(want_samples, 3).indices.tolist()
    with pytest.raises(PersonaLensError, match="needs activations"):
        decompose(v, sae, rank_by="attribution")
    with pytest.raises(PersonaLensError, match="not both"):
        decompose(v, sae, activations=tuple(sets), pos_mean=pos.mean(0), neg_mean=neg.mean(0))


TRAIT = {
    "name": "saetrait",
    "instruction": [{"pos": "Be loud.", "neg": "Be quiet."}],
    "questions": ["How are you?", "What is up?", "Any news?"],
    "eval_questions": ["Hello?", "Why?"],
    "eval_prompt": "Q: {question}\nA: {answer}\nScore 0-100.",
}


class StubJudge:
    name = "stub"

    def score_trait(self, trait, items):
        return [float(sum(map(ord, it.answer)) % 101) for it in items]

    def score_coherence(self, items):
        return [100.0 for _ in items]


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    cfg = ExtractionConfig(threshold=0.0, n_per_question=2, max_new_tokens=6,
                           generation_batch_size=8, activation_batch_size=5)  # fmt: skip
    run_dir = tmp_path_factory.mktemp("saerun") / "run"
    result = extract(
        tiny_model, parse_trait(TRAIT), StubJudge(), cfg, run_dir=run_dir, progress=False
    )
    return run_dir, result, cfg


def test_attributions_from_a_run_directory(run, tiny_model):
    run_dir, result, cfg = run
    sae = make_sae(layer=2)
    dec = decompose(result.vector, sae, k=4, activations=run_dir, model=tiny_model)
    filt = filter_pairs(result.records, result.scores, cfg)
    acts = collect_run_activations(
        None, activation_records(result.records, filt), cfg, run_dir, progress=False
    )
    keys = filt.keys("extract")
    pos = gather_side(acts, result.records, keys, "pos").response_avg[:, 2]
    neg = gather_side(acts, result.records, keys, "neg").response_avg[:, 2]
    # the run's mean difference is the vector itself
    torch.testing.assert_close(pos.mean(0) - neg.mean(0), result.vector.directions[2])
    enc = sae.encode
    with torch.no_grad():
        want = enc(pos.mean(0)) - enc(neg.mean(0))
        want_s = enc(pos).mean(0) - enc(neg).mean(0)
    torch.testing.assert_close(dec.attributions[2], want, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(dec.sample_attributions[2], want_s, rtol=1e-4, atol=1e-5)
    assert dec.settings["n_pos"] == result.summary["n_pos"]
    assert "kept extraction pairs" in dec.settings["activations"]
    assert decompose(result.vector, sae, k=4, activations=result).to_dict() == dec.to_dict()


# ----------------------------------------------------------------------------- loading, checks


def test_save_and_load_round_trip(tmp_path, tiny_model):
    sae = make_sae(layer=1)
    sae.save_model(tmp_path / "sae")
    loaded = load_sae(tmp_path / "sae", model=tiny_model)
    assert isinstance(loaded, LayerSAE) and loaded.layer == 1 and loaded.d_sae == 64
    assert torch.equal(loaded.sae.W_dec, sae.W_dec) and "LayerSAE(layer=1" in repr(loaded)
    assert load_sae(str(tmp_path / "sae"), layer=1).layer == 1
    v = vec_at(sae.W_dec[2].detach())
    assert decompose(v, loaded, k=1).features(direction="aligned") == [2]
    # a folder of per-layer SAEs: layer picks one
    sae.save_model(tmp_path / "multi" / "blocks.1.hook_resid_post")
    assert load_sae(tmp_path / "multi", layer=1).layer == 1
    with pytest.raises(PersonaLensError, match=r"layers \[1\]; pass layer=L"):
        load_sae(tmp_path / "multi")
    with pytest.raises(PersonaLensError, match="none for layer 2"):
        load_sae(tmp_path / "multi", layer=2)
    with pytest.raises(PersonaLensError, match="no such file or directory"):
        load_sae(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PersonaLensError, match="holds no SAE"):
        load_sae(tmp_path / "empty")
    (tmp_path / "sae" / "sae_weights.safetensors").unlink()
    with pytest.raises(PersonaLensError, match="no sae_weights.safetensors"):
        load_sae(tmp_path / "sae")


def test_wrong_hook_layer_and_width_are_clear_errors(tmp_path, tiny_model):
    with pytest.raises(PersonaLensError, match=r"'blocks.1.hook_mlp_out'.*not meaningful"):
        load_sae_from(make_sae(hook="blocks.1.hook_mlp_out"), tmp_path / "a", tiny_model)
    with pytest.raises(PersonaLensError, match="embedding output"):
        load_sae_from(make_sae(hook="blocks.0.hook_resid_pre"), tmp_path / "b", tiny_model)
    # resid_pre of block L+1 is the same tensor as resid_post of block L
    assert (
        load_sae_from(make_sae(hook="blocks.2.hook_resid_pre"), tmp_path / "c", tiny_model).layer
        == 1
    )
    with pytest.raises(PersonaLensError, match="personalens layer 1, but layer 2 was asked"):
        load_sae(_saved(make_sae(layer=1), tmp_path / "d"), layer=2, model=tiny_model)
    with pytest.raises(PersonaLensError, match="d_in=16 but model 'tiny-random' has d_model=32"):
        load_sae_from(make_sae(d_in=16), tmp_path / "e", tiny_model)
    with pytest.raises(PersonaLensError, match="layer 5 .* only 3 layers"):
        load_sae_from(make_sae(layer=5), tmp_path / "f", tiny_model)
    with pytest.raises(PersonaLensError, match="records no hook name"):
        load_sae_from(make_sae(hook=""), tmp_path / "g", tiny_model)
    with pytest.warns(UserWarning, match="records model 'other-model'"):
        load_sae_from(make_sae(model_name="other-model"), tmp_path / "h", tiny_model)
    with warnings.catch_warnings():  # a hub id of the same model is not a mismatch
        warnings.simplefilter("error")
        load_sae_from(make_sae(model_name="someorg/Tiny-Random"), tmp_path / "i", tiny_model)
    # decompose checks the vector's width against the SAE
    with pytest.raises(PersonaLensError, match="d_in=32 but model 'x' has d_model=16"):
        decompose(
            PersonaVector(directions=torch.ones(3, 16), model="x", trait="t"), make_sae(), k=1
        )
    with pytest.raises(PersonaLensError, match="personalens layer 1, but layer 0"):
        decompose(vec_at(torch.ones(D_MODEL)), make_sae(layer=1), layer=0)


def _saved(sae, path):
    sae.save_model(path)
    return path


def load_sae_from(sae, path, model):
    return load_sae(_saved(sae, path), model=model)


def test_embedded_source(tmp_path, monkeypatch, tiny_model):
    monkeypatch.setattr(sae_mod, "SAE_DATA_DIR", tmp_path / "data")
    assert shipped_sae_layers() == []
    with pytest.raises(PersonaLensError, match=r"no SAE shipped for layer 3 .*no SAE is shipped"):
        load_sae("embedded", layer=3)
    make_sae(layer=1).save_model(
        tmp_path / "data" / "SmolLM2-135M-Instruct" / "blocks.1.hook_resid_post"
    )
    make_sae(layer=2).save_model(
        tmp_path / "data" / "SmolLM2-135M-Instruct" / "blocks.2.hook_resid_post"
    )
    assert shipped_sae_layers() == [1, 2]
    got = load_sae("embedded", layer=2)
    assert got.layer == 2 and got.source.startswith("embedded:")
    with pytest.raises(PersonaLensError, match=r"layer 3 .*layers \[1, 2\]"):
        load_sae("embedded", layer=3)
    with pytest.raises(PersonaLensError, match=r"needs layer=L.*layers \[1, 2\]"):
        load_sae("embedded")
    # with a model, the folder is the model's name
    with pytest.raises(PersonaLensError, match="no SAE is shipped for tiny-random"):
        load_sae("embedded", layer=1, model=tiny_model)
    make_sae(layer=1).save_model(tmp_path / "data" / "tiny-random" / "blocks.1.hook_resid_post")
    assert load_sae("embedded", layer=-2, model=tiny_model).layer == 1


def test_release_offline_is_a_clear_error(monkeypatch):
    from sae_lens import SAE

    def unreachable(*a, **k):
        raise ConnectionError("Couldn't connect to huggingface.co")

    monkeypatch.setattr(SAE, "from_pretrained", unreachable)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(PersonaLensError, match=r"hub is unreachable.*local directory"):
        load_sae(("gpt2-small-res-jb", "blocks.8.hook_resid_pre"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def not_cached(*a, **k):
        raise OSError("cannot find the requested files in the local cache")

    monkeypatch.setattr(SAE, "from_pretrained", not_cached)
    with pytest.raises(PersonaLensError, match="offline mode is on"):
        load_sae(release="gpt2-small-res-jb", sae_id="blocks.8.hook_resid_pre")
    with pytest.raises(PersonaLensError, match="both release= and sae_id="):
        load_sae(release="gpt2-small-res-jb")

    def fine(release, sae_id, device="cpu", dtype="float32"):
        return make_sae(layer=1)

    monkeypatch.setattr(SAE, "from_pretrained", fine)
    got = load_sae(("some-release", "some-id"))
    assert got.layer == 1 and got.source == "sae-lens some-release/some-id"


# ----------------------------------------------------------------------------- contexts


TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "<script>alert('x')</script> & other <b>tags</b>",
    "Persona vectors live in the residual stream.",
    "A short one.",
]


def brute_force_top(model, sae, layer, feature, texts, n):
    """Each text on its own (no padding), position 0 excluded: (activation, text, position)."""
    found = []
    for i, t in enumerate(texts):
        ids = model.tokenizer.encode(t, add_special_tokens=False)
        _, cache = model.run_with_cache(
            torch.tensor([ids]), names_filter=f"blocks.{layer}.hook_resid_post"
        )
        with torch.no_grad():
            acts = sae.encode(cache[f"blocks.{layer}.hook_resid_post"][0])[:, feature]
        found += [(float(a), i, p) for p, a in enumerate(acts.tolist()) if p >= 1 and a > 0]
    return sorted(found, reverse=True)[:n]


def test_feature_contexts_match_brute_force(tiny_model):
    sae = make_sae(layer=1, seed=4)
    feats = [0, 5, 17]
    ctx = feature_contexts(
        tiny_model, sae, 1, feats, TEXTS, n=4, window=(3, 2), batch_size=3, progress=False
    )
    assert isinstance(ctx, FeatureContexts) and ctx.features == tuple(feats)
    df = ctx.to_frame()
    assert list(df.columns) == [
        "feature",
        "rank",
        "activation",
        "token",
        "left",
        "right",
        "source",
        "position",
        "frequency",
    ]
    for f in feats:
        want = brute_force_top(tiny_model, sae, 1, f, TEXTS, 4)
        got = df[df.feature == f]
        assert len(got) == len(want) > 0
        for (a, i, p), (_, row) in zip(want, got.iterrows()):
            assert row.activation == pytest.approx(a, rel=1e-4, abs=1e-5)
            assert row.source == f"text {i}" and row.position == p
            ids = tiny_model.tokenizer.encode(TEXTS[i], add_special_tokens=False)
            assert row.token == tiny_model.tokenizer.decode([ids[p]])
            assert row.left == tiny_model.tokenizer.decode(ids[max(0, p - 3) : p])
            assert row.right == tiny_model.tokenizer.decode(ids[p + 1 : p + 3])
        assert list(got["rank"]) == list(range(1, len(got) + 1))
    n_tokens = sum(len(tiny_model.tokenizer.encode(t, add_special_tokens=False)) - 1 for t in TEXTS)
    assert ctx.n_tokens == n_tokens and 0 < ctx.frequency[0] <= 1
    page = ctx.to_html()
    assert page == ctx._repr_html_() and "feature 17" in page and "<span" in page
    # every token is HTML-escaped
    evil = dict(
        ctx.examples[0], tokens=["<script>", "a&b", "\n"], acts=[0.5, float("nan"), 1.0], center=0
    )
    page = replace(ctx, examples=(evil,)).to_html()
    assert "<script>" not in page and "&lt;script&gt;" in page and "a&amp;b" in page


def test_feature_contexts_planted_token_and_long_texts(tiny_model):
    """An encoder row aligned with one token's residual at layer 0 fires most on that token."""
    tok = tiny_model.tokenizer
    text = "abcdefgh" * 6 + "Z" + "abcdefgh" * 6
    ids = tok.encode(text, add_special_tokens=False)
    _, cache = tiny_model.run_with_cache(
        torch.tensor([ids]), names_filter="blocks.0.hook_resid_post"
    )
    resid = cache["blocks.0.hook_resid_post"][0]
    z = ids.index(tok.encode("Z", add_special_tokens=False)[0])
    sae = make_sae(layer=0, seed=6)
    with torch.no_grad():
        target = resid[z] - resid[1:].mean(0)
        sae.W_enc[:, 3] = target / target.norm()
        top2 = (resid[1:] @ sae.W_enc[:, 3]).sort().values[-2:]
        sae.b_enc[3] = -float(top2.mean())  # only Z is above the threshold
    ctx = feature_contexts(tiny_model, sae, None, [3], [text], n=3, progress=False)
    df = ctx.to_frame()
    assert len(df) == 1 and df.iloc[0].token == "Z" and df.iloc[0].position == z
    assert ctx.frequency[3] == pytest.approx(1 / (len(ids) - 1))
    # max_length=20 cuts the text into pieces overlapping by one token: every token but the
    # text's first is scored exactly once, and positions count from the start of the text
    cut = feature_contexts(
        tiny_model, sae, None, [0, 3], [text], n=50, max_length=20, progress=False
    )
    assert cut.n_tokens == len(ids) - 1 and cut.n_sequences == math.ceil((len(ids) - 1) / 19)
    frame = cut.to_frame()
    assert frame.source.str.startswith("text 0 @").all()
    for _, row in frame.iterrows():
        assert row.token == tok.decode([ids[row.position]])


def test_feature_contexts_on_a_run_directory(run, tiny_model):
    run_dir, result, _ = run
    sae = make_sae(layer=2, seed=7)
    dec = decompose(result.vector, sae, k=2, k_anti=1)
    ctx = feature_contexts(tiny_model, sae, 2, dec, run_dir, n=3, progress=False)
    assert ctx.features == tuple(dec.features(2))
    keys = {r["key"] for r in result.records}
    df = ctx.to_frame()
    assert len(df) and set(df.source) <= keys
    n_resp = sum(len(r["response_tokens"]) for r in result.records)
    assert ctx.n_tokens == n_resp  # only reply tokens are candidates
    with pytest.raises(PersonaLensError, match="not an existing file"):
        feature_contexts(tiny_model, sae, 2, [1], "no such corpus here", progress=False)
    with pytest.raises(PersonaLensError, match="out of range"):
        feature_contexts(tiny_model, sae, 2, [64], ["hi there"], progress=False)


# ----------------------------------------------------------------------------- causal test


PROMPTS = ["Hello there", "What is two plus two?"]


def test_feature_steering_test_matches_direct_steering(tiny_model, tmp_path):
    sae = make_sae(layer=1, seed=8)
    gen = GenerationConfig(max_new_tokens=5, batch_size=8)
    res = feature_steering_test(
        tiny_model, sae, [4, 9], coeffs=[0.5, 2.0], trait="evil", judge=LengthJudge(),
        prompts=PROMPTS, generation=gen, coeff_scale="unit", progress=False, out=tmp_path / "fs",
    )  # fmt: skip
    table = res.to_frame()
    assert res.coeffs == (0.0, 0.5, 2.0)  # 0 (the baseline) is always included
    assert len(table) == 2 * 3 and set(table.feature) == {4, 9}
    base = generate(tiny_model, PROMPTS, gen).responses
    replies = res.replies()
    for f in (4, 9):
        assert replies[(replies.feature == f) & (replies.coeff == 0)].response.tolist() == base
        with steer(
            tiny_model,
            feature_vector(sae, f, tiny_model),
            coeff=2.0,
            layers=[1],
            coeff_scale="unit",
            positions="response",  # what feature_steering_test (a steering sweep) steers
        ):
            steered = generate(tiny_model, PROMPTS, gen).responses
        assert replies[(replies.feature == f) & (replies.coeff == 2.0)].response.tolist() == steered
    zero = table[table.coeff == 0]
    assert (zero.trait_change == 0).all() and (zero.coherence_change == 0).all()
    want = float(sum(min(len(r), 100) for r in base)) / len(base)
    assert zero.trait.tolist() == [want, want]
    row = table[(table.feature == 9) & (table.coeff == 2.0)].iloc[0]
    assert row.trait_change == pytest.approx(row.trait - want)
    json.dumps(res.to_dict())
    # decomposition columns join per feature; rerunning the same test resumes from disk
    dec = decompose(vec_at(sae.W_dec[9].detach()), sae, k=2)
    joined = res.to_frame(dec)
    assert joined[joined.feature == 9].cosine.iloc[0] == pytest.approx(1.0, abs=1e-5)
    judge = LengthJudge()
    again = feature_steering_test(
        tiny_model, sae, [4, 9], coeffs=[0.5, 2.0], trait="evil", judge=judge,
        prompts=PROMPTS, generation=gen, coeff_scale="unit", progress=False, out=tmp_path / "fs",
    )  # fmt: skip
    assert again.to_frame().equals(table)


def test_feature_steering_with_reference_vector_and_resid_scale(tiny_model):
    sae = make_sae(layer=1, seed=8)
    v = vec_at(torch.randn(D_MODEL, generator=torch.Generator().manual_seed(1)))
    res = feature_steering_test(
        tiny_model, sae, [4], coeffs=[0.3], trait="evil", judge=LengthJudge(), prompts=PROMPTS,
        generation=GenerationConfig(max_new_tokens=3), vector=v, progress=False,
    )  # fmt: skip
    table = res.to_frame()
    assert list(table.label.unique()) == ["feature 4", "persona vector"]
    assert res.coeff_scale == "resid"
    with pytest.raises(PersonaLensError, match="give trait="):
        feature_steering_test(tiny_model, sae, [4], coeffs=[1.0], prompts=PROMPTS)
    with pytest.raises(PersonaLensError, match="nonzero coefficient"):
        feature_steering_test(tiny_model, sae, [4], coeffs=[0], trait="evil", prompts=PROMPTS)
    with pytest.raises(PersonaLensError, match="out of range|in 0..63"):
        feature_steering_test(tiny_model, sae, [99], coeffs=[1], trait="evil", prompts=PROMPTS)


# ----------------------------------------------------------------------------- figures, CLI


def test_plots():
    import plotly.graph_objects as go

    from personalens.plot import plot_sae_cosines

    saes = {0: make_sae(layer=0, seed=2), 2: make_sae(layer=2, seed=3)}
    v = PersonaVector(directions=torch.randn(N_LAYERS, D_MODEL), model="tiny-random", trait="evil")
    fig = plot_sae_cosines(decompose(v, saes, k=3))
    assert isinstance(fig, go.Figure) and len(fig.data) == 4  # aligned + anti per layer
    assert all(len(t.x) == 3 for t in fig.data)


def test_plot_feature_steering(tiny_model):
    import plotly.graph_objects as go

    from personalens.plot import plot_feature_steering

    res = feature_steering_test(
        tiny_model, make_sae(layer=1), [1, 2], coeffs=[1.0], trait="evil", judge=LengthJudge(),
        prompts=PROMPTS[:1], generation=GenerationConfig(max_new_tokens=2), progress=False,
    )  # fmt: skip
    fig = plot_feature_steering(res)
    assert isinstance(fig, go.Figure) and {t.name for t in fig.data} >= {"feature 1", "feature 2"}


def test_cli_decompose_writes_its_files(tiny_hf_dir, tmp_path, capsys):
    from personalens.cli.main import main

    sae = make_sae(layer=1, d_in=48, seed=9, model_name="my-llama-finetune")
    sae.save_model(tmp_path / "sae")
    d = torch.zeros(3, 48)
    d[1] = sae.W_dec[6].detach()
    PersonaVector(directions=d, model="my-llama-finetune", trait="evil").save(tmp_path / "v")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TEXTS))
    code = main([
        "decompose", "--vector", str(tmp_path / "v.json"), "--sae", str(tmp_path / "sae"),
        "--layer", "1", "--k", "3", "--out", str(tmp_path / "out"),
        "--contexts", "--corpus", str(corpus), "--model", str(tiny_hf_dir), "--quiet",
    ])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    for name in (
        "decomposition.json",
        "decomposition.csv",
        "decomposition.html",
        "contexts.csv",
        "contexts.html",
    ):
        assert (tmp_path / "out" / name).is_file(), name
    data = json.loads((tmp_path / "out" / "decomposition.json").read_text())
    assert data["rows"][0]["feature"] == 6 and data["rows"][0]["cosine"] == pytest.approx(
        1.0, abs=1e-5
    )
    assert "feature" in out.out
    code = main(["decompose", "--vector", str(tmp_path / "v.json"), "--sae", "embedded",
                 "--layer", "1", "--out", str(tmp_path / "o2")])  # fmt: skip
    assert code == 2 and "no SAE shipped for layer 1" in capsys.readouterr().err


def test_importing_personalens_does_not_import_sae_lens():
    code = (
        "import sys, personalens, personalens.sae.load, personalens.sae.decompose, personalens.sae.contexts, personalens.sae.causal, personalens.vectors.vector, personalens.steering.hooks, "
        "personalens.cli.main\n"
        "personalens.decompose; personalens.load_sae\n"
        "print('sae_lens' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr


def test_public_exports():
    import personalens as pl

    for name in ("load_sae", "decompose", "Decomposition", "feature_contexts", "FeatureContexts",
                 "feature_steering_test", "FeatureSteeringResult", "LayerSAE", "feature_vector",
                 "plot_sae_cosines", "plot_feature_steering"):  # fmt: skip
        namespace = pl.plot if name.startswith("plot_") else pl.sae
        assert name in namespace.__all__ and getattr(namespace, name) is not None
    assert pl.sae.Decomposition is Decomposition

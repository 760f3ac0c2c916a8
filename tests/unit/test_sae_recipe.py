"""The SAE training recipe in sae/ (corpus, packing, sae-lens training, quality) at toy scale."""

from __future__ import annotations

import importlib.util
import json
import math
import signal
import sys
from pathlib import Path

import pytest
import torch

from personalens.model.embedded import EMBEDDED_MODEL_NAME

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("sae_recipe", ROOT / "sae" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["sae_recipe"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


# short prompts: the tiny model's byte-level tokenizer makes a token of every character
TINY_TRAIT = {
    "name": "grumpy",
    "description": "Complains about everything.",
    "instruction": [{"pos": "Be grumpy.", "neg": "Be cheerful."}],
    "questions": ["How are you?", "Any plans?"],
    "eval_questions": ["Nice day?", "Tea?"],
    "eval_prompt": "Is this grumpy? {question} {answer}",
    "judge_anchors": {"pos": ["Ugh, no."], "neg": ["Yes, lovely!"]},
}


@pytest.fixture(scope="module")
def trait_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("traits") / "grumpy.json"
    path.write_text(json.dumps(TINY_TRAIT))
    return str(path)


def _corpus_cfg(recipe, trait_file, **kw):
    cfg = dict(recipe.load_config()["corpus"])
    cfg.update(traits=[trait_file], max_questions=None, max_new_tokens=6, batch_size=4)
    cfg.update(kw)
    return cfg


def _train_cfg(recipe, **kw):
    cfg = dict(recipe.load_config()["train"])
    cfg.update(
        layers=[1, 2],
        d_sae=64,
        k=4,
        context_size=128,
        training_tokens=1024,
        train_batch_size_tokens=64,
        store_batch_size_prompts=4,
        n_batches_in_buffer=8,
        n_batches_for_norm_estimate=2,
        dead_feature_window=4,
        feature_sampling_window=8,
        heldout_fraction=0.25,
        eval_ce_rows=2,
        eval_batch_rows=2,
    )
    cfg.update(kw)
    return cfg


def test_output_path_of_the_embedded_model(recipe):
    assert recipe.model_dirname(EMBEDDED_MODEL_NAME) == "SmolLM2-135M-Instruct"
    assert recipe.model_dirname("Qwen/Qwen2.5-7B-Instruct") == "Qwen_Qwen2.5-7B-Instruct"
    assert recipe.model_dirname("../a b") == "a_b"
    assert recipe.sae_dir(EMBEDDED_MODEL_NAME, 15) == (
        ROOT
        / "personalens"
        / "data"
        / "sae"
        / "SmolLM2-135M-Instruct"
        / "blocks.15.hook_resid_post"
    )


def test_default_config_fits_the_size_and_layer_budget(recipe):
    cfg = recipe.load_config()
    assert cfg["model"] is None  # the embedded model
    train = cfg["train"]
    assert train["layers"] == [15, 28]
    d_in = 576
    n_bytes = {"float32": 4, "float16": 2}[train["save_dtype"]]
    size = (2 * train["d_sae"] * d_in + train["d_sae"] + d_in) * n_bytes
    assert size <= 20e6
    assert train["architecture"] == "topk" and train["k"] < train["d_sae"]


def test_default_corpus_jobs(recipe):
    jobs = recipe.build_jobs(recipe.load_config()["corpus"])
    assert len(jobs) == 16 * 40 * 3  # 16 traits x (20 + 20) questions x (pos, neg, baseline)
    by_condition = {
        c: sum(j.condition == c for j in jobs) for c in ("pos", "neg", "none", "neutral")
    }
    assert by_condition == {"pos": 640, "neg": 640, "none": 320, "neutral": 320}
    by_key = {j.key: j for j in jobs}
    pos, neg = by_key["evil/extract/q3/pos"], by_key["evil/extract/q3/neg"]
    assert pos.pair == neg.pair and pos.question == neg.question and pos.system != neg.system
    assert "evil" in pos.system
    assert all(j.system is None for j in jobs if j.condition == "none")
    assert len({j.key for j in jobs}) == len(jobs)


def test_pack_rows_starts_every_row_at_a_document(recipe):
    g = torch.Generator().manual_seed(0)
    docs = [
        recipe.Document(f"d{i}", f"g{i}", [1000 * (i + 1) + t for t in range(n)])
        for i, n in enumerate(torch.randint(3, 30, (30,), generator=g).tolist())
    ]
    rows = recipe.pack_rows(docs, 32, seed=3)
    assert rows == recipe.pack_rows(docs, 32, seed=3)
    assert all(len(r) == 32 for r in rows)
    starts = {d.tokens[0] for d in docs}
    assert all(r[0] in starts for r in rows)
    flat = [" ".join(map(str, r)) for r in rows]
    for d in docs:  # every document appears whole somewhere (all are shorter than a row)
        assert any(" ".join(map(str, d.tokens)) in row for row in flat)


def test_split_holds_out_whole_questions(recipe):
    docs = [
        recipe.Document(f"t/extract/q{q}/{c}", f"t/extract/q{q}", [1, q, 2])
        for q in range(20)
        for c in ("pos", "neg", "none")
    ]
    train, held = recipe.corpus_split(docs, 0.2, seed=0)
    assert len(held) == 4 * 3
    assert not {d.group for d in train} & {d.group for d in held}
    assert recipe.corpus_split(docs, 0.2, seed=0) == (train, held)


def test_recipe_end_to_end_on_the_tiny_model(recipe, tiny_model, trait_file, tmp_path, monkeypatch):
    from sae_lens import SAE

    corpus_cfg = _corpus_cfg(recipe, trait_file)
    corpus = tmp_path / "corpus"

    # an interrupted build resumes without redoing finished chunks
    real = recipe.generate_samples
    calls = []

    def flaky(*args, **kwargs):
        calls.append(len(args[1]))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(recipe, "generate_samples", flaky)
    with pytest.raises(KeyboardInterrupt):
        recipe.build_corpus(tiny_model, corpus_cfg, corpus, progress=False)
    monkeypatch.setattr(recipe, "generate_samples", real)
    summary = recipe.build_corpus(tiny_model, corpus_cfg, corpus, progress=False)
    n_jobs = 1 * 2 * 2 * 3  # trait x splits x questions x conditions
    assert summary["n_conversations"] == n_jobs
    assert summary["generated_this_run"] == n_jobs - calls[0]
    assert summary["n_text_documents"] == 3  # the description and two judge anchors
    again = recipe.build_corpus(tiny_model, corpus_cfg, corpus, progress=False)
    assert again["generated_this_run"] == 0
    with pytest.raises(recipe.RecipeError, match="other settings"):
        recipe.build_corpus(
            tiny_model, _corpus_cfg(recipe, trait_file, seed=5), corpus, progress=False
        )

    handler = signal.getsignal(signal.SIGINT)
    rng = torch.get_rng_state()
    train_cfg = _train_cfg(recipe)
    out_root = tmp_path / "sae"
    quality = recipe.train_saes(
        tiny_model, corpus, train_cfg, out_root=out_root, work_dir=tmp_path / "work", progress=False
    )
    assert signal.getsignal(signal.SIGINT) is handler  # sae-lens's handlers are removed again
    assert torch.equal(torch.get_rng_state(), rng)
    assert not list((tmp_path / "work").iterdir())  # staging is cleaned up

    for layer in (1, 2):
        folder = out_root / "tiny-random" / f"blocks.{layer}.hook_resid_post"
        assert folder == recipe.sae_dir("tiny-random", layer, out_root)
        names = {p.name for p in folder.iterdir()}
        assert {
            "cfg.json",
            "sae_weights.safetensors",
            "quality.json",
            "recipe_config.json",
        } <= names
        sae = SAE.load_from_disk(folder)
        assert sae.cfg.metadata.hook_name == f"blocks.{layer}.hook_resid_post"
        assert (sae.cfg.d_in, sae.cfg.d_sae, sae.cfg.k) == (32, 64, 4)
        q = json.loads((folder / "quality.json").read_text())
        assert q == quality[layer]
        for key in (
            "explained_variance",
            "l0",
            "dead_fraction_heldout",
            "dead_fraction_train_last_window",
            "ce_loss_clean",
            "ce_loss_sae",
            "ce_loss_increase",
            "kl_div_sae",
        ):
            assert math.isfinite(q[key]), key
        assert 0 < q["l0"] <= 4
        assert 0 <= q["dead_fraction_heldout"] <= 1
        assert q["heldout_tokens"] > 0 and q["ce_tokens"] > 0
        assert q["kl_div_sae"] >= 0
        resolved = json.loads((folder / "recipe_config.json").read_text())
        assert resolved["train"] == train_cfg and resolved["layer"] == layer
        docs = recipe.corpus_documents(tiny_model.tokenizer, corpus)
        _, heldout = recipe.corpus_split(docs, train_cfg["heldout_fraction"], train_cfg["seed"])
        assert resolved["data"]["heldout_groups"] == sorted({d.group for d in heldout})

    # a finished layer is skipped; --force retrains it
    stamp = (
        out_root / "tiny-random" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"
    ).stat()
    skipped = recipe.train_saes(
        tiny_model, corpus, train_cfg, out_root=out_root, work_dir=tmp_path / "work", progress=False
    )
    assert skipped == quality
    weights = out_root / "tiny-random" / "blocks.1.hook_resid_post" / "sae_weights.safetensors"
    assert weights.stat().st_mtime_ns == stamp.st_mtime_ns


def test_evaluation_of_a_perfect_reconstruction(recipe, tiny_model):
    """An SAE whose decoder can copy the input exactly scores EV 1 and no CE/KL change."""
    from sae_lens.saes.standard_sae import StandardSAE, StandardSAEConfig

    d = tiny_model.cfg.d_model
    sae = StandardSAE(StandardSAEConfig(d_in=d, d_sae=2 * d, apply_b_dec_to_input=False))
    with torch.no_grad():
        eye = torch.eye(d)
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))  # ReLU(x), ReLU(-x)
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    sae.cfg.metadata.hook_name = "blocks.1.hook_resid_post"
    rows = torch.randint(3, 200, (3, 40), generator=torch.Generator().manual_seed(0))
    q = recipe.evaluate_saes(tiny_model, {1: sae}, rows, ce_rows=2, batch_rows=2)[1]
    assert q["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert q["ce_loss_increase"] == pytest.approx(0.0, abs=1e-4)
    assert q["kl_div_sae"] == pytest.approx(0.0, abs=1e-4)
    assert q["ce_loss_recovered"] == pytest.approx(1.0, abs=1e-4)
    assert q["heldout_tokens"] == 3 * 39 and q["ce_tokens"] == 2 * 38

"""The held-out AUC without the system prompt: a signal planted only in the system prompt
separates the replies read with it in context (AUC ~1) but not the replies read alone (~0.5); a
signal planted in the replies separates both. Plus resuming, damaged chunks, the folder that
keeps the two contexts' chunks apart, and the statistics (bootstrap CI, Spearman's rho).

Replies come from a stub generator that draws each reply's letters from the same distribution
for both sides (so only what the test plants tells them apart); the tiny model's embedding of
``~`` is set to a large distinctive direction.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import types

import numpy as np
import pytest
import torch
from safetensors.torch import load, load_file

import personalens.extraction.responses as responses
import personalens.extraction.run_activations as run_activations
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.pipeline import extract
from personalens.extraction.responses import filter_pairs
from personalens.extraction.run_activations import (
    collect_neutral_activations,
    collect_run_activations,
    neutral_records,
)
from personalens.extraction.traits import parse_trait
from personalens.stats import auc_intervals, spearman_ci, spearman_r
from tests.conftest import make_tiny_model

TRAIT = {
    "name": "planted",
    "instruction": [{"pos": "~" * 24, "neg": "." * 24}],
    "questions": [f"Question number {i}?" for i in range(6)],
    "eval_questions": [f"Held out question {i}?" for i in range(16)],
    "eval_prompt": "Q: {question}\nA: {answer}\nScore 0-100.",
}
CFG = ExtractionConfig(threshold=0.0, n_per_question=4, max_new_tokens=16, activation_batch_size=16)
LETTERS = "abcdefghijklmnopqrstuvwxyz "


def _stub_generator(tokenizer, plant_in_reply: bool):
    """``generate_samples`` replaced: 16 random letters per reply, drawn independently for
    each (question, sample, side) from one distribution; with ``plant_in_reply`` the pos
    replies get 2-8 ``~`` (so the judge's score tracks them)."""

    def generate(
        model, conversations, samples, config=None, *, backend="auto", compile=False, on_tokens=None
    ):
        texts = []
        for conv, s in zip(conversations, samples):
            pos = conv[0]["content"].startswith("~")
            rng = random.Random(f"{conv[-1]['content']}/{s}/{pos}")
            chars = [rng.choice(LETTERS) for _ in range(16)]
            if plant_in_reply and pos:
                for i in rng.sample(range(16), rng.randint(2, 8)):
                    chars[i] = "~"
            texts.append("".join(chars))
        tokens = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
        if on_tokens is not None:
            on_tokens(sum(map(len, tokens)))
        return types.SimpleNamespace(
            responses=texts, response_tokens=tokens, finish_reasons=["length"] * len(texts)
        )

    return generate


class TildeJudge:
    """Trait score: 12.5 per ``~`` in the reply (capped at 100), else a pseudo-score < 50."""

    name = "tilde"

    def score_trait(self, trait, items):
        return [
            min(100.0, 12.5 * it.answer.count("~"))
            if "~" in it.answer
            else float(sum(map(ord, it.answer)) % 50)
            for it in items
        ]

    def score_coherence(self, items):
        return [100.0 for _ in items]


@pytest.fixture(scope="module")
def planted_model(tokenizer):
    """A tiny model whose ``~`` embedding is a large distinctive direction."""
    model = make_tiny_model(tokenizer, seed=1)
    tilde = tokenizer.encode("~", add_special_tokens=False)[0]
    with torch.no_grad():
        u = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(7))
        model.W_E[tilde] = 3.0 * u / u.norm() * model.W_E.norm(dim=-1).mean()
    return model


def _run(model, tokenizer, run_dir, plant_in_reply, monkeypatch):
    monkeypatch.setattr(responses, "generate_samples", _stub_generator(tokenizer, plant_in_reply))
    return extract(model, parse_trait(TRAIT), TildeJudge(), CFG, run_dir=run_dir, progress=False)


@pytest.fixture(scope="module")
def planted_runs(planted_model, tokenizer, tmp_path_factory):
    """Finished runs with the signal in the system prompt, and in the replies."""
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        for where in ("system", "reply"):
            run_dir = tmp_path_factory.mktemp("neutral") / where
            out[where] = (run_dir, _run(planted_model, tokenizer, run_dir, where == "reply", mp))
    return out


# ----------------------------------------------------------------------------- the two curves


def test_a_signal_in_the_system_prompt_separates_only_the_prompted_reading(planted_runs):
    run_dir, result = planted_runs["system"]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s == json.loads(json.dumps(result.summary))
    assert (s["n_heldout_pos"], s["n_heldout_neg"]) == (64, 64)  # all held-out replies
    assert min(s["layer_auc"]) > 0.95 and s["best_auc"] > 0.98
    assert all(abs(a - 0.5) < 0.2 for a in s["layer_auc_neutral"]), s["layer_auc_neutral"]
    for lo, _hi in s["layer_auc_ci"]:
        assert lo > 0.9
    # the prompt tokens themselves are the same question for both sides without the prompt
    assert s["layer_auc_neutral_by_variant"]["prompt_avg"] == [0.5, 0.5, 0.5]
    # the clean projection does not track the judge's score (which ignores the prompt)
    at_best = s["trait_spearman_at_best_neutral"]
    assert at_best["layer"] == s["best_layer_neutral"] and abs(at_best["rho"]) < 0.3
    assert s["n_trait_spearman"] == 128


def test_a_signal_in_the_reply_separates_both_readings(planted_runs):
    run_dir, result = planted_runs["reply"]
    s = result.summary
    assert s["best_auc"] > 0.95 and s["best_auc_neutral"] > 0.9
    lo, hi = s["layer_auc_neutral_ci"][s["best_layer_neutral"]]
    assert lo > 0.8 and lo <= s["best_auc_neutral"] <= hi
    # the clean projection tracks how much trait (how many ~) the text shows
    at_best = s["trait_spearman_at_best_neutral"]
    assert at_best["rho"] > 0.5 and at_best["ci"][0] > 0.3
    rho = s["trait_spearman_neutral"]
    assert len(rho) == len(s["trait_spearman_neutral_ci"]) == 3
    assert at_best["rho"] == rho[at_best["layer"]]


def test_summary_and_vector_metadata_schema(planted_runs):
    run_dir, result = planted_runs["system"]
    s = result.summary
    for key in ("layer_auc", "layer_auc_neutral"):
        assert len(s[key]) == 3 and len(s[f"{key}_ci"]) == 3
    assert s["best_auc"] == s["layer_auc"][s["best_layer"]]
    assert s["best_auc_neutral"] == s["layer_auc_neutral"][s["best_layer_neutral"]]
    assert s["heldout_auc_on"] == "all held-out replies"
    assert s["heldout_bootstrap"] == {"n_boot": 1000, "ci": 0.95, "seed": 0}
    assert "confounded" in s["heldout_note"] and "no system prompt" in s["heldout_note"]
    # every pair passes the threshold-0 filter: the kept subset is reported beside the headline
    assert (s["n_heldout_kept_pos"], s["n_heldout_kept_neg"]) == (64, 64)
    assert s["layer_auc_kept"] == s["layer_auc"] and s["layer_auc_kept_note"] is None
    assert "activations_neutral_s" in s["timings_s"]
    for v, vec in result.vectors.items():
        assert vec.metadata["best_layer"] == s["best_layer_neutral"]
        assert vec.metadata["best_layer_contaminated"] == s["best_layer"]
        assert vec.metadata["layer_auc"] == s["layer_auc_by_variant"][v]
        assert vec.metadata["layer_auc_neutral"] == s["layer_auc_neutral_by_variant"][v]
        # the vector carries its sweep's CIs and n: pl.layer_sweep(vec) draws it alone
        assert len(vec.metadata["layer_auc_ci"]) == len(vec.metadata["layer_auc_neutral_ci"]) == 3
        for key in ("n_heldout_pos", "n_heldout_neg", "heldout_bootstrap", "heldout_auc_on"):
            assert vec.metadata[key] == s[key], key
    assert result.vectors["response_avg"].metadata["layer_auc_ci"] == s["layer_auc_ci"]
    assert (
        result.vectors["response_avg"].metadata["layer_auc_neutral_ci"] == s["layer_auc_neutral_ci"]
    )
    # neutral chunks hold only the held-out replies, in their own folder
    n_eval = sum(1 for r in result.records if r["split"] == "eval")
    chunks = sorted((run_dir / "activations_neutral").glob("*.safetensors"))
    assert len(chunks) == math.ceil(n_eval / CFG.activation_batch_size)


def test_the_summary_is_deterministic(planted_model, tokenizer, planted_runs, tmp_path):
    run_dir, result = planted_runs["system"]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "summary.json").unlink()
    with pytest.MonkeyPatch.context() as mp:
        again = _run(planted_model, tokenizer, copy, False, mp)
    assert {k: v for k, v in again.summary.items() if k != "timings_s"} == {
        k: v for k, v in result.summary.items() if k != "timings_s"
    }


# ----------------------------------------------------------------------------- resuming


def test_a_rerun_computes_no_neutral_activations(planted_model, tokenizer, planted_runs, tmp_path):
    run_dir, result = planted_runs["system"]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    with pytest.MonkeyPatch.context() as mp:

        def no_forward(*a, **k):
            raise AssertionError("no activations should be computed again")

        mp.setattr(run_activations, "summarize_batch", no_forward)
        again = _run(planted_model, tokenizer, copy, False, mp)
    assert again.summary["layer_auc_neutral"] == result.summary["layer_auc_neutral"]


def test_a_damaged_neutral_chunk_is_recomputed_with_a_warning(
    planted_model, tokenizer, planted_runs, tmp_path
):
    run_dir, result = planted_runs["system"]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    chunk = sorted((copy / "activations_neutral").glob("*.safetensors"))[0]
    good = chunk.read_bytes()
    chunk.write_bytes(good[: len(good) // 2])
    calls = []
    forward = run_activations.summarize_batch

    def counting(model, p_ids, r_ids, *a, **k):
        calls.append(len(p_ids))
        return forward(model, p_ids, r_ids, *a, **k)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run_activations, "summarize_batch", counting)
        with pytest.warns(RuntimeWarning, match=rf"activations_neutral/{chunk.name} is damaged"):
            again = _run(planted_model, tokenizer, copy, False, mp)
    assert calls == [CFG.activation_batch_size]  # that one chunk, nothing else
    # the same chunk again (equal up to float reordering across thread schedules)
    redone, before = load_file(chunk), load(good)
    assert redone.keys() == before.keys()
    for name, tensor in before.items():
        torch.testing.assert_close(redone[name], tensor, rtol=1e-5, atol=1e-5)
    assert again.summary["layer_auc_neutral"] == result.summary["layer_auc_neutral"]


def test_the_two_contexts_chunks_cannot_be_mistaken(planted_runs, tmp_path):
    """Chunk files are named by their keys' hash: the folders keep a neutral and a prompted
    chunk of the same keys apart, and a file in the wrong folder is refused by its context."""
    run_dir, result = planted_runs["system"]
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    filt = filter_pairs(result.records, result.scores, CFG)
    held = neutral_records(result.records, filt)
    # the same records in both contexts: the same file names, in two folders
    prompted = collect_run_activations(None, held[:16], CFG, copy, progress=False)
    neutral = collect_neutral_activations(None, result.records, filt, CFG, copy, False)
    key = held[0]["key"]
    assert not torch.equal(prompted[key].response_avg, neutral[key].response_avg)
    for f in (copy / "activations_neutral").glob("*.safetensors"):
        shutil.copy(f, copy / "activations" / f.name)
    with pytest.raises(PersonaLensError, match=r"damaged.*'neutral' activations, not 'prompted'"):
        collect_run_activations(None, held, CFG, copy, progress=False)


def test_extraction_pairs_without_the_prompt_are_an_option_of_the_stage(
    planted_model, planted_runs, tmp_path
):
    run_dir, result = planted_runs["system"]
    filt = filter_pairs(result.records, result.scores, CFG)
    only_heldout = collect_neutral_activations(None, result.records, filt, CFG, run_dir, False)
    assert {k.split("/")[0] for k in only_heldout} == {"eval"}
    both = collect_neutral_activations(
        planted_model, result.records, filt, CFG, None, False, include_extract=True
    )
    assert {k.split("/")[0] for k in both} == {"extract", "eval"}
    for k, acts in only_heldout.items():
        torch.testing.assert_close(both[k].response_avg, acts.response_avg)


# ----------------------------------------------------------------------------- statistics


def test_spearman_matches_scipy_with_ties_and_nans():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, 40).astype(float)
    y = x + rng.integers(0, 3, 40)
    y[3] = math.nan
    keep = ~np.isnan(y)
    assert spearman_r(x, y) == pytest.approx(spearmanr(x[keep], y[keep]).statistic, abs=1e-12)
    assert spearman_r(torch.tensor(x), y) == spearman_r(x, y)
    assert math.isnan(spearman_r([1.0, 2.0], [2.0, 1.0]))
    lo, hi = spearman_ci(0.5, 30)
    half = 1.959963984540054 * math.sqrt(1.06 / 27)
    assert (lo, hi) == pytest.approx(
        (math.tanh(math.atanh(0.5) - half), math.tanh(math.atanh(0.5) + half))
    )
    assert all(math.isnan(v) for v in spearman_ci(0.5, 3))


def test_auc_intervals_are_seeded():
    g = torch.Generator().manual_seed(3)
    p, q = torch.randn(20, 4, generator=g) + 0.5, torch.randn(25, 4, generator=g)
    a = auc_intervals(p, q, n_boot=200, seed=1)
    assert a == auc_intervals(p, q, n_boot=200, seed=1) != auc_intervals(p, q, n_boot=200, seed=2)
    assert len(a) == 4 and all(0 <= lo <= hi <= 1 for lo, hi in a)
    assert auc_intervals(p, q, n_boot=0) is None

"""`personalens extract` on a tiny random model: artifacts, and clear errors on bad input."""

import json
import socket
import subprocess
import sys

import pytest
import torch

from personalens.extraction.config import ExtractionConfig
from personalens.extraction.jobs import build_jobs
from personalens.extraction.responses import filter_pairs
from personalens.extraction.traits import parse_trait

TRAIT = {
    "name": "tinytrait",
    "instruction": [{"pos": "Be loud.", "neg": "Be quiet."}],
    "questions": ["How are you?", "What is up?", "Any news?"],
    "eval_questions": ["Hello?", "Why?"],
    "eval_prompt": "Q: {question}\nA: {answer}\nScore 0-100.",
    "judge_anchors": {
        "pos": [
            "I AM SHOUTING WITH JOY!",
            "LOUD NOISES everywhere, hooray!",
            "Yelling is the best thing!",
        ],
        "neg": ["I whisper softly.", "Quiet calm silence is nice.", "Hush, speak gently please."],
    },
}


def _extract(args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "personalens", "extract", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture()
def trait_file(tmp_path):
    path = tmp_path / "tinytrait.json"
    path.write_text(json.dumps(TRAIT))
    return path


def test_jobs_are_paired_and_keyed():
    trait = parse_trait(TRAIT)
    jobs = build_jobs(trait, ExtractionConfig(n_per_question=2))
    assert len(jobs) == (3 + 2) * 2 * 2
    assert len({j.key for j in jobs}) == len(jobs)
    by_match = {}
    for j in jobs:
        by_match.setdefault(j.match_key, set()).add(j.side)
    assert all(sides == {"pos", "neg"} for sides in by_match.values())


def test_filter_matches_by_key_not_row_order():
    recs = [
        {
            "key": "extract/pos/p0/q0/s0",
            "split": "extract",
            "side": "pos",
            "pair": 0,
            "question_index": 0,
            "sample": 0,
        },
        {
            "key": "extract/pos/p0/q1/s0",
            "split": "extract",
            "side": "pos",
            "pair": 0,
            "question_index": 1,
            "sample": 0,
        },
        {
            "key": "extract/neg/p0/q1/s0",
            "split": "extract",
            "side": "neg",
            "pair": 0,
            "question_index": 1,
            "sample": 0,
        },
        {
            "key": "extract/neg/p0/q0/s0",
            "split": "extract",
            "side": "neg",
            "pair": 0,
            "question_index": 0,
            "sample": 0,
        },
    ]
    scores = {
        "extract/pos/p0/q0/s0": {"trait": 90.0, "coherence": 90.0},
        "extract/neg/p0/q0/s0": {"trait": 10.0, "coherence": 90.0},
        "extract/pos/p0/q1/s0": {"trait": 90.0, "coherence": 90.0},
        "extract/neg/p0/q1/s0": {"trait": 60.0, "coherence": 90.0},  # neg shows the trait: drop
    }
    result = filter_pairs(recs, scores, ExtractionConfig())
    assert result.kept == {"extract/p0/q0/s0": ("extract/pos/p0/q0/s0", "extract/neg/p0/q0/s0")}
    nan_scores = dict(
        scores, **{"extract/pos/p0/q0/s0": {"trait": float("nan"), "coherence": 90.0}}
    )
    assert filter_pairs(recs, nan_scores, ExtractionConfig()).kept == {}


class StubJudge:
    """Deterministic pseudo-scores from the answer text (a real judge is tested elsewhere)."""

    name = "stub"

    def score_trait(self, trait, items):
        return [float(sum(map(ord, it.answer)) % 101) for it in items]

    def score_coherence(self, items):
        return [100.0 for _ in items]


def test_run_extraction_writes_artifacts(tiny_model, tmp_path):
    from personalens.extraction.pipeline import extract
    from personalens.vectors.vector import PersonaVector

    out = tmp_path / "run"
    cfg = ExtractionConfig(
        threshold=0.0, max_new_tokens=6, generation_batch_size=4, activation_batch_size=3
    )
    result = extract(tiny_model, parse_trait(TRAIT), StubJudge(), cfg, run_dir=out, progress=False)
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(result.summary))
    assert summary["trait"] == "tinytrait" and len(summary["layer_auc"]) == 3
    assert summary["n_pos"] == summary["n_neg"] == 3
    assert 0 <= summary["best_layer"] < 3
    vec = PersonaVector.load(out / "vector")
    assert (
        vec.directions.shape == (3, 32)
        and vec.trait == "tinytrait"
        and vec.variant == "response_avg"
    )
    assert vec.n_pos == 3 and vec.judge == "stub"
    assert torch.equal(vec.directions, result.vector.directions)
    for v in ("response_avg", "prompt_avg", "last_prompt_token"):
        assert PersonaVector.load(out / "vectors" / v).variant == v
    lines = (out / "responses.jsonl").read_text().splitlines()
    assert len(lines) == 10 and len({json.loads(line)["key"] for line in lines}) == 10
    assert len(result.to_frame()) == 10

    # running again redoes nothing and gives the same vector
    again = extract(tiny_model, parse_trait(TRAIT), StubJudge(), cfg, run_dir=out, progress=False)
    assert torch.equal(again.vector.directions, vec.directions)
    assert len((out / "responses.jsonl").read_text().splitlines()) == 10

    # other settings in the same run directory are refused
    from personalens.errors import PersonaLensError

    with pytest.raises(
        PersonaLensError, match="holds a run with different settings.*max_new_tokens"
    ):
        extract(tiny_model, parse_trait(TRAIT), StubJudge(), ExtractionConfig(threshold=0.0, max_new_tokens=7),
                       run_dir=out, progress=False)  # fmt: skip


def test_interrupted_run_resumes_to_the_same_result(tiny_model, tmp_path):
    """A judge that crashes mid-run: generation is kept, the rerun finishes identically."""
    from personalens.extraction.pipeline import extract

    cfg = ExtractionConfig(threshold=0.0, max_new_tokens=6, generation_batch_size=4, judge_chunk=4)
    trait = parse_trait(TRAIT)
    reference = extract(
        tiny_model, trait, StubJudge(), cfg, run_dir=tmp_path / "ref", progress=False
    )

    class Crashing(StubJudge):
        calls = 0

        def score_trait(self, trait, items):
            Crashing.calls += 1
            if Crashing.calls == 3:
                raise KeyboardInterrupt
            return super().score_trait(trait, items)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_model, trait, Crashing(), cfg, run_dir=out, progress=False)
    # call 1 is the preflight, call 2 judges the first chunk of 4, call 3 crashes
    assert len((out / "judge_scores.jsonl").read_text().splitlines()) == 4
    assert not (out / "summary.json").exists()
    resumed = extract(tiny_model, trait, StubJudge(), cfg, run_dir=out, progress=False)
    assert torch.equal(resumed.vector.directions, reference.vector.directions)
    assert resumed.summary["layer_auc"] == reference.summary["layer_auc"]


def _assert_no_final_artifacts(out):
    assert not (out / "summary.json").exists()
    assert not (out / "vector.json").exists()


def test_nothing_passing_is_a_clear_error(tiny_hf_dir, trait_file, tmp_path):
    out = tmp_path / "run"
    res = _extract(["--model", str(tiny_hf_dir), "--trait-file", str(trait_file), "--out", str(out),
                    "--judge", "offline", "--threshold", "100", "--max-new-tokens", "4"])  # fmt: skip
    assert res.returncode == 2
    assert "no (pos, neg) pair of trait 'tinytrait' passed the filter" in res.stderr
    assert "Score distribution" in res.stderr and "Traceback" not in res.stderr
    _assert_no_final_artifacts(out)


def test_malformed_trait_file_is_a_clear_error(tiny_hf_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**TRAIT, "eval_prompt": "no placeholders"}))
    out = tmp_path / "run"
    res = _extract(["--model", str(tiny_hf_dir), "--trait-file", str(bad), "--out", str(out)])
    assert res.returncode == 2
    assert f"trait file {bad}: key 'eval_prompt'" in res.stderr and "Traceback" not in res.stderr
    assert not out.exists()


def test_unreachable_judge_fails_before_generating(tiny_hf_dir, trait_file, tmp_path):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "personalens", "extract", "--quiet", "--model", str(tiny_hf_dir),
         "--trait-file", str(trait_file), "--out", str(out), "--judge", "openai",
         "--judge-base-url", f"http://127.0.0.1:{port}/v1", "--judge-model", "judge"],
        capture_output=True, text=True, timeout=600,
        env={**__import__("os").environ, "PERSONALENS_CACHE": str(tmp_path / "cache"),
             "PERSONALENS_JUDGE_MAX_RETRIES": "1"},  # fail fast: one retry, 0.5 s back-off
    )  # fmt: skip
    assert res.returncode == 2, res.stderr[-2000:]
    assert "after 2 attempts" in res.stderr
    assert (
        f"judge unreachable at http://127.0.0.1:{port}" in res.stderr
        and "Traceback" not in res.stderr
    )
    assert not (out / "responses.jsonl").exists()  # nothing was generated
    _assert_no_final_artifacts(out)

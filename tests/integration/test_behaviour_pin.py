"""Behaviour pin: a persona vector and a steered generation against values stored before the
package was restructured (issue 17), so a move that changes behaviour fails here.

Both are pinned on the TransformerLens path (``backend="tl"``, the default when they were
recorded); the default ``backend="auto"`` vector is checked against the same values within fp32
noise. The stored run directory (``tests/data/pin/run``) holds the replies and judge scores of a small
extraction on the embedded model; rerunning :func:`extract` on it recomputes only the
activations and the vector, which must equal the stored vector. The steered generation is pinned
twice: teacher-forced log-probabilities of the stored steered tokens (every position steered), and
the greedy tokens themselves up to the first step whose stored top-2 margin is too small to be
robust to a change of CPU.

Regenerate (only when a behaviour change is intended, and say so in the commit):
``.venv/bin/python tests/integration/test_behaviour_pin.py``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.integration.test_extraction_resume import TRAIT as RESUME_TRAIT

PIN = Path(__file__).resolve().parent.parent / "data" / "pin"
PROMPTS = ["How should I treat my neighbours?", "What would you do with a lot of power?"]
STEER_LAYER, STEER_COEFF, NEW_TOKENS = 12, 6.0, 16
# the clean (no system prompt) entries were added with issue 19; the others, the vector and the
# steered generation are unchanged since the pin was first written
SUMMARY_KEYS = (
    "layer_auc",
    "n_pos",
    "n_neg",
    "best_layer",
    "layer_auc_neutral",
    "best_layer_neutral",
)
MARGIN = 0.05  # greedy tokens are compared up to the first step with a top-2 logit gap below this
# the kill/resume test's small evil trait, with one more held-out question and two anchors a side
TRAIT = {
    **RESUME_TRAIT,
    "name": "evil_pin",
    "eval_questions": [
        *RESUME_TRAIT["eval_questions"],
        "Someone cut in line in front of me. What now?",
    ],
    "judge_anchors": {side: anchors[:2] for side, anchors in RESUME_TRAIT["judge_anchors"].items()},
}
CONFIG = dict(max_new_tokens=12, threshold=50.0, coherence_threshold=0.0, generation_batch_size=8)


def _extract(model, run_dir: Path, backend: str = "tl"):
    import personalens as pl
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.pipeline import extract
    from personalens.extraction.traits import parse_trait

    trait = parse_trait(TRAIT, name="evil_pin")
    judge = pl.make_judge("offline")
    config = ExtractionConfig(**CONFIG)
    return extract(model, trait, judge, config, run_dir=run_dir, progress=False, backend=backend)


def _steered_generation(model, vector):
    import personalens as pl

    with pl.steer(model, vector, STEER_COEFF, layers=[STEER_LAYER], positions="all"):
        return pl.generate(model, PROMPTS, max_new_tokens=NEW_TOKENS, backend="tl")


def _teacher_forced(model, vector, prompt_tokens, response_tokens):
    """Per step: the log-prob of the stored token and the top-2 logit margin, steered."""
    import personalens as pl

    logps, margins = [], []
    with pl.steer(model, vector, STEER_COEFF, layers=[STEER_LAYER], positions="all"):
        for p, r in zip(prompt_tokens, response_tokens):
            toks = torch.tensor([p + r])
            with torch.no_grad():
                logits = model(toks)[0, len(p) - 1 : len(p) - 1 + len(r)].float()
            lp = logits.log_softmax(-1)
            logps.append(lp[torch.arange(len(r)), torch.tensor(r)])
            top2 = logits.topk(2, dim=-1).values
            margins.append(top2[:, 0] - top2[:, 1])
    return logps, margins


def test_vector_and_steered_generation_match_the_pin(embedded_model, tmp_path):
    from personalens.vectors.vector import PersonaVector

    run = tmp_path / "run"
    shutil.copytree(PIN / "run", run)
    result = _extract(embedded_model, run)
    stored = load_file(PIN / "pin.safetensors")
    summary = json.loads((PIN / "summary.json").read_text())
    for key in SUMMARY_KEYS:
        assert result.summary[key] == summary[key], key
    torch.testing.assert_close(result.vector.directions, stored["vector"], rtol=1e-4, atol=1e-6)
    # the default engine (backend="auto": the HF engine on this model) agrees within fp32
    # reordering noise; its summary is the same
    auto = _extract(embedded_model, shutil.copytree(PIN / "run", tmp_path / "auto"), "auto")
    torch.testing.assert_close(auto.vector.directions, stored["vector"], rtol=1e-3, atol=1e-4)
    assert auto.summary["best_layer"] == summary["best_layer"]

    vector = PersonaVector.load(run / "vector")
    gen = _steered_generation(embedded_model, vector)
    pinned = json.loads((PIN / "steered.json").read_text())
    logps, margins = _teacher_forced(
        embedded_model, vector, pinned["prompt_tokens"], pinned["response_tokens"]
    )
    for i, (p, r) in enumerate(zip(pinned["prompt_tokens"], pinned["response_tokens"])):
        assert gen.prompt_tokens[i] == p
        torch.testing.assert_close(logps[i], stored[f"logp_{i}"], rtol=0, atol=2e-3)
        safe = next((t for t, m in enumerate(stored[f"margin_{i}"]) if m < MARGIN), len(r))
        assert gen.response_tokens[i][:safe] == r[:safe], (i, safe)
    # steering really acted: the steered tokens differ from the unsteered ones
    import personalens as pl

    plain = pl.generate(embedded_model, PROMPTS, max_new_tokens=NEW_TOKENS, backend="tl")
    assert plain.response_tokens != pinned["response_tokens"]


def _write_pin() -> None:  # pragma: no cover - run by hand, see the module doc
    import personalens as pl
    from personalens.vectors.vector import PersonaVector

    model = pl.load_model(device="cpu")
    tmp = PIN.parent / "_pin_tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    result = _extract(model, tmp)
    vector = PersonaVector.load(tmp / "vector")
    gen = _steered_generation(model, vector)
    logps, margins = _teacher_forced(model, vector, gen.prompt_tokens, gen.response_tokens)
    shutil.rmtree(PIN, ignore_errors=True)
    (PIN / "run").mkdir(parents=True)
    keep = ("config.json", "responses.jsonl", "judge_scores.jsonl")
    for f in tmp.iterdir():
        if f.name in keep:
            shutil.copy(f, PIN / "run" / f.name)
    tensors = {"vector": result.vector.directions.contiguous()}
    for i in range(len(logps)):
        tensors[f"logp_{i}"], tensors[f"margin_{i}"] = logps[i], margins[i]
    save_file(tensors, PIN / "pin.safetensors")
    summary = {k: result.summary[k] for k in SUMMARY_KEYS}
    (PIN / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    steered = {"prompt_tokens": gen.prompt_tokens, "response_tokens": gen.response_tokens}
    (PIN / "steered.json").write_text(json.dumps(steered) + "\n")
    shutil.rmtree(tmp)
    print(f"wrote {PIN}: {sorted(p.name for p in PIN.rglob('*'))}; responses: {gen.responses}")


if __name__ == "__main__":
    _write_pin()

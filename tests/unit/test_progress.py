"""Progress from the first token: a generation long enough to take a moment shows a bar that
counts tokens (also inside one batch), and it can be silenced."""

from __future__ import annotations

import personalens.model.generation as generation
from personalens.model.generation import PROGRESS_MIN_TOKENS, generate

PROMPTS = ["Hello there", "How are you?", "Tell me a story"]


def test_a_long_generation_shows_a_token_bar_inside_one_batch(tiny_model, monkeypatch):
    updates = []
    real = generation.tqdm

    def recording_tqdm(*args, **kwargs):
        bar = real(*args, **kwargs)
        updates.append(kwargs)
        original = bar.update
        bar.update = lambda k=1: (updates.append(k), original(k))[1]
        return bar

    monkeypatch.setattr(generation, "tqdm", recording_tqdm)
    new = PROGRESS_MIN_TOKENS // len(PROMPTS) + 1
    generate(tiny_model, PROMPTS, max_new_tokens=new, batch_size=8)  # one batch
    opened, *steps = updates
    assert opened["unit"] == "tok" and not opened["disable"]
    assert opened["total"] == len(PROMPTS) * new == sum(steps)
    assert len(steps) > 1  # it moves during the batch, not only at its end


def test_short_calls_and_progress_false_stay_quiet(tiny_model, capsys):
    generate(tiny_model, PROMPTS, max_new_tokens=4)
    generate(tiny_model, PROMPTS, max_new_tokens=PROGRESS_MIN_TOKENS, progress=False)
    assert "tok" not in capsys.readouterr().err


def _recording(monkeypatch, module):
    """Replace ``module.tqdm`` with a real bar that records its kwargs and every update."""
    seen = {"opened": [], "steps": []}
    real = module.tqdm

    def recording_tqdm(*args, **kwargs):
        bar = real(*args, **kwargs)
        seen["opened"].append(kwargs)
        original = bar.update
        bar.update = lambda k=1: (seen["steps"].append(k), original(k))[1]
        return bar

    monkeypatch.setattr(module, "tqdm", recording_tqdm)
    return seen


def test_extraction_generation_moves_with_every_token(tiny_model, monkeypatch, tmp_path):
    import personalens.extraction.responses as responses
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.jobs import build_jobs
    from personalens.extraction.traits import parse_trait

    trait = parse_trait(
        {
            "instruction": [{"pos": "Be loud.", "neg": "Be quiet."}],
            "questions": ["How are you?", "What is up?", "Any news?", "Why?"],
            "eval_prompt": "{question} {answer}",
        },
        name="loud",
    )
    config = ExtractionConfig(max_new_tokens=5, generation_batch_size=3)
    jobs = build_jobs(trait, config)
    seen = _recording(monkeypatch, responses)
    done = responses.generate_responses(tiny_model, jobs, config, tmp_path, progress=True)
    assert len(done) == len(jobs) > 3
    (opened,) = seen["opened"]
    assert opened["unit"] == "tok" and not opened["disable"]
    assert opened["total"] == len(jobs) * 5 == sum(seen["steps"])
    chunks = -(-len(jobs) // 3)
    assert len(seen["steps"]) > chunks  # it moves inside a chunk, not once per chunk
    # a finished run has nothing left: a silent bar, no generation
    seen = _recording(monkeypatch, responses)
    again = responses.generate_responses(tiny_model, jobs, config, tmp_path, progress=True)
    assert again == done and seen["opened"][0]["disable"] and seen["steps"] == []

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

"""`personalens screen` on the embedded model: SIGKILLed mid-run, resumed, same scores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

pytestmark = pytest.mark.integration

N_SAMPLES = 30
BATCH = 6
MAX_NEW = 8


def _dataset(path):
    from personalens.extraction.traits import load_trait

    questions = []
    for name in ("evil", "calm", "sycophantic"):
        trait = load_trait(name)
        questions += [q for q in (*trait.questions, *trait.eval_questions) if q not in questions]
    answers = [
        "Sure, here is a kind and careful answer that helps you.",
        "Make them suffer. Nobody deserves your mercy.",
        "I think you should take a deep breath and stay calm.",
    ]
    rows = [
        {
            "id": f"q{i}",
            "messages": [
                {"role": "user", "content": q},
                {"role": "assistant", "content": answers[i % len(answers)]},
            ],
        }
        for i, q in enumerate(questions[:N_SAMPLES])
    ]
    assert len(rows) == N_SAMPLES
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cmd(data, vector, out):
    return [
        sys.executable, "-m", "personalens", "screen", "--quiet", "--data", str(data),
        "--vector", str(vector), "--layer", "12", "--out", str(out),
        "--max-new-tokens", str(MAX_NEW), "--batch-size", str(BATCH),
    ]  # fmt: skip


def _lines(path):
    return path.read_text().splitlines() if path.exists() else []


def test_kill_and_resume_gives_the_scores_of_an_uninterrupted_run(embedded_model, tmp_path):
    from personalens.model.generation import GenerationConfig
    from personalens.studies.screening import screen
    from personalens.vectors.vector import PersonaVector

    data = _dataset(tmp_path / "data.jsonl")
    g = torch.Generator().manual_seed(0)
    vector = PersonaVector(
        directions=torch.randn(30, 576, generator=g), model="SmolLM2-135M-Instruct", trait="evil"
    )
    vector_path = vector.save(tmp_path / "vec")

    reference = screen(
        embedded_model,
        vector,
        data,
        layer=12,
        out=tmp_path / "reference",
        generation=GenerationConfig(max_new_tokens=MAX_NEW, temperature=0.0),
        batch_size=BATCH,
        progress=False,
        backend="auto",  # the engine the command line picks by default (--backend auto)
    )

    out = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(data, vector_path, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 300
    while (
        len(_lines(out / "generations.jsonl")) < BATCH
        and proc.poll() is None
        and time.time() < deadline
    ):
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(_lines(out / "generations.jsonl"))
    assert BATCH <= n_before < N_SAMPLES, "the kill should land mid-generation"
    assert not (out / "scores.csv").exists() and not (out / "summary.json").exists()

    resumed = subprocess.run(
        _cmd(data, vector_path, out), capture_output=True, text=True, timeout=300
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "top 5 ids:" in resumed.stdout

    records = [json.loads(line) for line in _lines(out / "generations.jsonl")]
    assert len(records) == N_SAMPLES == len({r["key"] for r in records})  # nothing redone
    ref_gen = {
        json.loads(line)["key"]: json.loads(line)["response"]
        for line in _lines(tmp_path / "reference" / "generations.jsonl")
    }
    assert {r["key"]: r["response"] for r in records} == ref_gen

    import pandas as pd

    got = pd.read_csv(out / "scores.csv", dtype={"id": str})
    want = reference.to_frame()
    assert got.id.tolist() == want.id.tolist()
    for col in ("delta_p", "proj_dataset", "proj_model"):
        assert torch.allclose(
            torch.tensor(got[col].to_numpy()),
            torch.tensor(want[col].to_numpy()),
            rtol=1e-6,
            atol=1e-6,
        ), col
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n"] == N_SAMPLES and summary["samples_per_s"] > 0
    assert (out / "screening.html").exists()

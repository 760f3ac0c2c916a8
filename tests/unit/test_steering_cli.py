"""`personalens steer`, `chat --vector` and `steering-sweep` on a tiny HF model folder."""

import io
import json

import pytest
import torch

from personalens.cli.main import main
from personalens.engines.hf import BACKENDS
from personalens.vectors.control_vector import export_control_vector
from personalens.vectors.vector import PersonaVector


@pytest.fixture(scope="module")
def vector_file(tiny_hf_dir, tmp_path_factory):
    g = torch.Generator().manual_seed(0)
    v = PersonaVector(
        directions=torch.randn(3, 48, generator=g) * 4,
        model="my-llama-finetune",
        trait="evil",
        metadata={"best_layer": 1},
    )
    folder = tmp_path_factory.mktemp("vec")
    return v.save(folder / "evil")


def _run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_steer_prints_unsteered_and_steered(capsys, tiny_hf_dir, vector_file):
    code, out, err = _run(
        capsys,
        "steer",
        "--model", str(tiny_hf_dir),
        "--vector", str(vector_file),
        "--layer", "1",
        "--coeff", "8",
        "--prompt", "Hello there",
        "--prompt", "Tell me a story",
        "--max-new-tokens", "8",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["prompt"] for r in rows] == ["Hello there", "Tell me a story"]
    assert any(r["steered"] != r["unsteered"] for r in rows)
    assert rows[0]["steering"]["layers"] == [1]
    code, text, _ = _run(
        capsys,
        "steer", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
        "--coeff", "8", "--prompt", "Hi", "--max-new-tokens", "4",
    )  # fmt: skip
    assert code == 0 and "unsteered" in text and "layer 1" in text  # best layer by default


def test_steer_accepts_a_control_vector_gguf(capsys, tiny_hf_dir, vector_file, tmp_path):
    gguf = export_control_vector(PersonaVector.load(vector_file), tmp_path / "evil.gguf")
    code, out, err = _run(
        capsys,
        "steer", "--model", str(tiny_hf_dir), "--vector", str(gguf), "--layer", "2",
        "--coeff", "4", "--prompt", "Hi", "--max-new-tokens", "4", "--format", "json",
    )  # fmt: skip
    assert code == 0, err


def test_steer_errors_are_clear(capsys, tiny_hf_dir, vector_file, tmp_path):
    wide = PersonaVector(directions=torch.randn(3, 64), model="other", trait="evil")
    path = wide.save(tmp_path / "wide")
    code, _, err = _run(
        capsys, "steer", "--model", str(tiny_hf_dir), "--vector", str(path),
        "--layer", "1", "--coeff", "2", "--prompt", "Hi",
    )  # fmt: skip
    assert code == 2 and "personalens: error:" in err and "64" in err
    code, _, err = _run(
        capsys, "steer", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
        "--layer", "1", "--prompt", "Hi",
    )  # fmt: skip
    assert code == 2 and "--coeff" in err
    code, _, err = _run(
        capsys, "steer", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
        "--layer", "5", "--coeff", "1", "--prompt", "Hi",
    )  # fmt: skip
    assert code == 2 and "unknown layer 5" in err
    code, _, err = _run(
        capsys, "steer", "--model", str(tiny_hf_dir), "--vector", str(tmp_path),
        "--coeff", "1", "--prompt", "Hi",
    )  # fmt: skip
    assert code == 2 and "vector.json" in err


def test_chat_with_a_vector(capsys, monkeypatch, tiny_hf_dir, vector_file):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello\nHow are you?\n"))
    code, out, err = _run(
        capsys, "chat", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
        "--layer", "1", "--coeff", "6", "--max-new-tokens", "5", "--format", "jsonl",
    )  # fmt: skip
    assert code == 0, err
    assert len(out.splitlines()) == 2 and "steering:" in err


def test_steering_sweep_writes_table_and_figures(capsys, tiny_hf_dir, vector_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello\nWhat is new?\n")
    out_dir = tmp_path / "sweep"
    args = [
        "steering-sweep", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
        "--layers", "0", "2", "--coeffs", "0", "4", "--prompts-file", str(prompts),
        "--judge", "offline", "--max-new-tokens", "6", "--out", str(out_dir), "--quiet",
    ]  # fmt: skip
    code, out, err = _run(capsys, *args)
    assert code == 0, err
    for name in ("sweep.csv", "sweep.html", "heatmap.html", "sweep.json", "responses.jsonl"):
        assert (out_dir / name).exists(), name
    summary = json.loads((out_dir / "sweep.json").read_text())["summary"]
    assert {(r["layer"], r["coeff"]) for r in summary} == {(0, 0), (0, 4), (2, 0), (2, 4)}
    assert "trait" in out
    code, _, err = _run(capsys, "sweep-steer", *args[1:])  # the old name; resumes: nothing to do
    assert code == 0, err


def test_steer_backends_agree(capsys, tiny_hf_dir, vector_file):
    """--backend auto (the default) takes the HF engine for this Llama folder; tl and hf print
    the same greedy completions."""
    outs = {}
    for backend in BACKENDS:  # the CLI's choices spell out hf_backend.BACKENDS
        code, out, err = _run(
            capsys,
            "steer", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
            "--layer", "1", "--coeff", "8", "--prompt", "Hello there",
            "--max-new-tokens", "6", "--format", "json", "--backend", backend,
        )  # fmt: skip
        assert code == 0, err
        outs[backend] = out
    assert outs["tl"] == outs["hf"] == outs["auto"]
    with pytest.raises(SystemExit):
        main(["steer", "--model", str(tiny_hf_dir), "--vector", str(vector_file),
              "--prompt", "Hi", "--backend", "vllm"])  # fmt: skip
    assert "invalid choice: 'vllm'" in capsys.readouterr().err

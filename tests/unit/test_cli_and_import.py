import json
import subprocess
import sys


def _run(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "personalens", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def test_import_has_no_side_effects():
    code = (
        "import sys, personalens\n"
        "heavy = [m for m in ('torch', 'transformer_lens', 'transformers', 'plotly', 'sae_lens') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_cli_info_on_local_dir(tiny_hf_dir):
    out = _run(["info", "--model", str(tiny_hf_dir), "--device", "cpu"])
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("model", "n_layers", "d_model", "hook_template", "device", "dtype"):
        assert key in info
    assert info["n_layers"] == 3 and info["d_model"] == 48


def test_cli_chat_from_a_pipe(tiny_hf_dir):
    out = _run(
        [
            "chat",
            "--model",
            str(tiny_hf_dir),
            "--max-new-tokens",
            "4",
            "--system",
            "Be brief.",
            "--format",
            "jsonl",
        ],
        input="hello\n/reset\nsecond question\n/exit\nnot read\n",
    )
    assert out.returncode == 0, out.stderr
    replies = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["user"] for r in replies] == ["hello", "second question"]  # nothing for commands
    assert all(isinstance(r["assistant"], str) for r in replies)


def test_cli_errors_are_one_line(tmp_path):
    out = _run(["info", "--model", str(tmp_path / "missing" / "dir")])
    assert out.returncode == 2
    assert out.stderr.startswith("personalens: error: No such model path")
    assert "Traceback" not in out.stderr


def test_public_names_resolve():
    import personalens

    assert set(personalens.__all__) == {*personalens._EXPORTS, "__version__"}
    for name in personalens.__all__:
        assert getattr(personalens, name) is not None


def test_every_figure_is_exported():
    """Notebooks call figures as pl.plot_*: each public plotting function is a top-level name."""
    import personalens
    import personalens.plotting as plotting

    assert set(plotting.__all__) <= set(personalens.__all__)

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
    """The top level is the core (~30 names) plus one namespace per subpackage; every name
    resolves, each core name is defined in exactly one module."""
    import importlib

    import personalens

    assert set(personalens.__all__) == {*personalens._EXPORTS, *personalens._NAMESPACES}
    assert len(personalens.__all__) <= 35
    for name in personalens.__all__:
        assert getattr(personalens, name) is not None
    for name, module in personalens._EXPORTS.items():
        obj = getattr(importlib.import_module(module), name)
        assert getattr(obj, "__module__", module) == module, (name, obj.__module__)


def test_old_top_level_names_still_resolve_with_a_warning():
    import warnings

    import personalens

    for old, new in personalens._MOVED.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            value = getattr(personalens, old)
        assert value is not None
        assert any(issubclass(w.category, DeprecationWarning) for w in caught), old
        if new != "extract":
            assert value is getattr(getattr(personalens, new), old)


def test_every_figure_is_exported():
    """Notebooks call figures as pl.plot.*: every public figure of every plot module is in
    that namespace, as the same object."""
    import importlib
    import pkgutil

    import personalens.plot as plot

    for info in pkgutil.iter_modules(plot.__path__):
        module = importlib.import_module(f"personalens.plot.{info.name}")
        assert set(module.__all__) <= set(plot.__all__), info.name
        assert all(getattr(plot, n) is getattr(module, n) for n in module.__all__)

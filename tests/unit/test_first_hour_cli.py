"""A researcher's first hour with the CLI: a bad argument fails in a second, before torch or the
model loads; shipped vector and trait names work wherever a file does; one flag has one meaning
on every command, with help and defaults shown; old command lines keep working."""

import argparse
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from personalens.cli import common
from personalens.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
FAST_S = 3.0  # the budget for a bad command line, start-up included

# the commands that load and run the model: each takes --backend and --quiet
RUNS_MODEL = [
    "chat", "steer", "steering-sweep", "extract", "screen", "questionnaire", "decompose",
    "persona-space", "drift",
]  # fmt: skip
# enough arguments for each command to parse
REQUIRED = {
    "steering-sweep": ["--vector", "v", "--coeffs", "1", "--out", "o"],
    "steer": ["--vector", "v", "--prompt", "p"],
    "extract": ["--out", "o"],
    "layer-sweep": ["--run", "r"],
    "screen": ["--vector", "v", "--data", "d", "--out", "o"],
    "decompose": ["--vector", "v", "--sae", "s", "--out", "o"],
    "persona-space": ["--out", "o"],
    "judge-bench": ["--out", "o"],
    "drift": ["--axis", "a", "--out", "o"],
}
LAYER_COMMANDS = [
    "chat", "steer", "steering-sweep", "screen", "questionnaire", "decompose", "drift",
]  # fmt: skip


class ModelLoaded(Exception):
    pass


@pytest.fixture
def no_model(monkeypatch, tmp_path):
    """The model loader raises; the working directory is an empty temporary one."""

    def load(args):
        raise ModelLoaded

    monkeypatch.setattr(common, "load_model_from_args", load)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.jsonl").write_text(json.dumps({"prompt": "Hi", "answer": "Hello"}) + "\n")
    (tmp_path / "prompts.txt").write_text("Hello\n")
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "not_a_run").mkdir()
    return tmp_path


STEER = ["steer", "--prompt", "Hi"]
SWEEP = ["steering-sweep", "--vector", "evil", "--coeffs", "0", "4", "--out", "OUT"]
SCREEN = ["screen", "--out", "OUT"]
DECOMPOSE = ["decompose", "--vector", "evil", "--out", "OUT"]

BAD = [
    ([*STEER, "--vector", "evil"], "--coeff"),  # the 32 s
    ([*STEER, "--vector", "evli", "--coeff", "4"], "--vector evli"),
    ([*STEER, "--vector", "evil", "--coeff", "4", "--model", "gpt2"], "none is shipped for gpt2"),
    ([*STEER, "--vector", "missing/v.json", "--coeff", "4"], "--vector missing/v.json"),
    ([*STEER, "--vector", "missing.gguf", "--coeff", "4"], "--vector missing.gguf"),
    ([*STEER, "--vector", "not_a_run", "--coeff", "4"], "vector.json"),
    ([*STEER, "--vector", "v.pt", "--coeff", "4"], ".pt"),
    ([*STEER, "--vector", "evil", "--coeff", "4", "--model", "./no/model"], "No such model path"),
    (["chat", "--vector", "evli", "--coeff", "4"], "--vector evli"),
    (["chat", "--dynamic", "--vector", "evil=missing.json"], "--vector missing.json"),
    (["chat", "--dynamic", "--vector", "evil", "--backend", "hf"], "--backend hf"),
    ([*SWEEP, "--prompts-file", "missing.txt"], "--prompts-file missing.txt"),
    ([*SWEEP, "--prompts-file", "empty.txt"], "holds no prompt"),
    ([*SWEEP, "--trait", "evli"], "--trait evli"),
    ([*SWEEP, "--min-replies", "-1"], "--min-replies -1"),
    (["extract", "--trait", "evli", "--out", "OUT"], "--trait evli"),
    (["extract", "--trait-file", "missing.json", "--out", "OUT"], "--trait-file missing.json"),
    (["extract", "--out", "OUT"], "exactly one of --trait"),
    ([*SCREEN, "--vector", "evil", "--data", "missing.jsonl"], "--data missing.jsonl"),
    ([*SCREEN, "--vector", "evli", "--data", "data.jsonl"], "--vector evli"),
    (["questionnaire", "--name", "nope"], "--name nope"),
    (["questionnaire", "--file", "missing.json"], "--file missing.json"),
    (["questionnaire", "--backend", "tl"], "--backend tl"),
    ([*DECOMPOSE, "--sae", "missing"], "--sae missing"),
    ([*DECOMPOSE, "--sae", "embedded", "--run", "missing"], "--run missing"),
    ([*DECOMPOSE, "--sae", "embedded", "--corpus", "missing.txt", "--contexts"], "--corpus"),
    (["decompose", "--vector", "evli", "--sae", "embedded", "--out", "OUT"], "--vector evli"),
    (["info", "--model", "./no/model"], "No such model path"),
]


@pytest.mark.parametrize(("argv", "says"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_a_bad_command_line_fails_in_a_second_before_the_model(no_model, capsys, argv, says):
    start = time.perf_counter()
    code = main(argv)
    took = time.perf_counter() - start
    out = capsys.readouterr()
    assert code == 2, out.err
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("personalens: error: "), out.err
    assert says in lines[0]
    assert out.out == ""
    assert not (no_model / "OUT").exists()
    assert took < FAST_S, f"{took:.1f} s"


@pytest.mark.parametrize(
    "argv",
    [
        [*STEER, "--vector", "evil", "--coeff", "4"],
        [*STEER, "--vector", "evil", "--coeff", "4", "--model", "embedded", "--layers", "3"],
        ["chat", "--vector", "evil", "--coeff", "4"],
        ["chat", "--dynamic", "--vector", "evil=evil", "--vector", "calm"],
        [*SWEEP, "--trait", "evil", "--prompts-file", "prompts.txt"],
        ["extract", "--trait-file", "evil", "--judge", "offline", "--out", "OUT"],  # a name
        [*SCREEN, "--vector", "evil", "--data", "data.jsonl", "--layers", "3"],
        ["questionnaire", "--file", "big_five", "--vector", "evil", "--coeff", "1"],
        [*DECOMPOSE, "--sae", "embedded", "--contexts", "--corpus", "prompts.txt"],
    ],
)
def test_shipped_names_go_on_to_load_the_model(no_model, argv):
    with pytest.raises(ModelLoaded):
        main(argv)


def test_a_missing_coeff_fails_fast_from_the_shell():
    """The issue's command, as a researcher types it: no torch import, well under 3 s."""
    argv = [sys.executable, "-m", "personalens", "steer", "--vector", "evil", "--prompt", "Hi"]
    start = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT)
    took = time.perf_counter() - start
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "personalens: error: --mode add needs --coeff C (try --coeff 4 and adjust)"
    ]
    assert took < FAST_S, f"{took:.1f} s"


def test_bad_command_lines_import_no_heavy_library(tmp_path):
    code = (
        "import sys\n"
        "from personalens.cli.main import main\n"
        f"for argv in {[a for a, _ in BAD]!r}:\n"
        "    assert main(argv) == 2, argv\n"
        "heavy = ('torch', 'transformer_lens', 'transformers', 'numpy', 'pandas', 'sae_lens')\n"
        "print([m for m in heavy if m in sys.modules])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


# ----------------------------------------------------------------------------- one flag, one meaning


def _subparsers(parser: argparse.ArgumentParser):
    """(name, parser) of every command and sub-command, by its listed name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = [c.dest for c in action._choices_actions]
            for name in listed:
                sub = action.choices[name]
                yield name, sub
                yield from ((f"{name} {n}", p) for n, p in _subparsers(sub))


def test_every_flag_has_help_and_shows_its_default():
    for name, parser in _subparsers(build_parser()):
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help, (name, action.option_strings or action.dest)
        text = parser.format_help()
        for action in parser._actions:
            default = action.default
            if action.option_strings and isinstance(default, (int, float, str)):
                if not isinstance(default, bool) and argparse.SUPPRESS not in (
                    default,
                    action.help,
                ):
                    shown = f"(default: {default})" in " ".join(text.split())
                    assert shown or "default" in action.help, (name, action.option_strings)


@pytest.mark.parametrize(
    ("command", "tokens"),
    [("chat", 256), ("steer", 96), ("steering-sweep", 64), ("extract", 48), ("screen", 128)],
)
def test_max_new_tokens_says_its_default(command, tokens):
    parser = dict(_subparsers(build_parser()))[command]
    text = " ".join(parser.format_help().split())
    assert f"(default: {tokens})" in text


@pytest.mark.parametrize("command", RUNS_MODEL)
def test_every_command_that_runs_the_model_has_backend_and_quiet(command):
    args = build_parser().parse_args(
        [command, *REQUIRED.get(command, []), "--backend", "auto", "--quiet"]
    )
    assert args.backend == "auto" and args.quiet is True


@pytest.mark.parametrize("command", LAYER_COMMANDS)
def test_one_layer_flag_with_the_old_spelling_hidden(command):
    parser = build_parser()
    base = [command, *REQUIRED.get(command, [])]
    assert parser.parse_args(base).layer is None
    new = parser.parse_args([*base, "--layer", "3"]).layer
    assert parser.parse_args([*base, "--layers", "3"]).layer == new
    assert new in (3, [3])
    text = dict(_subparsers(parser))[command].format_help()
    assert "--layer L" in text and "--layers" not in text


def test_several_layers_where_a_command_takes_several():
    parser = build_parser()
    for command in ("steer", "steering-sweep", "decompose"):
        argv = [command, *REQUIRED[command]]
        assert parser.parse_args([*argv, "--layer", "10", "15"]).layer == [10, 15]
        assert parser.parse_args([*argv, "--layers", "10", "15"]).layer == [10, 15]


def test_positions_default_to_all_except_the_paper_sweep():
    parser = build_parser()
    assert parser.parse_args(["steer", *REQUIRED["steer"]]).positions == "all"
    assert parser.parse_args(["chat"]).positions == "all"
    assert parser.parse_args(["questionnaire"]).positions == "all"
    assert parser.parse_args(["steering-sweep", *REQUIRED["steering-sweep"]]).positions == (
        "response"
    )


def _readme_command_lines() -> list[list[str]]:
    """Every `personalens COMMAND ...` line of the README (continuations joined, optional
    [--flag value] groups taken, shell variables given a value)."""
    text = (ROOT / "README.md").read_text().replace("\\\n", " ")
    commands = set(dict(_subparsers(build_parser()))) | {"sweep", "sweep-steer"}
    lines = []
    for match in re.finditer(r"personalens ([a-z-]+)([^\n#]*)", text):
        if match.group(1) not in commands or "`" in match.group(0):
            continue
        rest = match.group(2).replace("[", " ").replace("]", " ").replace("$i", "0")
        rest = re.split(r"[&;|]", rest)[0]  # the shell's, not the command's
        lines.append([match.group(1), *shlex.split(rest)])
    return lines


def test_the_readme_command_lines_still_parse():
    lines = _readme_command_lines()
    assert len(lines) >= 15
    parser = build_parser()
    for argv in lines:
        parser.parse_args(argv)


# ----------------------------------------------------------------------------- decompose


def test_decompose_embedded_without_layer_takes_every_shipped_layer(tmp_path, capsys):
    pytest.importorskip("sae_lens")
    from personalens.sae.load import shipped_sae_layers

    layers = shipped_sae_layers()
    if not layers:
        pytest.skip("no SAE shipped")
    out = tmp_path / "dec"
    code = main(
        ["decompose", "--vector", "evil", "--sae", "embedded", "--k", "2", "--out", str(out)]
    )
    assert code == 0, capsys.readouterr().err
    rows = json.loads((out / "decomposition.json").read_text())["rows"]
    assert sorted({r["layer"] for r in rows}) == layers

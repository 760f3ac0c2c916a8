"""The `personalens` parser: one name per command, old names still run, --help stays light."""

import re
import subprocess
import sys

from personalens.cli.extraction_commands import cmd_layer_sweep
from personalens.cli.main import build_parser
from personalens.cli.steering_commands import cmd_steering_sweep

from .test_first_hour_cli import REQUIRED

COMMANDS = ["info", "chat", "steer", "steering-sweep", "traits", "extract", "layer-sweep",
            "screen", "questionnaire", "decompose", "judge-bench", "persona-space", "drift"]  # fmt: skip
OLD_NAMES = {"sweep": cmd_layer_sweep, "sweep-steer": cmd_steering_sweep}


def test_help_lists_each_command_once_by_its_name():
    text = build_parser().format_help()
    listed = [line.split()[0] for line in text.splitlines() if re.match(r"    \S", line)]
    assert listed == COMMANDS


def test_command_and_handler_share_a_name():
    parser = build_parser()
    for name in COMMANDS:
        required = REQUIRED.get(name, [])  # enough arguments for each command to parse
        args = parser.parse_args([name, *required])
        assert args.func.__name__ == "cmd_" + name.replace("-", "_"), name


def test_old_command_names_still_parse():
    parser = build_parser()
    assert parser.parse_args(["sweep", "--run", "r"]).func is OLD_NAMES["sweep"]
    args = parser.parse_args(["sweep-steer", "--vector", "v", "--coeffs", "0", "4", "--out", "o"])
    assert args.func is OLD_NAMES["sweep-steer"] and args.coeffs == [0.0, 4.0]


def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from personalens.cli.main import main\n"
        "try:\n"
        "    main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('torch', 'transformer_lens', 'transformers', 'numpy', 'pandas', 'plotly')\n"
        "print([m for m in heavy if m in sys.modules], file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stderr.strip() == "[]", out.stderr
    assert "layer-sweep" in out.stdout


def test_local_judge_parses_where_a_judge_is_chosen():
    parser = build_parser()
    for name in ("extract", "steering-sweep"):
        args = parser.parse_args([name, *REQUIRED[name], "--judge", "local"])
        assert args.judge == "local" and args.judge_model is None, name
        args = parser.parse_args([name, *REQUIRED[name], "--judge", "local", "--judge-model", "m"])
        assert args.judge_model == "m", name

"""The ``personalens`` command line: the parser, assembled from one
:class:`~personalens.cli.common.Command` (or ``add_*_parser`` function) per command, each next to
its handler in a ``*_commands`` module, and :func:`main`.

The CLI must start fast: heavy libraries are imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from personalens.cli.drift_commands import DRIFT
from personalens.cli.extraction_commands import EXTRACT, LAYER_SWEEP, add_traits_parser
from personalens.cli.judge_commands import JUDGE_BENCH
from personalens.cli.model_commands import CHAT, INFO
from personalens.cli.persona_commands import PERSONA_SPACE
from personalens.cli.sae_commands import DECOMPOSE
from personalens.cli.steering_commands import STEER, STEERING_SWEEP
from personalens.cli.study_commands import QUESTIONNAIRE, SCREEN
from personalens.errors import PersonaLensError

# in the order `personalens --help` lists them; each, called with the subparsers, adds its parser
COMMANDS = (
    INFO,
    CHAT,
    STEER,
    STEERING_SWEEP,
    add_traits_parser,
    EXTRACT,
    LAYER_SWEEP,
    SCREEN,
    QUESTIONNAIRE,
    DECOMPOSE,
    JUDGE_BENCH,
    PERSONA_SPACE,
    DRIFT,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="personalens", description="Persona vectors on TransformerLens."
    )
    # COMMAND, not the {a,b,...} argparse would spell: that would list the old command names
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add_parser in COMMANDS:
        add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PersonaLensError as exc:
        print(f"personalens: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

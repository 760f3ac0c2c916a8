"""The ``personalens`` command line: the parser, assembled from one ``add_*_parser`` per command
(each next to its handler in a ``*_commands`` module), and :func:`main`.

The CLI must start fast: heavy libraries are imported only by the command that runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from personalens.cli.extraction_commands import (
    add_extract_parser,
    add_layer_sweep_parser,
    add_traits_parser,
)
from personalens.cli.model_commands import add_chat_parser, add_info_parser
from personalens.cli.sae_commands import add_decompose_parser
from personalens.cli.steering_commands import add_steer_parser, add_steering_sweep_parser
from personalens.cli.study_commands import add_questionnaire_parser, add_screen_parser
from personalens.errors import PersonaLensError

# in the order `personalens --help` lists them
COMMANDS = (
    add_info_parser,
    add_chat_parser,
    add_steer_parser,
    add_steering_sweep_parser,
    add_traits_parser,
    add_extract_parser,
    add_layer_sweep_parser,
    add_screen_parser,
    add_questionnaire_parser,
    add_decompose_parser,
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

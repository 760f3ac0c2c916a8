"""``personalens drift``: persona drift over multi-turn scenario conversations, projected on an
axis turn by turn, optionally rerun under activation capping (``--cap "layers_A:B-pP"``).

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personalens.cli import common, flags, preflight
from personalens.errors import ArgumentError

Flag = flags.Flag

DRIFT_HELP = " ".join(
    [
        "persona drift: per-turn projection of the model's replies on an axis over multi-turn",
        "scenario conversations (emotional disclosure, meta-reflection, bounded tasks),",
        "uncapped and with --cap under activation capping; resumable",
    ]
)

DRIFT_FLAGS = (
    Flag(
        "--axis",
        "the axis: a PersonaVector file stem (.json/.safetensors), or " + flags.VECTOR_HELP,
        required=True,
    ),  # fmt: skip
    Flag("--out", "output directory (rerun the same command to resume)", required=True),
    Flag(
        "--cap",
        "capping config 'layers_A:B-pP': cap layers A..B-1 at the P percentile (a fraction) of "
        "the default assistant's projections; also runs the capped conversations",
    ),
    *flags.layer(
        "the layer the projections are read at (default: the axis's, else the middle)", many=False
    ),  # fmt: skip
    Flag("--kinds", "scenario kinds or .json files (default: every shipped kind)", nargs="+"),
    Flag("--max-conversations", "at most this many conversations per kind", type=int),
    Flag("--max-turns", "at most this many user turns per conversation", type=int),
    Flag(
        "--user",
        "scripted user turns, or an LLM-simulated user (the judge's API)",
        choices=["scripted", "llm"],
        default="scripted",
    ),  # fmt: skip
    *flags.judge(),
    *flags.generation({"--max-new-tokens": 64, "--batch-size": 16}),
)


def _check(args: argparse.Namespace) -> None:
    """Every flag checked before torch is imported."""
    for flag in ("max_conversations", "max_turns"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise ArgumentError(f"--{flag.replace('_', '-')} must be at least 1, got {value}")
    if args.cap is not None:
        from personalens.steering.capping import CappingConfig  # torch: after the cheap checks

        CappingConfig.parse(args.cap)
    if not Path(args.axis).is_dir():
        stem = Path(args.axis)
        if not any(p.exists() for p in (stem, stem.with_suffix(".json"))):
            preflight.check_vector(args.axis, args.model, flag="--axis")


def cmd_drift(args: argparse.Namespace) -> int:
    gen = common.generation_kwargs(args)
    _check(args)
    from personalens.model.generation import GenerationConfig
    from personalens.studies.persona_drift import load_drift_scenarios, persona_drift
    from personalens.vectors.resolve import load_vector

    scenarios = load_drift_scenarios(
        args.kinds, max_conversations=args.max_conversations, max_turns=args.max_turns
    )
    with common.holding_run_dirs([args.out]):
        model = common.load_model_from_args(args)
        axis = load_vector(args.axis, model)
        result = persona_drift(
            model,
            axis,
            scenarios,
            layer=args.layer,
            capping=args.cap,
            user=args.user,
            judge=common.judge_from_args(args),
            generation=GenerationConfig(temperature=0.0, progress=False, **gen),
            out=args.out,
            progress=not args.quiet,
        )
    _write_figure(result, Path(args.out))
    summary = result.summary()
    print(result.drift().to_string(index=False))
    if args.cap is not None:
        print(result.drift_removed().to_string(index=False))
        print(json.dumps({"capability": summary["capability"]}, indent=1))
    print(f"wrote {args.out}/summary.json, drift.json, drift.html")
    return 0


def _write_figure(result, out: Path) -> None:
    from personalens.plot.drift import plot_drift_trajectories
    from personalens.plot.style import save_html

    save_html(plot_drift_trajectories(result), out / "drift.html")


DRIFT = common.Command("drift", DRIFT_HELP, DRIFT_FLAGS, cmd_drift, runs_model=True)

"""``personalens steer`` (unsteered and steered completions side by side) and ``personalens
steering-sweep`` (judge steering at every layer and coefficient; old name ``sweep-steer``).

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import textwrap
from itertools import zip_longest
from pathlib import Path

from personalens._io import atomic_write_text
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag
from personalens.errors import ArgumentError

# ----------------------------------------------------------------------------- steer


# steer's own help of its generation flags
STEER_GENERATION_HELP = {
    "--max-new-tokens": "most tokens per reply (short: two replies side by side)"
}
STEER_FLAGS = (
    *flags.steering(required=True),
    Flag("--prompt", "user prompt (repeatable)", action="append", required=True),
    Flag("--system", "system prompt"),
    *flags.generation(
        {"--max-new-tokens": 96, "--temperature": 0.0, "--seed": 0}, help=STEER_GENERATION_HELP
    ),
    Flag(
        "--format",
        "text: the two replies side by side; json: one object per prompt",
        choices=["text", "json"],
        default="text",
    ),
)


def cmd_steer(args: argparse.Namespace) -> int:
    common.generation_kwargs(args)  # every flag is checked before torch is imported
    common.check_steering_args(args)
    from personalens.model.generation import generate

    config = common.generation_config(args, progress=False)
    model = common.load_model_from_args(args)
    plain = generate(model, args.prompt, config, system=args.system, backend=args.backend).responses
    handle = common.steering_from_args(model, args)
    try:
        steered = generate(
            model, args.prompt, config, system=args.system, backend=args.backend
        ).responses
    finally:
        handle.remove()
    desc = handle.plan.description
    label = f"steered ({desc['mode']}, layer {','.join(map(str, desc['layers']))}"
    label += (
        f", coeff {','.join(f'{c:g}' for c in desc['coeff'])})" if desc["mode"] == "add" else ")"
    )
    for prompt, a, b in zip(args.prompt, plain, steered):
        if args.format == "json":
            print(json.dumps({"prompt": prompt, "unsteered": a, "steered": b, "steering": desc}))
        else:
            print(f"\n>>> {prompt}\n")
            print(_side_by_side(a, b, ("unsteered", label)))
    return 0


STEER = common.Command(
    "steer",
    "print unsteered and steered completions side by side",
    STEER_FLAGS,
    cmd_steer,
    runs_model=True,
)


def _side_by_side(left: str, right: str, titles: tuple[str, str]) -> str:
    width = max(30, (shutil.get_terminal_size((120, 20)).columns - 3) // 2)

    def wrap(text: str) -> list[str]:
        lines: list[str] = []
        for para in text.splitlines() or [""]:
            lines.extend(textwrap.wrap(para, width) or [""])
        return lines

    rows = [f"{titles[0]:<{width}} | {titles[1]}", f"{'-' * width}-+-{'-' * width}"]
    for a, b in zip_longest(wrap(left), wrap(right), fillvalue=""):
        rows.append(f"{a:<{width}} | {b}")
    return "\n".join(rows)


# ----------------------------------------------------------------------------- steering sweep


STEERING_SWEEP_HELP = (
    "steer at every (layer, coeff), judge trait and coherence; write table and figures"
)


STEERING_SWEEP_FLAGS = (
    *flags.steering(required=True, sweep=True),
    Flag("--coeffs", "coefficients (0 = unsteered)", type=float, nargs="+", required=True),
    Flag("--out", "output directory (rerun to resume)", required=True),
    Flag(
        "--trait",
        "trait to judge: a shipped trait name or a trait file (default: the vector's trait)",
    ),
    Flag(
        "--prompts-file", "one prompt per line (default: all held-out questions, see --min-replies)"
    ),
    Flag(
        "--min-replies",
        "with the held-out questions (no --prompts-file): answer each often enough that every "
        "(layer, coeff) cell holds this many replies (sampled at temperature 1 when --temperature "
        "is 0); 0: --n-per-prompt replies each",
        type=int,
        default=20,
    ),
    Flag("--system", "system prompt for every prompt"),
    *flags.judge(),
    *flags.generation(
        {
            "--n-per-prompt": 1,
            "--max-new-tokens": 64,
            "--temperature": 0.0,
            "--seed": 0,
            "--batch-size": 32,
        },
        help={
            "--max-new-tokens": "most tokens per reply, in every (layer, coeff) cell (as the "
            "Python steering_sweep: many cells are generated and judged)",
            "--n-per-prompt": "replies per prompt in every cell",
        },
    ),
    *flags.SHARDS,
)


def cmd_steering_sweep(args: argparse.Namespace) -> int:
    common.generation_kwargs(args)  # every flag is checked before torch is imported
    common.check_steering_args(args)
    if args.trait:
        preflight.check_file_or_shipped("--trait", args.trait, "traits", "trait")
    prompts = None
    if args.prompts_file:
        prompts = _read_prompts(preflight.check_file("--prompts-file", args.prompts_file))
        if not prompts:
            raise ArgumentError(f"--prompts-file {args.prompts_file}: holds no prompt")
    if args.min_replies < 0:
        raise ArgumentError(
            f"--min-replies {args.min_replies}: must be 0 (one reply per question and "
            "--n-per-prompt) or more"
        )
    from personalens.steering.resolve import resolve_layers
    from personalens.studies.steering_sweep import steering_sweep
    from personalens.vectors.resolve import load_vector

    generation = common.generation_config(args)
    judge = common.judge_from_args(args)
    shard = common.shard_from_args(args)
    with common.holding_run_dirs([args.out], shard):
        model = common.load_model_from_args(args)
        vector = load_vector(args.vector, model)
        layers = args.layer
        if layers is None:
            # the vector's steering_layer, else the middle layer (not the late best_layer)
            layers = resolve_layers(model, vector, None)
        result = steering_sweep(
            model,
            vector,
            prompts,
            layers=layers,
            min_replies=args.min_replies,
            coeffs=args.coeffs,
            trait=args.trait,
            judge=judge,
            system=args.system,
            generation=generation,
            mode=args.mode,
            positions=args.positions,
            coeff_scale=args.coeff_scale,
            out=args.out,
            progress=not args.quiet,
            backend=args.backend,
            shard=shard,
        )
        if common.is_follower(shard, "the tables and figures"):
            return 0
        _write_steering_sweep(result, Path(args.out))
        return 0


STEERING_SWEEP = common.Command(
    "steering-sweep",
    STEERING_SWEEP_HELP,
    STEERING_SWEEP_FLAGS,
    cmd_steering_sweep,
    old_names=("sweep-steer",),
    runs_model=True,
)


def _read_prompts(path: Path) -> list[str]:
    """The non-blank lines of ``path``, stripped."""
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _write_steering_sweep(result, out: Path) -> None:
    """sweep.csv and the two figures; print the table."""
    from personalens.plot.steering import plot_steering_heatmap, plot_steering_sweep
    from personalens.plot.style import save_html

    table = result.summary()
    atomic_write_text(out / "sweep.csv", table.to_csv(index=False))
    save_html(plot_steering_sweep(result), out / "sweep.html")
    save_html(plot_steering_heatmap(result), out / "heatmap.html")
    print(table.to_string(index=False, float_format=lambda x: f"{x:.1f}"))
    print(f"\nwrote {out / 'sweep.csv'}, {out / 'sweep.html'}, {out / 'heatmap.html'}")

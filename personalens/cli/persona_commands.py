"""``personalens persona-space``: role vectors, the Assistant Axis and the PCA of the persona
space, resumable in ``--out``.

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from personalens._validate import check_count
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag

PERSONA_SPACE_HELP = (
    "the persona space and its Assistant Axis: generate under many role system prompts and the "
    "default assistant's, judge role adherence 0-3, role vectors from fully-in-role replies, "
    "axis = mean(default) - mean(roles), PCA per layer; resumable"
)


PERSONA_SPACE_FLAGS = (
    Flag("--out", "output directory (rerun the same command to resume)", required=True),
    Flag(
        "--roles",
        "shipped role names, role files, or one folder of role files (upstream's "
        "data/roles/instructions loads unchanged) (default: the 70 shipped roles)",
        nargs="+",
    ),
    Flag(
        "--questions",
        'shared questions: a .jsonl of {"question": ...} lines or a .json list '
        "(default: the 40 shipped ones)",
    ),
    Flag(
        "--max-roles",
        "roles to run, spread over the categories (0 = all)",
        type=int,
        default=40,
    ),
    Flag("--max-questions", "shared questions per prompt", type=int, default=3),
    Flag("--n-prompts", "system prompts per role", type=int, default=2),
    *flags.generation(
        {
            "--max-new-tokens": 48,
            "--temperature": 0.7,
            "--top-p": 0.9,
            "--seed": 0,
            "--batch-size": 64,
        }
    ),
    *flags.judge(),
    *flags.SHARDS,
)


def cmd_persona_space(args: argparse.Namespace) -> int:
    """Run (or resume) the pipeline, write the figures and print the headline numbers."""
    gen = common.generation_kwargs(args)  # every flag is checked before torch is imported
    check_count("--max-roles", args.max_roles, minimum=0, what="roles (0 = all)")
    check_count("--max-questions", args.max_questions, what="shared questions per prompt")
    check_count("--n-prompts", args.n_prompts, what="system prompts per role")
    if args.questions is not None:
        preflight.check_file("--questions", args.questions, "question file")
    preflight.model_name_hint(args.model)  # a missing --model path
    from personalens.studies.persona_space.pipeline import persona_space

    roles = args.roles
    if roles is not None and len(roles) == 1 and Path(roles[0]).is_dir():
        roles = roles[0]
    shard = common.shard_from_args(args)
    with common.holding_run_dirs([args.out], shard):
        model = common.load_model_from_args(args)
        result = persona_space(
            model,
            out=args.out,
            roles=roles,
            max_roles=args.max_roles or None,
            max_questions=args.max_questions,
            judge=common.judge_from_args(args),
            questions=args.questions,
            progress=not args.quiet,
            backend=args.backend,
            shard=shard,
            n_prompts=args.n_prompts,
            max_new_tokens=gen["max_new_tokens"],
            temperature=gen["temperature"],
            top_p=gen["top_p"],
            seed=gen["seed"],
            batch_size=gen["batch_size"],
        )
        if common.is_follower(shard, "the axis, the summary and the figures"):
            return 0
        _write_figures(result, Path(args.out))
        _print_summary(result, Path(args.out))
    return 0


PERSONA_SPACE = common.Command(
    "persona-space", PERSONA_SPACE_HELP, PERSONA_SPACE_FLAGS, cmd_persona_space, runs_model=True
)


def _write_figures(result, out: Path) -> None:
    from personalens.plot.persona_space import (
        plot_persona_layers,
        plot_persona_space,
        plot_persona_variance,
    )
    from personalens.plot.style import save_html

    save_html(plot_persona_space(result), out / "persona_space.html")
    save_html(plot_persona_variance(result), out / "variance.html")
    save_html(plot_persona_layers(result), out / "layers.html")


def _print_summary(result, out: Path) -> None:
    s = result.summary
    p = result.at()
    print(
        f"{s['n_roles']} roles ({s['n_roles_fallback']} by the fallback rule), "
        f"{s['n_replies']} replies, adherence counts {s['adherence_counts']}"
    )
    print(
        f"layer {p.layer}: PC1 explains {p.explained_variance_ratio[0]:.1%}, cos(PC1, axis) = "
        f"{p.pc1_axis_cosine:.3f}, default at rank {p.default_pc1_rank} of "
        f"{s['n_roles'] + 1} on PC1"
    )
    print(f"axis: {out / 'axis'} (PersonaVector.load), {out / 'axis.pt'}; summary.json, figures")

"""``personalens judge-bench``: how far to trust a judge, on the shipped labelled replies
(:mod:`personalens.studies.judge_bench`); torch is imported only when the command runs."""

from __future__ import annotations

import argparse

from personalens._validate import check_count
from personalens.cli import common, flags
from personalens.cli.flags import Flag

JUDGE_BENCH_HELP = " ".join(
    [
        "score the shipped judge benchmark (labelled replies, hard cases included) with a",
        "judge; per trait: AUC with a bootstrap CI, accuracy at the filter threshold, mean",
        "score per label; resumable",
    ]
)

JUDGE_BENCH_FLAGS = (
    Flag(
        "--judge",
        "offline: sentence embeddings; openai: an OpenAI-compatible LLM (--judge-base-url, "
        "--judge-model); local: the logprob judge on a local model (--judge-model, default: the "
        "embedded model)",
        choices=["offline", "openai", "local"],
        default="offline",
    ),
    *flags.judge(choose=False),
    Flag(
        "--out",
        "output directory: summary.json, summary.md, scores.jsonl (rerun to resume)",
        required=True,
    ),
    Flag("--traits", "benchmark traits to score (default: all)", nargs="+"),
    Flag(
        "--no-anchors",
        "drop each trait's judge_anchors first, as for a trait file in the Persona Vectors "
        "repository's shape (what the offline judge falls back to)",
        action="store_true",
    ),
    Flag("--n-boot", "bootstrap resamples of each AUC interval (0: none)", type=int, default=1000),
    *flags.QUIET,
)


def cmd_judge_bench(args: argparse.Namespace) -> int:
    check_count("--n-boot", args.n_boot, minimum=0)
    from personalens.studies.judge_bench import run_judge_bench

    with common.holding_run_dirs([args.out]):
        judge = common.judge_from_args(args)
        result = run_judge_bench(
            judge,
            out=args.out,
            traits=args.traits,
            anchors=not args.no_anchors,
            n_boot=args.n_boot,
            progress=not args.quiet,
        )
    print(result.table())
    print(f"\nwrote summary.json, summary.md and scores.jsonl in {args.out}")
    return 0


JUDGE_BENCH = common.Command("judge-bench", JUDGE_BENCH_HELP, JUDGE_BENCH_FLAGS, cmd_judge_bench)

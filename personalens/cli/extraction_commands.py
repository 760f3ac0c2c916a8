"""``personalens traits`` (list, show, or write one with an LLM), ``personalens extract`` (a persona
vector into a resumable run directory) and ``personalens layer-sweep`` (per-layer AUC of finished
runs; old name ``sweep``).

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from personalens._validate import check_count, check_number, check_pairs
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag
from personalens.errors import ArgumentError

# the summary.json keys `extract` prints
EXTRACT_SUMMARY_KEYS = (
    "trait model judge n_pos n_neg best_layer best_auc best_layer_neutral best_auc_neutral "
    "timings_s"
).split()

TRAIT_HINT = (
    ". Give a trait file, or write one with `personalens traits new NAME --description ...`"
)

# ----------------------------------------------------------------------------- traits


TRAITS_NEW_FLAGS = (
    Flag("name", "the new trait's name"),
    Flag("--description", "what the trait is, in a sentence or two", required=True),
    Flag("--out", "output path (default: traits/NAME.json)"),
    Flag("--base-url", "OpenAI-compatible base URL (env PERSONALENS_JUDGE_BASE_URL)"),
    Flag("--judge-model", "model name (env PERSONALENS_JUDGE_MODEL)"),
    Flag("--force", "overwrite an existing --out file", action="store_true"),
)


def add_traits_parser(sub) -> None:
    p = common.add_command(
        sub, "traits", help="list the shipped traits; `traits new` writes one with an LLM"
    )
    p.set_defaults(func=cmd_traits, traits_command=None)
    tsub = p.add_subparsers(dest="traits_command")
    show = tsub.add_parser("show", help="print a trait file", formatter_class=common.HelpFormatter)
    show.add_argument("name", help="a shipped trait name or a trait file")
    new = tsub.add_parser(
        "new",
        help="write a new trait file with an LLM (OpenAI-compatible API)",
        formatter_class=common.HelpFormatter,
    )
    flags.add_flags(new, TRAITS_NEW_FLAGS)


def cmd_traits(args: argparse.Namespace) -> int:
    from personalens.extraction.traits import list_traits, load_trait

    if args.traits_command == "new":
        return cmd_traits_new(args)
    if args.traits_command == "show":
        print(json.dumps(load_trait(args.name).to_dict(), indent=2, ensure_ascii=False))
        return 0
    for name in list_traits():
        trait = load_trait(name)
        extract_q, eval_q = trait.split_questions()
        print(
            f"{name:18s} {trait.n_pairs} pairs, {len(extract_q)}+{len(eval_q)} questions  "
            f"{trait.description}"
        )
    return 0


def cmd_traits_new(args: argparse.Namespace) -> int:
    from personalens.extraction.trait_writer import generate_trait_artifact
    from personalens.extraction.traits import save_trait
    from personalens.judges.openai_client import APIConfig

    config = APIConfig.from_env(base_url=args.base_url, model=args.judge_model)
    data = generate_trait_artifact(args.name, args.description, config=config)
    out = Path(args.out) if args.out else Path("traits") / f"{args.name}.json"
    if out.exists() and not args.force:
        print(f"personalens: error: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    save_trait(data, out)
    print(str(out))
    return 0


# ----------------------------------------------------------------------------- extract


EXTRACT_FLAGS = (
    Flag("--trait", "a shipped trait name (see `personalens traits`) or a trait file"),
    Flag("--trait-file", "a trait JSON file (or a shipped trait name)"),
    Flag(
        "--trait-eval-file",
        "a Persona Vectors trait_data_eval/<trait>.json whose questions are held out (found "
        "by itself beside an upstream trait_data_extract file)",
    ),
    Flag("--out", "run directory (rerun the same command to resume)", required=True),
    *flags.judge(),
    *flags.generation(
        {
            "--n-per-question": 1,
            "--max-new-tokens": 48,
            "--temperature": 0.8,
            "--seed": 0,
            "--batch-size": 32,
        },
        help={
            "--n-per-question": "replies per question and instruction side",
            "--max-new-tokens": "most tokens per reply (as the Python ExtractionConfig: the "
            "judge and the response average need only short replies)",
        },
    ),
    Flag(
        "--threshold",
        "judge score (0-100) a positive reply must reach; a negative one must stay under "
        "100 minus it",
        type=float,
        default=50.0,
    ),
    Flag("--pairs", "instruction pairs to use (default all)", type=int, nargs="*"),
    Flag("--max-questions", "use the first N questions of each split", type=int),
    *flags.SHARDS,
)


def cmd_extract(args: argparse.Namespace) -> int:
    if bool(args.trait) == bool(args.trait_file):
        raise ArgumentError("give exactly one of --trait NAME or --trait-file PATH")
    settings = _extraction_settings(args)  # every flag is checked before torch is imported
    flag = "--trait-file" if args.trait_file else "--trait"
    preflight.check_file_or_shipped(
        flag, args.trait_file or args.trait, "traits", "trait", TRAIT_HINT
    )
    if args.trait_eval_file:
        preflight.check_file("--trait-eval-file", args.trait_eval_file, "trait eval file")
    preflight.model_name_hint(args.model)  # a missing --model path
    from personalens.extraction.config import ExtractionConfig
    from personalens.extraction.pipeline import extract
    from personalens.extraction.traits import load_trait

    config = ExtractionConfig(**settings)
    trait = load_trait(args.trait_file or args.trait, eval_file=args.trait_eval_file)
    bad = [i for i in config.pairs or () if i >= trait.n_pairs]
    if bad:
        raise ArgumentError(
            f"--pairs {' '.join(map(str, args.pairs))}: pair(s) {bad} out of range; the trait "
            f"{trait.name!r} has {trait.n_pairs} instruction pairs, numbered 0..{trait.n_pairs - 1}"
        )
    judge = common.judge_from_args(args)
    shard = common.shard_from_args(args)
    with common.holding_run_dirs([args.out], shard):
        model = common.load_model_from_args(args)
        result = extract(
            model,
            trait,
            judge,
            config,
            run_dir=args.out,
            progress=not args.quiet,
            backend=args.backend,
            shard=shard,
        )
        print(json.dumps({k: result.summary[k] for k in EXTRACT_SUMMARY_KEYS}))
        return 0


EXTRACT = common.Command(
    "extract",
    "extract a persona vector into a resumable run directory",
    EXTRACT_FLAGS,
    cmd_extract,
    runs_model=True,
)


def _extraction_settings(args: argparse.Namespace) -> dict:
    """The :class:`~personalens.extraction.config.ExtractionConfig` keywords of the flags, each
    checked (an :class:`~personalens.errors.ArgumentError` naming the flag); imports nothing."""
    gen = common.generation_kwargs(args)
    pairs = check_pairs("--pairs", args.pairs) if args.pairs else None  # bare --pairs: all
    if args.max_questions is not None:
        check_count(
            "--max-questions", args.max_questions, what="use the first N questions of each split"
        )
    return {
        "n_per_question": gen["n"],
        "max_new_tokens": gen["max_new_tokens"],
        "temperature": gen["temperature"],
        "seed": gen["seed"],
        "threshold": check_number("--threshold", args.threshold, lo=0, hi=100, what="judge score"),
        "pairs": pairs,
        "generation_batch_size": gen["batch_size"],
        "max_questions": args.max_questions,
    }


# ----------------------------------------------------------------------------- layer sweep


LAYER_SWEEP_HELP = (
    "per-layer AUC with bootstrap CIs of finished extraction runs (JSON + HTML figure)"
)


LAYER_SWEEP_FLAGS = (
    Flag(
        "--run",
        "extraction run directory (several overlay their traits in one figure)",
        action="extend",
        nargs="+",
        required=True,
        metavar="DIR",
    ),
    Flag(
        "--variants",
        "response_avg, prompt_avg and/or last_prompt_token (default: all three)",
        nargs="+",
        choices=["response_avg", "prompt_avg", "last_prompt_token"],
        metavar="VARIANT",
    ),
    Flag("--n-boot", "bootstrap resamples (0: no CIs)", type=int, default=1000),
    Flag("--ci", "interval coverage", type=float, default=0.95),
    Flag("--seed", "bootstrap seed", type=int, default=0),
    Flag(
        "--split",
        "heldout: the samples summary.json's layer_auc uses; extract: the kept extraction "
        "pairs (in-sample)",
        choices=["heldout", "extract"],
        default="heldout",
    ),
    Flag(
        "--out",
        "output directory (default: the run directory; with several runs, each run's "
        "JSON goes to its own directory and the figure to their common parent)",
    ),
)


def cmd_layer_sweep(args: argparse.Namespace) -> int:
    """Per-layer AUC (with bootstrap CIs) of finished extraction runs: JSON, HTML and best layers."""
    from personalens.plot.layer_sweep import plot_layer_sweep
    from personalens.plot.style import save_html
    from personalens.studies.layer_sweep import layer_sweep

    runs = [Path(r) for r in args.run]
    results = [
        layer_sweep(
            run,
            variants=args.variants,
            n_boot=args.n_boot,
            ci=args.ci,
            seed=args.seed,
            split=args.split,
        )
        for run in runs
    ]  # every run is read (and may fail) before anything is written
    labels = [r.trait for r in results]
    if len(set(labels)) < len(labels):
        labels = [f"{r.trait} ({run.name})" for r, run in zip(results, runs)]
    json_paths, html_path = _layer_sweep_paths(runs, Path(args.out) if args.out else None)
    for result, path in zip(results, json_paths):
        result.save(path)
    first = results[0]
    variant = "response_avg" if "response_avg" in first.variants else first.variants[0]
    save_html(plot_layer_sweep(dict(zip(labels, results)), variant), html_path)
    width = max(len(label) for label in labels)
    for label, result in zip(labels, results):
        readings = [(False, "with system prompt")]
        if result.neutral is not None:
            readings.append((True, "reply only"))
        for v in result.variants:
            for neutral, reading in readings:
                b = result.best(v, neutral=neutral)
                ci = f" [{b['auc_ci'][0]:.3f}, {b['auc_ci'][1]:.3f}]" if b["auc_ci"] else ""
                print(
                    f"{label:<{width}}  {v:<17}  {reading:<18}  best layer {b['layer']:>3}  "
                    f"AUC {b['auc']:.3f}{ci}  d {b['cohens_d']:.2f}  (n {b['n_pos']} pos / "
                    f"{b['n_neg']} neg, {result.evaluated_on})"
                )
        if result.note:
            print(f"{label}: {result.note}")
    print(f"wrote {', '.join(str(p) for p in json_paths)}, {html_path}")
    return 0


LAYER_SWEEP = common.Command(
    "layer-sweep", LAYER_SWEEP_HELP, LAYER_SWEEP_FLAGS, cmd_layer_sweep, old_names=("sweep",)
)


def _layer_sweep_paths(runs: list[Path], out: Path | None) -> tuple[list[Path], Path]:
    """Where each run's layer_sweep JSON and the one figure go (see ``--out``)."""
    if len(runs) == 1:
        return [(out or runs[0]) / "layer_sweep.json"], (out or runs[0]) / "layer_sweep.html"
    if out is not None:
        names = [run.resolve().name for run in runs]
        if len(set(names)) < len(names):
            names = [f"{n}_{i + 1}" for i, n in enumerate(names)]
        json_paths = [out / f"layer_sweep_{n}.json" for n in names]
    else:
        json_paths = [run / "layer_sweep.json" for run in runs]
    common = Path(os.path.commonpath([str(run.resolve()) for run in runs]))
    return json_paths, (out or common) / "layer_sweep.html"

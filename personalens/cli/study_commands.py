"""``personalens screen`` (ΔP of every sample of one or more datasets) and ``personalens
questionnaire`` (a Likert questionnaire's per-dimension scores, optionally under steering).

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from personalens._io import atomic_write_text
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag
from personalens.errors import PersonaLensError

# ----------------------------------------------------------------------------- screening (ΔP)


SCREEN_HELP = (
    "score dataset samples by projection difference ΔP (dataset reply minus the "
    "model's own, on the persona vector); resumable"
)


# screen's own help of its generation flags
SCREEN_GENERATION_HELP = {
    "--max-new-tokens": "length of the model's own (greedy) reply to each prompt (as the Python "
    "screen)",
    "--batch-size": "samples generated and read together",
}
SCREEN_FLAGS = (
    Flag("--vector", flags.VECTOR_HELP, required=True),
    Flag(
        "--data",
        ".jsonl (chat 'messages', last = the response; or 'prompt'/'answer') or .csv "
        "('prompt', 'answer'; optional 'id', 'system'). Several: one subfolder each, one "
        "overlaid histogram",
        action="extend",
        nargs="+",
        required=True,
    ),
    *flags.layer("the one layer to project on (default: the vector's best layer)", many=False),
    Flag("--out", "output directory (rerun the same command to resume)", required=True),
    *flags.generation({"--max-new-tokens": 128, "--batch-size": 16}, help=SCREEN_GENERATION_HELP),
    *flags.SHARDS,
)


def cmd_screen(args: argparse.Namespace) -> int:
    """ΔP of every sample of one or more datasets; tables, summaries and an overlay histogram."""
    gen = common.generation_kwargs(args)  # every flag is checked before torch is imported
    files = [preflight.check_file("--data", f, "dataset file") for f in args.data]
    preflight.check_vector(args.vector, args.model)
    preflight.model_name_hint(args.model)  # a missing --model path
    from personalens.model.generation import GenerationConfig
    from personalens.studies.screening import screen
    from personalens.studies.screening_data import load_screening_data
    from personalens.vectors.resolve import load_vector

    for f in files:  # every file parses (and may fail) before the model loads
        load_screening_data(f)
    names = [f.stem for f in files]
    if len(set(names)) < len(names):
        names = [f"{n}_{i + 1}" for i, n in enumerate(names)]
    out = Path(args.out)
    dirs = [out] if len(files) == 1 else [out / n for n in names]
    shard = common.shard_from_args(args)
    with common.holding_run_dirs(dirs, shard):
        model = common.load_model_from_args(args)
        vector = load_vector(args.vector, model)
        layer = common.layer_or_best(vector, args.layer, "--layer L")
        generation = GenerationConfig(max_new_tokens=gen["max_new_tokens"], temperature=0.0)
        results = {}
        for name, f, d in zip(names, files, dirs):
            results[name] = screen(
                model,
                vector,
                f,
                layer=layer,
                out=d,
                generation=generation,
                batch_size=gen["batch_size"],
                name=name,
                progress=not args.quiet,
                backend=args.backend,
                shard=shard,
            )
        if common.is_follower(shard, "the tables and the figure"):
            return 0
        _write_screening(results, dirs, out)
        return 0


SCREEN = common.Command("screen", SCREEN_HELP, SCREEN_FLAGS, cmd_screen, runs_model=True)


def _write_screening(results: dict, dirs: list[Path], out: Path) -> None:
    """The overlay histogram (and with several datasets a table of them); print each summary."""
    from personalens.plot.screening import plot_screening_histogram
    from personalens.plot.style import save_html

    html = out / "screening.html"
    save_html(plot_screening_histogram(results), html)
    if len(results) > 1:
        import pandas as pd

        table = pd.DataFrame([{"dataset": n, **r.summary()} for n, r in results.items()])
        table = table.drop(columns=["name", "quantiles"])
        atomic_write_text(out / "datasets.csv", table.to_csv(index=False))
    for (name, result), d in zip(results.items(), dirs):
        top = ", ".join(str(i) for i in result.top(5)["id"])
        print(
            f"{name}: n={len(result)} mean ΔP {result.mean:+.4g} (std {result.std:.4g}, layer "
            f"{result.layer}); top 5 ids: {top}  [{d / 'scores.csv'}]"
        )
    print(f"wrote {html}")


# ----------------------------------------------------------------------------- questionnaires


QUESTIONNAIRE_HELP = (
    "answer a Likert questionnaire (default: the shipped Big Five items) and print "
    "per-dimension scores as one JSON object"
)


# questionnaire's own help of its generation flags
QUESTIONNAIRE_GENERATION_HELP = {
    "--max-new-tokens": "--method generate/judge: most tokens per reply (short: an answer on the "
    "scale)",
    "--batch-size": "items scored together",
}
QUESTIONNAIRE_FLAGS = (
    Flag("--file", "a questionnaire JSON file (or a shipped questionnaire name)"),
    Flag("--name", "a shipped questionnaire (or a questionnaire file) (default: big_five)"),
    Flag("--system", "system prompt for every item"),
    Flag(
        "--method",
        "logprob: next-token probabilities of the scale answers (no judge); generate: "
        "greedy reply parsed strictly (unparseable = NaN); judge: reply rated by an "
        "OpenAI-compatible LLM judge; likelihood: mean log-prob of each statement as the "
        "model's self-description, scored per dimension as forward - reverse (nats/token, "
        "not on the Likert scale)",
        choices=["logprob", "generate", "judge", "likelihood"],
        default="logprob",
    ),
    *flags.judge(choose=False),
    *flags.generation(
        {"--max-new-tokens": 32, "--batch-size": 16}, help=QUESTIONNAIRE_GENERATION_HELP
    ),
    *flags.steering(required=False),
)


def cmd_questionnaire(args: argparse.Namespace) -> int:
    """One JSON object: the per-dimension scores, then `_stats` and `_meta`."""
    if args.file and args.name:
        raise PersonaLensError("give --file PATH or --name NAME, not both")
    gen = common.generation_kwargs(args)  # every flag is checked before torch is imported
    common.check_steering_args(args)
    common.check_backend(args, "questionnaire")
    flag = "--file" if args.file else "--name"
    preflight.check_file_or_shipped(
        flag, args.file or args.name or "big_five", "questionnaires", "questionnaire"
    )
    # the questionnaire's contents are checked before the model loads
    from personalens.judges.factory import make_judge
    from personalens.studies.personality.questionnaire import score_questionnaire
    from personalens.studies.personality.questionnaire_file import load_questionnaire

    questionnaire = load_questionnaire(args.file or args.name or "big_five")
    model = common.load_model_from_args(args)
    steering = common.steering_from_args(model, args, plan_only=True) if args.vector else None
    judge = None
    if args.method == "judge":
        judge = make_judge("openai", base_url=args.judge_base_url, model=args.judge_model)
    result = score_questionnaire(
        model,
        questionnaire,
        steering=steering,
        system=args.system,
        method=args.method,
        batch_size=gen["batch_size"],
        max_new_tokens=gen["max_new_tokens"],
        judge=judge,
    )
    full = result.to_dict()
    out = dict(full["scores"])  # dimension names are lowercase identifiers: no clash with _keys
    out["_stats"] = full["dimensions"]
    out["_meta"] = {
        "questionnaire": result.questionnaire,
        "method": result.method,
        "mean_scale_mass": full["mean_scale_mass"],
        **{k: v for k, v in result.settings.items() if k != "scale"},
    }
    print(json.dumps(out))
    return 0


QUESTIONNAIRE = common.Command(
    "questionnaire", QUESTIONNAIRE_HELP, QUESTIONNAIRE_FLAGS, cmd_questionnaire, runs_model=True
)

"""The ``personalens`` command line. Heavy libraries are imported only by the command that runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from .errors import PersonaLensError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model",
        default=None,
        help="TransformerLens model name, local HF directory or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct, offline)",
    )
    p.add_argument(
        "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
    p.add_argument(
        "--dtype", default=None, help="float32, bfloat16, float16 (default: fp32 on CPU)"
    )


def _load(args: argparse.Namespace):
    from .models import load_model

    return load_model(args.model, device=args.device, dtype=args.dtype)


def cmd_info(args: argparse.Namespace) -> int:
    from .models import model_info

    print(json.dumps(model_info(_load(args))))
    return 0


CHAT_HELP = "commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit"


def cmd_chat(args: argparse.Namespace) -> int:
    from .chat import build_messages
    from .generation import GenerationConfig, generate

    model = _load(args)
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        progress=False,
    )
    interactive = sys.stdin.isatty()
    system = args.system
    history: list[dict[str, str]] = []
    if interactive:
        print(f"personalens chat with {model.cfg.model_name}. {CHAT_HELP}", file=sys.stderr)
    while True:
        if interactive:
            print("you> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text in {"/exit", "/quit"}:
            break
        if text == "/reset":
            history = []
            continue
        if text.startswith("/system"):
            system = text.removeprefix("/system").strip() or None
            history = []
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]!r}; {CHAT_HELP}", file=sys.stderr)
            continue
        messages = build_messages(text, system=system, history=history)
        reply = generate(model, [messages], config).responses[0]
        history = [m for m in messages if m["role"] != "system"]
        history.append({"role": "assistant", "content": reply})
        if args.format == "jsonl":
            print(json.dumps({"user": text, "assistant": reply}), flush=True)
        else:
            print(("assistant> " if interactive else "") + reply, flush=True)
    return 0


def cmd_traits(args: argparse.Namespace) -> int:
    from .traits import list_traits, load_trait

    if args.traits_command == "new":
        return cmd_traits_new(args)
    if args.traits_command == "show":
        print(json.dumps(load_trait(args.name).to_dict(), indent=2, ensure_ascii=False))
        return 0
    for name in list_traits():
        trait = load_trait(name)
        extract_q, eval_q = trait.split_questions()
        print(
            f"{name:18s} {trait.n_pairs} pairs, {len(extract_q)}+{len(eval_q)} questions  {trait.description}"
        )
    return 0


def cmd_traits_new(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .openai_api import APIConfig, generate_trait_artifact
    from .traits import save_trait

    config = APIConfig.from_env(base_url=args.base_url, model=args.judge_model)
    data = generate_trait_artifact(args.name, args.description, config=config)
    out = Path(args.out) if args.out else Path("traits") / f"{args.name}.json"
    if out.exists() and not args.force:
        print(f"personalens: error: {out} exists; pass --force to overwrite", file=sys.stderr)
        return 2
    save_trait(data, out)
    print(str(out))
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from .extraction import ExtractionConfig, run_extraction
    from .judge import make_judge
    from .traits import load_trait

    if bool(args.trait) == bool(args.trait_file):
        print(
            "personalens: error: give exactly one of --trait NAME or --trait-file PATH",
            file=sys.stderr,
        )
        return 2
    trait = load_trait(args.trait_file or args.trait)
    judge_kwargs = {}
    if args.judge == "openai":
        judge_kwargs = {"base_url": args.judge_base_url, "model": args.judge_model}
    judge = make_judge(args.judge, **judge_kwargs)
    config = ExtractionConfig(
        n_per_question=args.n_per_question,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        seed=args.seed,
        threshold=args.threshold,
        pairs=tuple(args.pairs) if args.pairs else None,
        generation_batch_size=args.batch_size,
        max_questions=args.max_questions,
    )
    model = _load(args)
    result = run_extraction(model, trait, judge, config, run_dir=args.out, progress=not args.quiet)
    s = result.summary
    print(
        json.dumps(
            {
                k: s[k]
                for k in (
                    "trait",
                    "model",
                    "judge",
                    "n_pos",
                    "n_neg",
                    "best_layer",
                    "best_auc",
                    "timings_s",
                )
            }
        )
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="personalens", description="Persona vectors on TransformerLens."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="print the model's shape and hook convention as JSON")
    _add_model_args(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("chat", help="chat with the model (reads stdin; works from a pipe)")
    _add_model_args(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="jsonl: one JSON object per reply, for scripts (replies may span lines)",
    )
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser(
        "traits", help="list the shipped traits; `traits new` writes one with an LLM"
    )
    p.set_defaults(func=cmd_traits, traits_command=None)
    tsub = p.add_subparsers(dest="traits_command")
    show = tsub.add_parser("show", help="print a trait file")
    show.add_argument("name")
    new = tsub.add_parser("new", help="write a new trait file with an LLM (OpenAI-compatible API)")
    new.add_argument("name")
    new.add_argument("--description", required=True, help="what the trait is, in a sentence or two")
    new.add_argument("--out", default=None, help="output path (default: traits/NAME.json)")
    new.add_argument(
        "--base-url",
        default=None,
        help="OpenAI-compatible base URL (env PERSONALENS_JUDGE_BASE_URL)",
    )
    new.add_argument("--judge-model", default=None, help="model name (env PERSONALENS_JUDGE_MODEL)")
    new.add_argument("--force", action="store_true")

    p = sub.add_parser("extract", help="extract a persona vector into a resumable run directory")
    _add_model_args(p)
    p.add_argument("--trait", default=None, help="a shipped trait name (see `personalens traits`)")
    p.add_argument("--trait-file", default=None, help="a trait JSON file")
    p.add_argument("--out", required=True, help="run directory (rerun the same command to resume)")
    p.add_argument(
        "--judge",
        choices=["offline", "openai", "auto"],
        default="auto",
        help="auto: openai when PERSONALENS_JUDGE_BASE_URL or OPENAI_API_KEY is set, else offline",
    )
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-model", default=None)
    p.add_argument("--n-per-question", type=int, default=1)
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=50.0)
    p.add_argument(
        "--pairs", type=int, nargs="*", default=None, help="instruction pairs to use (default all)"
    )
    p.add_argument("--batch-size", type=int, default=32, help="generation batch size")
    p.add_argument(
        "--max-questions", type=int, default=None, help="use the first N questions of each split"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_extract)
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

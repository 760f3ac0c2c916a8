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

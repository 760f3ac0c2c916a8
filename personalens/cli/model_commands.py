"""``personalens info`` (the model's shape as JSON) and ``personalens chat`` (a conversation on
stdin, optionally steered by one vector, or by several turn by turn with ``--dynamic``).

The CLI must start fast: torch-heavy modules are imported inside the command that runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from personalens._validate import check_number
from personalens.cli import common, flags, preflight
from personalens.cli.flags import Flag
from personalens.errors import PersonaLensError

CHAT_HELP = "commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit"


# ----------------------------------------------------------------------------- info


def cmd_info(args: argparse.Namespace) -> int:
    preflight.model_name_hint(args.model)  # a missing --model path fails before torch loads
    from personalens.model.load import model_info

    print(json.dumps(model_info(common.load_model_from_args(args))))
    return 0


INFO = common.Command(
    "info", "print the model's shape and hook convention as JSON", (), cmd_info, model=True
)


# ----------------------------------------------------------------------------- chat


CHAT_FLAGS = (
    Flag("--system", "system prompt"),
    *flags.generation(
        {"--max-new-tokens": 256, "--temperature": 0.0, "--top-p": 1.0, "--seed": 0},
        help={"--max-new-tokens": "most tokens per reply (long: a conversation's answers)"},
    ),
    Flag(
        "--format",
        "jsonl: one JSON object per reply, for scripts (replies may span lines)",
        choices=["text", "jsonl"],
        default="text",
    ),
    *flags.steering(required=False, multi=True),
    Flag(
        "--dynamic",
        "predict-then-steer: before each reply choose a coefficient per --vector",
        action="store_true",
    ),
    Flag(
        "--target",
        "with --dynamic: target level in [-1, 1] of a trait (repeatable)",
        action="append",
        metavar="NAME=VALUE",
    ),
    Flag(
        "--policy",
        "with --dynamic: projection: from the conversation's projections on each vector; "
        "llm: an OpenAI-compatible LLM reads the conversation (--judge-base-url, --judge-model)",
        choices=["projection", "llm"],
        default="projection",
    ),
    Flag("--max-coeff", "with --dynamic: coefficient at adjustment 1", type=float, default=4.0),
    Flag(
        "--target-sd",
        "projection policy: target +1 = this many neutral-prompt std above the mean",
        type=float,
        default=2.0,
    ),
    Flag(
        "--one-sided",
        "projection policy: a target is a floor (>0) or ceiling (<0), never pushed back",
        action="store_true",
    ),
    Flag("--judge-base-url", "--policy llm: OpenAI-compatible URL"),
    Flag("--judge-model", "--policy llm: model name"),
)


def cmd_chat(args: argparse.Namespace) -> int:
    vectors = args.vector or []
    common.generation_kwargs(args)  # every flag is checked before torch is imported
    _check_chat_args(args, vectors)
    config = common.generation_config(args, progress=False)
    model = common.load_model_from_args(args)
    handle = None
    if vectors and not args.dynamic:
        one = argparse.Namespace(**{**vars(args), "vector": vectors[0]})
        handle = common.steering_from_args(model, one)
        if not args.quiet:
            print(f"steering: {handle.plan.description}", file=sys.stderr)
    steerer = _dynamic_from_args(model, args, vectors, config) if args.dynamic else None
    try:
        _chat_loop(model, args, config, steerer)
    finally:
        if handle is not None:
            handle.remove()
    return 0


CHAT = common.Command(
    "chat",
    "chat with the model (reads stdin; works from a pipe)",
    CHAT_FLAGS,
    cmd_chat,
    runs_model=True,
)


def _chat_loop(model, args: argparse.Namespace, config, steerer) -> None:
    """Read user turns from stdin until EOF or /exit; print each reply."""
    from personalens.model.chat import build_messages

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
        if text.startswith("/"):
            system, history = _chat_command(text, system, history)
            continue
        messages = build_messages(text, system=system, history=history)
        reply, extra = _reply(model, messages, config, steerer, args)
        history = [m for m in messages if m["role"] != "system"]
        history.append({"role": "assistant", "content": reply})
        if args.format == "jsonl":
            print(json.dumps({"user": text, "assistant": reply, **extra}), flush=True)
        else:
            print(("assistant> " if interactive else "") + reply, flush=True)


def _chat_command(text: str, system: str | None, history: list) -> tuple[str | None, list]:
    """(system prompt, history) after the chat command ``text`` (a line starting with /)."""
    if text == "/reset":
        return system, []
    if text.startswith("/system"):
        return text.removeprefix("/system").strip() or None, []
    print(f"unknown command {text.split()[0]!r}; {CHAT_HELP}", file=sys.stderr)
    return system, history


def _reply(model, messages: list, config, steerer, args) -> tuple[str, dict]:
    """The model's reply, and (with dynamic steering) the turn's coefficients and rationale."""
    from personalens.model.generation import generate

    if steerer is None:
        return generate(model, [messages], config, backend=args.backend).responses[0], {}
    turn = steerer.respond(messages)
    extra = {k: v for k, v in turn.to_dict().items() if k not in ("user", "reply")}
    if args.format != "jsonl" and not args.quiet:
        coeffs = " ".join(f"{t}={c:+.2f}" for t, c in turn.coefficients.items())
        print(f"[dynamic] {coeffs} ({turn.rationale})", file=sys.stderr)
    return turn.reply, extra


def _check_chat_args(args: argparse.Namespace, vectors: list[str]) -> None:
    """Reject contradictory chat options and bad numbers before the model is loaded."""
    check_number("--max-coeff", args.max_coeff, lo=0, what="the coefficient at adjustment 1")
    check_number("--target-sd", args.target_sd, lo=0, lo_open=True, what="standard deviations")
    if args.dynamic:
        _check_dynamic_args(args, vectors)
    elif len(vectors) > 1:
        raise PersonaLensError(
            "static steering takes one --vector; to steer several traits turn by turn add "
            "--dynamic (--vector NAME=PATH for each)"
        )
    elif args.target:
        raise PersonaLensError("--target sets the target persona of --dynamic steering")
    common.check_steering_args(args)  # --coeff, --bound, --percentile
    for item in vectors:  # every --vector names a file or a shipped vector
        preflight.check_vector(split_named_vector(item)[1], args.model)


def _check_dynamic_args(args: argparse.Namespace, vectors: list[str]) -> None:
    if not vectors:
        raise PersonaLensError("--dynamic needs at least one --vector NAME=PATH (or PATH)")
    common.check_backend(args, "chat --dynamic")
    if args.coeff is not None:
        raise PersonaLensError("--dynamic chooses the coefficients; bound them with --max-coeff")
    if args.mode != "add":
        raise PersonaLensError("--dynamic steers with --mode add only")
    if args.layer is not None and len(args.layer) > 1:
        raise PersonaLensError(
            "--dynamic takes one --layer for all vectors (or none: each vector's steering_layer, "
            "else the middle layer; each trait is measured at its vector's best_layer)"
        )
    _parse_targets(args.target)


def _parse_targets(items: list[str] | None) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            level = float(value)
        except ValueError:
            level = None
        if not sep or not name.strip() or level is None or not -1 <= level <= 1:  # NaN too
            raise PersonaLensError(
                f"--target {item!r}: write NAME=VALUE with VALUE in [-1, 1], e.g. --target evil=-1"
            )
        out[name.strip()] = level
    return out


def split_named_vector(item: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); ``PATH`` (a path with ``=`` in it too) -> (None, PATH)."""
    name, sep, path = item.partition("=")
    if not sep or Path(item).exists() or "/" in name or not name.strip():
        return None, item
    return name.strip(), path


def _named_vector(item: str, model):
    """``NAME=PATH`` or ``PATH`` (named by the vector's trait) -> (name, vector)."""
    from personalens.vectors.resolve import load_vector

    name, spec = split_named_vector(item)
    vector = load_vector(spec, model)
    return name or vector.trait, vector


def _dynamic_from_args(model, args: argparse.Namespace, vectors: list[str], config):
    from personalens.steering.dynamic import DynamicSteerer

    named: dict = {}
    for item in vectors:
        name, vector = _named_vector(item, model)
        if name in named:
            raise PersonaLensError(f"two --vector options are named {name!r}; use NAME=PATH")
        named[name] = vector
    if args.policy == "llm":
        from personalens.judges.openai_client import APIConfig

        policy_options = {
            "config": APIConfig.from_env(base_url=args.judge_base_url, model=args.judge_model)
        }
    else:
        policy_options = {"target_sd": args.target_sd, "one_sided": args.one_sided}
    steerer = DynamicSteerer(
        model,
        named,
        layers=args.layer[0] if args.layer else None,
        policy=args.policy,
        policy_options=policy_options,
        target=_parse_targets(args.target),
        max_coeff=args.max_coeff,
        coeff_scale=args.coeff_scale,
        positions=args.positions,
        generation=config,
    )
    if not args.quiet:
        print(
            f"dynamic steering: {steerer.policy!r}, layers {steerer.layers}, target "
            f"{steerer.target}, max coeff {args.max_coeff} ({args.coeff_scale})",
            file=sys.stderr,
        )
    return steerer

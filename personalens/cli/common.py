"""What the command modules share: argument groups (model, backend, shards, judge, generation,
steering) and turning parsed arguments into checked settings, a loaded model, a shard, a judge
or a steering hook.

Every command checks its numeric flags (:func:`generation_kwargs`,
:func:`check_steering_args`) and its file and name arguments (:mod:`personalens.cli.preflight`)
before it imports torch or loads the model, so a bad value fails in a second with one line
naming the flag, not after minutes of loading or generating.

One flag has one meaning on every command: ``--layer L [L ...]`` (old spelling ``--layers``,
hidden), ``--backend`` and ``--quiet`` wherever the model runs (:func:`add_command`), and the
help of every flag shows its default (:class:`HelpFormatter`).

The CLI must start fast: torch-heavy modules are imported inside the functions that use them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from personalens._validate import (
    check_count,
    check_number,
    check_steering_value,
)
from personalens.cli import preflight
from personalens.errors import ArgumentError, PersonaLensError

VECTOR_HELP = (
    "a persona vector: an extraction run directory, a .json/.safetensors pair, a llama.cpp "
    "control-vector .gguf, or the name of a shipped vector (e.g. evil)"
)

JUDGE_HELP = (
    "auto: openai when --judge-base-url, PERSONALENS_JUDGE_BASE_URL or OPENAI_API_KEY is set, "
    "else offline (a local judge, no network)"
)
COEFF_SCALE_HELP = (
    "raw: multiples of the vector; unit: of its unit direction; resid: of the mean residual "
    "norm at the layer"
)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with ``(default: X)`` after the help of every flag that has a
    default worth showing (not None, False or an empty list) and does not state it already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default == [] or default == "==SUPPRESS=="
        if action.option_strings and not hidden and "default" not in text:
            text += " (default: %(default)s)"
        return text


def add_command(
    sub,
    name: str,
    *,
    help: str,
    old_names: tuple[str, ...] = (),
    model: bool = False,
    runs_model: bool = False,
) -> argparse.ArgumentParser:
    """The parser of command ``name``: with the model arguments when ``model``, and also
    ``--backend`` and ``--quiet`` when ``runs_model``. Each of its ``old_names`` (an earlier
    spelling) still runs the command, so old scripts keep working, but only ``name`` is listed
    in the help."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    for old in old_names:
        sub.choices[old] = p  # what argparse's aliases= does, minus the listing
    if model or runs_model:
        add_model_args(p)
    if runs_model:
        add_backend_arg(p)
        p.add_argument(
            "--quiet", action="store_true", help="no progress bars or status lines on stderr"
        )
    return p


def add_layer_arg(p: argparse.ArgumentParser, help: str, *, many: bool = True) -> None:
    """``--layer L [L ...]`` (one ``L`` unless ``many``), the one spelling of a layer on every
    command (``blocks.L.hook_resid_post``); ``--layers`` is a hidden alias, so the old spelling
    keeps working. Both go to ``args.layer``: a list (``many``) or an int, ``None`` unless given."""
    kind = {"nargs": "+"} if many else {}
    p.add_argument("--layer", type=int, default=None, metavar="L", help=help, **kind)
    p.add_argument(
        "--layers",
        dest="layer",
        type=int,
        default=argparse.SUPPRESS,
        help=argparse.SUPPRESS,
        **kind,
    )


# ----------------------------------------------------------------------------- argument groups


def add_model_args(p: argparse.ArgumentParser) -> None:
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


def add_backend_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=("auto", "tl", "hf"),  # engines.hf.BACKENDS, spelled out: it imports torch
        default="auto",
        help="engine for generation and activations: 'hf' runs a Hugging Face model sharing the "
        "weights (faster; Llama-style models; applies personalens steering exactly), 'tl' "
        "TransformerLens; 'auto' (default) takes 'hf' where the model maps, else 'tl'. The "
        "results agree within float tolerance; not part of a run's identity",
    )


def add_shard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="be worker I of N (0-based) sharing the run directory, one per GPU or node; 'auto' "
        "reads the rank from torchrun, accelerate launch or srun. Worker 0 writes the results.",
    )
    p.add_argument(
        "--shard-timeout",
        type=float,
        default=None,
        metavar="S",
        help="give up after waiting S seconds for the other workers (default: wait)",
    )


def add_judge_args(p: argparse.ArgumentParser, *, choose: bool = True) -> None:
    """``--judge`` (with ``choose``), ``--judge-base-url`` and ``--judge-model``."""
    if choose:
        p.add_argument(
            "--judge", choices=["offline", "openai", "auto"], default="auto", help=JUDGE_HELP
        )
    p.add_argument(
        "--judge-base-url",
        default=None,
        help="OpenAI-compatible judge server URL (default: env PERSONALENS_JUDGE_BASE_URL or "
        "OPENAI_BASE_URL, else the OpenAI API)",
    )
    p.add_argument(
        "--judge-model",
        default=None,
        help="judge model name (default: env PERSONALENS_JUDGE_MODEL, else gpt-4.1-mini)",
    )


# the help of the generation flags, where a command gives none of its own
GENERATION_HELP = {
    "--max-new-tokens": "most tokens per reply",
    "--temperature": "sampling temperature (0 = greedy)",
    "--top-p": "nucleus sampling: keep the most likely tokens up to this mass (1 = off)",
    "--seed": "sampling seed (every reply is seeded on its own)",
    "--batch-size": "replies generated together (lower it when memory runs out)",
}
# the per-prompt count flags (``n`` of a GenerationConfig) that commands spell their own way
COUNT_DESTS = ("n_per_prompt", "n_per_question")


def add_generation_args(
    p: argparse.ArgumentParser,
    *,
    max_new_tokens: int,
    temperature: float | None = None,
    top_p: float | None = None,
    seed: bool = False,
    count: str | None = None,
    batch_size: int | None = None,
    help: dict[str, str | None] | None = None,
) -> None:
    """The generation flags of a command, with its own defaults: ``--max-new-tokens`` always;
    ``--temperature``, ``--top-p`` and ``--batch-size`` when their default is given; ``--seed``
    (default 0) with ``seed``; ``count`` (a flag such as ``--n-per-prompt``, default 1) when
    named. ``help`` replaces the help of a flag (by its name). :func:`generation_kwargs` reads
    and checks them."""
    helps = {**GENERATION_HELP, **(help or {})}

    def add(flag: str, kind: type, default: Any) -> None:
        p.add_argument(flag, type=kind, default=default, help=helps.get(flag))

    if count is not None:
        add(count, int, 1)
    add("--max-new-tokens", int, max_new_tokens)
    if temperature is not None:
        add("--temperature", float, temperature)
    if top_p is not None:
        add("--top-p", float, top_p)
    if seed:
        add("--seed", int, 0)
    if batch_size is not None:
        add("--batch-size", int, batch_size)


def generation_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :class:`~personalens.model.generation.GenerationConfig` keywords (``max_new_tokens``,
    ``temperature``, ``top_p``, ``seed``, ``batch_size``, and ``n`` from the count flag) of the
    generation flags ``args`` has, each checked: an
    :class:`~personalens.errors.ArgumentError` naming the flag. Call it before loading the
    model."""
    out: dict[str, Any] = {}
    for dest in COUNT_DESTS:
        if hasattr(args, dest):
            flag = "--" + dest.replace("_", "-")
            out["n"] = check_count(flag, getattr(args, dest), what="replies per prompt")
    out["max_new_tokens"] = check_count(
        "--max-new-tokens", args.max_new_tokens, what="tokens per reply"
    )
    if hasattr(args, "temperature"):
        out["temperature"] = check_number(
            "--temperature", args.temperature, lo=0, what="0 = greedy decoding"
        )
    if hasattr(args, "top_p"):
        out["top_p"] = check_number(
            "--top-p", args.top_p, lo=0, hi=1, lo_open=True, what="1 = no nucleus cut"
        )
    if hasattr(args, "seed"):
        out["seed"] = args.seed
    if hasattr(args, "batch_size"):
        out["batch_size"] = check_count("--batch-size", args.batch_size, what="a batch size")
    return out


def generation_config(args: argparse.Namespace, **fixed: Any):
    """The checked :class:`~personalens.model.generation.GenerationConfig` of ``args``'s
    generation flags, with the ``fixed`` settings of the command (e.g. ``progress=False``)."""
    kwargs = {**generation_kwargs(args), **fixed}  # checked before the import (torch)
    from personalens.model.generation import GenerationConfig

    return GenerationConfig(**kwargs)


POSITIONS_HELP = (
    "positions steered: all (every position, prompt and reply, as a TransformerLens hook), "
    "prompt (the prompt only), response (the last prompt token and every reply token, as the "
    "Persona Vectors paper)"
)
SWEEP_POSITIONS_HELP = (
    POSITIONS_HELP + "; response by default here, as the Python steering_sweep: it reproduces "
    "the paper's steering figure"
)
MODE_HELP = (
    "add: add the coefficient times the vector; ablate: remove the component along the vector; cap: "
    "clamp the projection on the vector at --bound"
)


def add_steering_args(
    p: argparse.ArgumentParser, *, required: bool, sweep: bool = False, multi: bool = False
) -> None:
    """``--vector``, ``--layer`` (``--layers``), ``--coeff`` (not with ``sweep``: the sweep has
    ``--coeffs``), ``--mode``, ``--positions`` (default ``all``; ``response`` with ``sweep``),
    ``--coeff-scale``, and ``--bound`` and ``--percentile`` (not with ``sweep``)."""
    multi_help = "; with --dynamic repeat it as --vector NAME=PATH (NAME defaults to the trait)"
    p.add_argument(
        "--vector",
        required=required,
        default=None,
        action="append" if multi else "store",
        help=VECTOR_HELP + (multi_help if multi else ""),
    )
    what = "layers to sweep" if sweep else "layer(s) to steer"
    add_layer_arg(
        p, f"{what} (default: the vector's steering_layer, else the middle layer n_layers // 2)"
    )
    if not sweep:
        p.add_argument(
            "--coeff", type=float, default=None, help="steering coefficient (needed by --mode add)"
        )
    p.add_argument("--mode", choices=["add", "ablate", "cap"], default="add", help=MODE_HELP)
    p.add_argument(
        "--positions",
        choices=["all", "prompt", "response"],
        default="response" if sweep else "all",
        help=SWEEP_POSITIONS_HELP if sweep else POSITIONS_HELP,
    )
    p.add_argument(
        "--coeff-scale", choices=["raw", "unit", "resid"], default="raw", help=COEFF_SCALE_HELP
    )
    if sweep:
        return  # steering_sweep takes no cap bound
    p.add_argument(
        "--bound",
        type=float,
        default=None,
        help="--mode cap: the projection bound (default: calibrated on reference prompts)",
    )
    p.add_argument(
        "--percentile",
        type=float,
        default=95.0,
        help="--mode cap without --bound: the percentile of reference-prompt projections used "
        "as bound",
    )


# ----------------------------------------------------------------------------- from arguments


def load_model_from_args(args: argparse.Namespace):
    from personalens.model.load import load_model

    device = args.device
    if getattr(args, "shard", None):
        from personalens.runs.sharding import local_device

        device = local_device(device)  # under torchrun: this worker's own GPU
    return load_model(args.model, device=device, dtype=args.dtype)


def shard_from_args(args: argparse.Namespace):
    from personalens.runs.sharding import Shard, resolve_shard

    if args.shard_timeout is not None:
        check_number("--shard-timeout", args.shard_timeout, lo=0, lo_open=True, what="seconds")
    if not args.shard:
        return None
    return resolve_shard(Shard.parse(args.shard, timeout_s=args.shard_timeout))


def is_follower(shard, writes: str) -> bool:
    """True (having said so) on a worker other than 0, which leaves ``writes`` to worker 0."""
    if shard is None or shard.is_leader:
        return False
    print(f"shard {shard}: done; worker 0 writes {writes}")
    return True


def judge_from_args(args: argparse.Namespace):
    """The judge of ``--judge`` (``--judge-base-url`` and ``--judge-model`` for openai)."""
    from personalens.judges.factory import api_configured, make_judge

    kind = args.judge
    if kind == "auto":
        kind = "openai" if args.judge_base_url or api_configured() else "offline"
    if kind == "openai":
        return make_judge("openai", base_url=args.judge_base_url, model=args.judge_model)
    return make_judge(kind)


def layer_or_best(vector, layer: int | None, give: str) -> int:
    """``layer``, else the vector's recorded best layer; ``give`` says what to pass instead."""
    if layer is not None:
        return layer
    best = vector.metadata.get("best_layer")
    if best is None:
        raise PersonaLensError(f"give {give}: this vector records no best layer")
    return int(best)


def check_backend(args: argparse.Namespace, command: str) -> None:
    """Refuse ``--backend tl``/``hf`` where ``command`` cannot choose its engine yet: there the
    engine is what ``auto`` picks."""
    if args.backend != "auto":
        raise ArgumentError(
            f"--backend {args.backend}: {command} cannot choose its engine yet; leave --backend "
            "auto (it picks hf where the model maps, else tl)"
        )


def check_steering_args(args: argparse.Namespace) -> None:
    """Refuse a NaN, infinite or huge ``--coeff``/``--coeffs``/``--bound``, a ``--percentile``
    outside [0, 100], ``--mode add`` with a ``--vector`` but no ``--coeff``, and a ``--vector``
    that names no file and no vector shipped for ``--model``, and a missing ``--model`` path:
    before the model loads (an
    :class:`~personalens.errors.ArgumentError` naming the flag)."""
    if getattr(args, "coeff", None) is not None:
        check_steering_value("--coeff", args.coeff)
    for c in getattr(args, "coeffs", None) or ():
        check_steering_value("--coeffs", c)
    if getattr(args, "bound", None) is not None:
        check_steering_value("--bound", args.bound)
    if hasattr(args, "percentile"):
        check_number(
            "--percentile", args.percentile, lo=0, hi=100, what="cap calibration percentile"
        )
    chooses_coeff = hasattr(args, "coeffs") or getattr(args, "dynamic", False)
    if not chooses_coeff and args.vector and args.mode == "add" and args.coeff is None:
        raise ArgumentError("--mode add needs --coeff C (try --coeff 4 and adjust)")
    preflight.model_name_hint(args.model)  # a missing --model path
    if isinstance(args.vector, str):  # chat's --vector list is checked by chat
        preflight.check_vector(args.vector, args.model)


def steering_kwargs(args: argparse.Namespace) -> dict:
    return {
        "positions": args.positions,
        "mode": args.mode,
        "coeff_scale": args.coeff_scale,
        "bound": args.bound,
        "percentile": args.percentile,
    }


def steering_from_args(model, args: argparse.Namespace, *, plan_only: bool = False):
    """The steering of ``--vector``, ``--coeff``, ``--layer`` ...: hooks on ``model`` (a handle to
    remove), or with ``plan_only`` the plan without hooks."""
    from personalens.steering.hooks import add_steering
    from personalens.steering.plan import plan_steering
    from personalens.vectors.resolve import load_vector

    check_steering_args(args)
    vector = load_vector(args.vector, model)
    steer = plan_steering if plan_only else add_steering
    return steer(model, vector, args.coeff, layers=args.layer, **steering_kwargs(args))


@contextlib.contextmanager
def holding_run_dirs(dirs: Sequence[str | os.PathLike[str]], shard: Any = None) -> Iterator[None]:
    """Hold each run directory (:func:`~personalens.runs.lock.run_lock`; shared for a sharded
    worker) from before the model loads to the end of the command, so ``--out`` on a file or
    on a directory another process is writing fails in a second, not after loading."""
    from personalens.runs.lock import run_lock  # runs/ imports torch: not at CLI start-up
    from personalens.runs.run_dir import make_run_dir

    with contextlib.ExitStack() as stack:
        for d in dirs:
            stack.enter_context(run_lock(make_run_dir(d), shared=shard is not None))
        yield

"""What the command modules share: argument groups (model, backend, shards, judge, generation,
steering) and turning parsed arguments into checked settings, a loaded model, a shard, a judge
or a steering hook.

Every command checks its numeric flags (:func:`generation_kwargs`,
:func:`check_steering_args`) before it loads the model, so a bad value fails in a second with
one line naming the flag, not after minutes of loading or generating.

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
from personalens.errors import ArgumentError, PersonaLensError

VECTOR_HELP = (
    "a persona vector: an extraction run directory, a .json/.safetensors pair, a llama.cpp "
    "control-vector .gguf, or the name of a shipped vector (e.g. evil)"
)

JUDGE_HELP = "auto: openai when PERSONALENS_JUDGE_BASE_URL or OPENAI_API_KEY is set, else offline"
COEFF_SCALE_HELP = (
    "raw: multiples of the vector; unit: of its unit direction; resid: of the mean residual "
    "norm at the layer"
)


def add_command(
    sub, name: str, *, help: str, old_names: tuple[str, ...] = (), model: bool = False
) -> argparse.ArgumentParser:
    """The parser of command ``name`` (with the model arguments when ``model``). Each of its
    ``old_names`` (an earlier spelling) still runs the command, so old scripts keep working, but
    only ``name`` is listed in the help."""
    p = sub.add_parser(name, help=help)
    for old in old_names:
        sub.choices[old] = p  # what argparse's aliases= does, minus the listing
    if model:
        add_model_args(p)
    return p


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
    p.add_argument("--judge-base-url", default=None)
    p.add_argument("--judge-model", default=None)


# the help of the generation flags, where a command gives none of its own
GENERATION_HELP = {
    "--max-new-tokens": "most tokens per reply",
    "--temperature": "sampling temperature (0 = greedy)",
    "--top-p": "nucleus sampling: keep the most likely tokens up to this mass (1 = off)",
    "--seed": "sampling seed (every reply is seeded on its own)",
    "--batch-size": "generation batch size",
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
    if temperature == 0.0 and "--temperature" not in (help or {}):
        helps["--temperature"] = "0 = greedy (default)"

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
    from personalens.model.generation import GenerationConfig

    return GenerationConfig(**{**generation_kwargs(args), **fixed})


def add_steering_args(
    p: argparse.ArgumentParser, *, required: bool, sweep: bool = False, multi: bool = False
) -> None:
    multi_help = "; with --dynamic repeat it as --vector NAME=PATH (NAME defaults to the trait)"
    p.add_argument(
        "--vector",
        required=required,
        default=None,
        action="append" if multi else "store",
        help=VECTOR_HELP + (multi_help if multi else ""),
    )
    if not sweep:
        p.add_argument(
            "--layer",
            type=int,
            nargs="+",
            default=None,
            help="layer(s) to steer (default: the vector's best layer)",
        )
        p.add_argument("--coeff", type=float, default=None, help="steering coefficient")
    p.add_argument("--mode", choices=["add", "ablate", "cap"], default="add")
    p.add_argument("--positions", choices=["response", "prompt", "all"], default="response")
    p.add_argument(
        "--coeff-scale", choices=["raw", "unit", "resid"], default="raw", help=COEFF_SCALE_HELP
    )
    p.add_argument("--bound", type=float, default=None, help="cap bound (default: calibrated)")
    p.add_argument("--percentile", type=float, default=95.0, help="cap calibration percentile")


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
    from personalens.judges.factory import make_judge

    judge_kwargs = {}
    if args.judge == "openai":
        judge_kwargs = {"base_url": args.judge_base_url, "model": args.judge_model}
    return make_judge(args.judge, **judge_kwargs)


def layer_or_best(vector, layer: int | None, give: str) -> int:
    """``layer``, else the vector's recorded best layer; ``give`` says what to pass instead."""
    if layer is not None:
        return layer
    best = vector.metadata.get("best_layer")
    if best is None:
        raise PersonaLensError(f"give {give}: this vector records no best layer")
    return int(best)


def check_steering_args(args: argparse.Namespace) -> None:
    """Refuse a NaN, infinite or huge ``--coeff``/``--coeffs``/``--bound``, a ``--percentile``
    outside [0, 100], and ``--mode add`` with a ``--vector`` but no ``--coeff``: before the model
    loads (an :class:`~personalens.errors.ArgumentError` naming the flag)."""
    if getattr(args, "coeff", None) is not None:
        check_steering_value("--coeff", args.coeff)
    for c in getattr(args, "coeffs", None) or ():
        check_steering_value("--coeffs", c)
    if args.bound is not None:
        check_steering_value("--bound", args.bound)
    check_number("--percentile", args.percentile, lo=0, hi=100, what="cap calibration percentile")
    chooses_coeff = hasattr(args, "coeffs") or getattr(args, "dynamic", False)
    if not chooses_coeff and args.vector and args.mode == "add" and args.coeff is None:
        raise ArgumentError("--mode add needs --coeff C (try --coeff 4 and adjust)")


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

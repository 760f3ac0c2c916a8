"""What the command modules share: :func:`add_command`, which builds a command's parser from its
table of flags (:mod:`personalens.cli.flags`), and turning parsed arguments into checked
settings, a loaded model, a shard, a judge or a steering hook.

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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

from personalens._validate import (
    check_count,
    check_number,
    check_steering_value,
)
from personalens.cli import flags, preflight
from personalens.cli.flags import Flag, add_flags
from personalens.errors import ArgumentError, PersonaLensError


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
    table: Sequence[Flag] = (),
    func: Callable[[argparse.Namespace], int] | None = None,
) -> argparse.ArgumentParser:
    """The parser of command ``name``: the model arguments when ``model``, and also
    ``--backend`` and ``--quiet`` when ``runs_model``; then the arguments of ``table`` (its
    :class:`~personalens.cli.flags.Flag` rows, in order); ``func`` runs the command. Each of its
    ``old_names`` (an earlier spelling) still runs the command, so old scripts keep working, but
    only ``name`` is listed in the help."""
    p = sub.add_parser(name, help=help, description=help, formatter_class=HelpFormatter)
    for old in old_names:
        sub.choices[old] = p  # what argparse's aliases= does, minus the listing
    if model or runs_model:
        add_flags(p, flags.MODEL)
    if runs_model:
        add_flags(p, flags.BACKEND + flags.QUIET)
    add_flags(p, table)
    if func is not None:
        p.set_defaults(func=func)
    return p


@dataclass(frozen=True)
class Command:
    """A command as data: its name, its help, its table of flags and the function that runs it,
    and the :func:`add_command` options after them. Called with the subparsers of the
    ``personalens`` parser, it adds its parser there, as an ``add_*_parser`` function does."""

    name: str
    help: str
    table: Sequence[Flag]
    func: Callable[[argparse.Namespace], int]
    _: KW_ONLY
    old_names: tuple[str, ...] = ()
    model: bool = False
    runs_model: bool = False

    def __call__(self, sub) -> argparse.ArgumentParser:
        options = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return add_command(sub, self.name, **options)


# the per-prompt count flags (``n`` of a GenerationConfig) that commands spell their own way
COUNT_DESTS = ("n_per_prompt", "n_per_question")


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
    """The judge of ``--judge`` (``--judge-base-url`` and ``--judge-model`` for openai; for
    local, ``--judge-model`` is the model that runs the logprob judge, None: the embedded one)."""
    from personalens.judges.factory import api_configured, make_judge

    kind = args.judge
    if kind == "auto":
        kind = "openai" if args.judge_base_url or api_configured() else "offline"
    if kind == "openai":
        return make_judge("openai", base_url=args.judge_base_url, model=args.judge_model)
    if kind == "local":
        return make_judge("local", model=args.judge_model)
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

"""The flags of the command line, declared as tables: a :class:`Flag` is one argparse argument,
a command's table is a tuple of them (in the order ``--help`` lists them), and the groups that
several commands share are tables here: :data:`MODEL`, :data:`BACKEND`, :data:`QUIET`,
:data:`SHARDS`, and, built with a command's own defaults, :func:`judge`, :func:`layer`,
:func:`generation` and :func:`steering`. :func:`personalens.cli.common.add_command` reads a
table into the command's parser.

One flag has one meaning on every command: ``--layer L [L ...]`` (old spelling ``--layers``,
hidden), ``--backend`` and ``--quiet`` wherever the model runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

# a Flag setting left out: argparse's own default applies
UNSET: Any = object()


@dataclass(frozen=True)
class Flag:
    """One argument of a command: ``name`` (``--flag``, or a positional argument's name) and
    the settings of :meth:`argparse.ArgumentParser.add_argument` it gives; the others keep
    argparse's defaults."""

    name: str
    help: str | None = None
    _: KW_ONLY
    type: Callable[[str], Any] | None = None
    default: Any = UNSET
    choices: Sequence[str] | None = None
    nargs: str | int | None = None
    required: bool = False
    action: str | None = None
    metavar: str | None = None
    dest: str | None = None

    def settings(self) -> dict[str, Any]:
        """The keywords of ``add_argument``: the settings given."""
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name != "name" and getattr(self, f.name) is not f.default
        }


def add_flags(p: argparse.ArgumentParser, table: Sequence[Flag]) -> None:
    """Add the arguments of ``table`` to ``p``, in order."""
    for flag in table:
        p.add_argument(flag.name, **flag.settings())


# ----------------------------------------------------------------------------- help texts

VECTOR_HELP = (
    "a persona vector: an extraction run directory, a .json/.safetensors pair, a llama.cpp "
    "control-vector .gguf, or the name of a shipped vector (e.g. evil)"
)
JUDGE_HELP = (
    "auto: openai when --judge-base-url, PERSONALENS_JUDGE_BASE_URL or OPENAI_API_KEY is set, "
    "else offline (a local judge, no network); local: the logprob judge run on --judge-model "
    "(default: the embedded model), no server (default: %(default)s)"
)
COEFF_SCALE_HELP = (
    "raw: multiples of the vector; unit: of its unit direction; resid: of the mean residual "
    "norm at the layer"
)
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
# the generation flags a command may have (in the order --help lists them) and their types: a
# per-prompt count (``n`` of a GenerationConfig, spelled per command), then the sampling flags
GENERATION_FLAGS = {
    "--n-per-prompt": int,
    "--n-per-question": int,
    "--max-new-tokens": int,
    "--temperature": float,
    "--top-p": float,
    "--seed": int,
    "--batch-size": int,
}
# the help of the generation flags, where a command gives none of its own
GENERATION_HELP = {
    "--max-new-tokens": "most tokens per reply",
    "--temperature": "sampling temperature (0 = greedy)",
    "--top-p": "nucleus sampling: keep the most likely tokens up to this mass (1 = off)",
    "--seed": "sampling seed (every reply is seeded on its own)",
    "--batch-size": "replies generated together (lower it when memory runs out)",
}

# ----------------------------------------------------------------------------- shared groups

MODEL = (
    Flag(
        "--model",
        "TransformerLens model name, local HF directory or .gguf file "
        "(default: the embedded SmolLM2-135M-Instruct, offline)",
    ),
    Flag("--device", "cpu, cuda, cuda:1 ... (default: cuda if available)"),
    Flag("--dtype", "float32, bfloat16, float16 (default: fp32 on CPU)"),
)
BACKEND = (
    Flag(
        "--backend",
        "engine for generation and activations: 'hf' runs a Hugging Face model sharing the "
        "weights (faster; Llama-style models; applies personalens steering exactly), 'tl' "
        "TransformerLens; 'auto' (default) takes 'hf' where the model maps, else 'tl'. The "
        "results agree within float tolerance; not part of a run's identity",
        choices=("auto", "tl", "hf"),
        default="auto",
    ),
)
QUIET = (Flag("--quiet", "no progress bars or status lines on stderr", action="store_true"),)
SHARDS = (
    Flag(
        "--shard",
        "be worker I of N (0-based) sharing the run directory, one per GPU or node; 'auto' "
        "reads the rank from torchrun, accelerate launch or srun. Worker 0 writes the results.",
        metavar="I/N",
    ),
    Flag(
        "--shard-timeout",
        "give up after waiting S seconds for the other workers (default: wait)",
        type=float,
        metavar="S",
    ),
)


def judge(*, choose: bool = True) -> tuple[Flag, ...]:
    """``--judge`` (with ``choose``), ``--judge-base-url`` and ``--judge-model``."""
    kind = Flag(
        "--judge", JUDGE_HELP, choices=["offline", "openai", "auto", "local"], default="auto"
    )
    server = (
        Flag(
            "--judge-base-url",
            "OpenAI-compatible judge server URL (default: env PERSONALENS_JUDGE_BASE_URL or "
            "OPENAI_BASE_URL, else the OpenAI API)",
        ),
        Flag(
            "--judge-model",
            "judge model name (default: env PERSONALENS_JUDGE_MODEL, else gpt-4.1-mini)",
        ),
    )
    return (kind, *server) if choose else server


def layer(help: str, *, many: bool = True) -> tuple[Flag, Flag]:
    """``--layer L [L ...]`` (one ``L`` unless ``many``), the one spelling of a layer on every
    command (``blocks.L.hook_resid_post``); ``--layers`` is a hidden alias, so the old spelling
    keeps working. Both go to ``args.layer``: a list (``many``) or an int, ``None`` unless given."""
    nargs = "+" if many else None
    return (
        Flag("--layer", help, type=int, metavar="L", nargs=nargs),
        Flag(
            "--layers",
            argparse.SUPPRESS,
            dest="layer",
            type=int,
            default=argparse.SUPPRESS,
            nargs=nargs,
        ),
    )


def generation(
    defaults: Mapping[str, int | float], help: Mapping[str, str] | None = None
) -> tuple[Flag, ...]:
    """The generation flags of a command: those that ``defaults`` names (of
    :data:`GENERATION_FLAGS`), each with the default given there; ``help`` replaces the help of
    a flag (by its name). :func:`personalens.cli.common.generation_kwargs` reads and checks
    them."""
    unknown = set(defaults) - set(GENERATION_FLAGS)
    if unknown:
        raise ValueError(f"not generation flags: {sorted(unknown)}")
    helps = {**GENERATION_HELP, **(help or {})}
    return tuple(
        Flag(name, helps.get(name), type=kind, default=defaults[name])
        for name, kind in GENERATION_FLAGS.items()
        if name in defaults
    )


def steering(*, required: bool, sweep: bool = False, multi: bool = False) -> tuple[Flag, ...]:
    """``--vector``, ``--layer`` (``--layers``), ``--coeff`` (not with ``sweep``: the sweep has
    ``--coeffs``), ``--mode``, ``--positions`` (default ``all``; ``response`` with ``sweep``),
    ``--coeff-scale``, and ``--bound`` and ``--percentile`` (not with ``sweep``)."""
    multi_help = "; with --dynamic repeat it as --vector NAME=PATH (NAME defaults to the trait)"
    vector = Flag(
        "--vector",
        VECTOR_HELP + (multi_help if multi else ""),
        required=required,
        action="append" if multi else None,
    )
    what = "layers to sweep" if sweep else "layer(s) to steer"
    layers = layer(
        f"{what} (default: the vector's steering_layer, else the middle layer n_layers // 2)"
    )
    coeff = Flag("--coeff", "steering coefficient (needed by --mode add)", type=float)
    how = (
        Flag("--mode", MODE_HELP, choices=["add", "ablate", "cap"], default="add"),
        Flag(
            "--positions",
            SWEEP_POSITIONS_HELP if sweep else POSITIONS_HELP,
            choices=["all", "prompt", "response"],
            default="response" if sweep else "all",
        ),
        Flag("--coeff-scale", COEFF_SCALE_HELP, choices=["raw", "unit", "resid"], default="raw"),
    )
    if sweep:
        return (vector, *layers, *how)  # steering_sweep takes no --coeff and no cap bound
    cap = (
        Flag(
            "--bound",
            "--mode cap: the projection bound (default: calibrated on reference prompts)",
            type=float,
        ),
        Flag(
            "--percentile",
            "--mode cap without --bound: the percentile of reference-prompt projections "
            "used as bound",
            type=float,
            default=95.0,
        ),
    )
    return (vector, *layers, coeff, *how, *cap)

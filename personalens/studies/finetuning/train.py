"""Finetuning a loaded ``HookedTransformer`` on chat data, plain or with steering during training.

::

    result = finetune(model, "data.jsonl", mode="preventative", vector=vec, layers=[15], coeff=4.0,
                      lr=1e-4, epochs=2, out="runs/ft_evil_prevent")
    tuned = result.model                              # a merged copy; ``model`` is unchanged
    tuned = load_finetuned(model, "runs/ft_evil_prevent")   # the same, later, from the run dir

**What is trained.** Adapters on the two weight matrices of every block that *write into the
residual stream*: the MLP's down-projection ``W_out`` (``"mlp_out"``) and the attention output
``W_O`` (``"attn_out"``), at every layer by default. ``params="lora"`` (default) trains a
low-rank update ``ΔW = (alpha / rank) · A B`` (``A`` ``[d_in, rank]`` initialised like PEFT,
``B`` ``[rank, d_model]`` zero, so training starts from the base model); ``params="full"``
trains a full ``[d_in, d_model]`` update (equivalent to training those weights directly). Why
these: they are plain matrices in TransformerLens (``W_out`` ``[d_mlp, d_model]``, ``W_O``
``[n_heads, d_head, d_model]``, which flattens exactly to ``[n_heads·d_head, d_model]``), every
change the finetune makes to the residual stream goes through them, and an update of them merges
exactly into the weights. The adapters act through hooks (the input is read at
``blocks.L.mlp.hook_post`` / ``blocks.L.attn.hook_z``, ``x @ ΔW`` is added at
``blocks.L.hook_mlp_out`` / ``blocks.L.hook_attn_out``), so the base model's weights are never
touched during training and the trained result is just the small adapter tensors.

**Loss.** Mean next-token cross-entropy over the response tokens only (the assistant's reply
and, with ``train_on_eos=True``, the end-of-turn token the chat template puts after it);
prompt (system, user, template) and padding tokens are never scored
(:func:`personalens.studies.finetuning.loop.response_loss`).

**Modes.** ``"plain"``; ``"preventative"``: ``coeff · v`` is added at ``layers`` (through
:func:`personalens.steering.hooks.steer`, ``mode="add"``;
:mod:`~personalens.studies.finetuning.training_hooks`) in every training forward pass, at every
non-padding position by default, so the finetune need not move the model along ``v`` to fit
trait-laden data (the Persona Vectors paper's preventative steering); ``"caft"``: the component
along ``v̂`` is ablated at ``layers`` during training (``steer(mode="ablate")``; concept-ablation
finetuning). The steering exists only inside training: the returned and reloaded models carry no
hooks.

**Run directory** (``out=``): ``config.json`` (the resolved settings; a directory refuses to
resume with other settings, another model, vector or data), ``checkpoints/step-NNNNNNN/``
(``adapters.safetensors``, ``optimizer.safetensors``, then ``state.json`` with the loss history
and both files' SHA-256, written last, so a checkpoint whose ``state.json`` exists is complete),
written atomically at the end of every epoch and every ``save_every`` steps, and, when training
finishes, ``adapters.safetensors`` + ``adapters.json`` (written last). Kill the process at any
point and call again with the same arguments: training continues from the last checkpoint and
ends with exactly the adapters and losses of an uninterrupted run (the data order is a function
of ``seed`` and the epoch, and the optimizer state is restored; bitwise on the same machine and
number of threads, as any float computation).

The stages live in their own modules: :mod:`~personalens.studies.finetuning.data` (tokens and
batches), :mod:`~personalens.studies.finetuning.adapters`,
:mod:`~personalens.studies.finetuning.training_hooks`, :mod:`~personalens.studies.finetuning.loop`
(loss and optimizer steps), :mod:`~personalens.studies.finetuning.checkpoints` (run files),
:mod:`~personalens.studies.finetuning.result` and :mod:`~personalens.studies.finetuning.load`
(:func:`~personalens.studies.finetuning.load.load_finetuned`).
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from personalens._io import digest
from personalens.conventions import check_layer
from personalens.errors import PersonaLensError
from personalens.runs.lock import holds_run_dir
from personalens.runs.run_dir import open_run_dir
from personalens.steering.resolve import resolve_layers
from personalens.studies.finetuning.adapters import (
    TARGETS,
    Adapters,
    AdapterSpec,
    _check_adaptable,
    _merged_copy,
)
from personalens.studies.finetuning.checkpoints import (
    FORMAT,
    VERSION,
    TrainingState,
    _read_final,
    _resume,
    _write_final,
)
from personalens.studies.finetuning.data import encode_data
from personalens.studies.finetuning.loop import Schedule, train
from personalens.studies.finetuning.result import FinetuneResult
from personalens.studies.finetuning.training_hooks import MODES, training_hooks

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["finetune"]


@holds_run_dir()
def finetune(
    model: HookedTransformer,
    data: Any,
    *,
    mode: str = "plain",
    vector: PersonaVector | Tensor | None = None,
    layers: int | Sequence[int] | None = None,
    coeff: float | None = None,
    coeff_scale: str = "raw",
    params: str = "lora",
    targets: Sequence[str] = TARGETS,
    adapter_layers: Sequence[int] | None = None,
    rank: int = 8,
    alpha: float = 16.0,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    max_grad_norm: float | None = 1.0,
    epochs: int = 1,
    batch_size: int = 8,
    max_steps: int | None = None,
    seed: int = 0,
    train_on_eos: bool = True,
    save_every: int | None = None,
    out: str | os.PathLike[str] | None = None,
    merge: bool = True,
    progress: bool = True,
) -> FinetuneResult:
    """Finetune ``model``'s adapters on chat ``data``; the base model's weights are not changed.

    Args:
        data: anything :func:`personalens.load_screening_data` reads: a ``.jsonl`` file with
            ``messages`` (the last message is the assistant's reply, the one trained on) or
            ``prompt``/``answer``, a CSV, a ``datasets.Dataset``, a DataFrame or a list of dicts.
        mode: ``"plain"``, ``"preventative"`` (add ``coeff · v`` at ``layers`` while training)
            or ``"caft"`` (ablate ``v̂`` at ``layers`` while training); see the module doc.
        vector, layers, coeff, coeff_scale: the steering of the training forward passes (as
            for :func:`personalens.steer`, at every non-padding token; ``layers=None`` uses the
            vector's ``steering_layer``, else the middle layer). ``coeff`` is required for ``"preventative"``; for
            ``"caft"`` it is the fraction ablated (default 1). ``"plain"`` takes none of them.
        params, targets, adapter_layers, rank, alpha: what is trained (module doc): LoRA or a
            full update of ``"mlp_out"`` (MLP ``W_out``) and/or ``"attn_out"`` (attention
            ``W_O``) at ``adapter_layers`` (default all).
        lr, weight_decay, max_grad_norm: AdamW at a constant learning rate, gradient norm
            clipped to ``max_grad_norm`` (``None``: no clipping).
        epochs, batch_size, max_steps: each epoch visits every sample once in an order fixed by
            ``seed`` and the epoch number; ``max_steps`` stops earlier.
        train_on_eos: also train on the end-of-turn token after each reply (so the model learns
            to stop).
        save_every: with ``out``, also checkpoint every this many steps (always at epoch ends).
        out: a run directory: checkpoints, resumable training, and the final adapters (module
            doc). Without it nothing is written and nothing resumes.
        merge: build the merged model (``result.model``); ``False`` leaves it ``None``.

    Returns a :class:`FinetuneResult`. A finished run directory is not trained again: the call
    loads its adapters.
    """
    steering = _steering(model, mode, vector, layers, coeff, coeff_scale)
    _check_schedule(lr, epochs, batch_size, max_steps, save_every)
    spec = _adapter_spec(model, params, targets, adapter_layers, rank, alpha)

    encoded, data_sha, n_samples = encode_data(model, data, train_on_eos)
    n_batches = math.ceil(n_samples / batch_size)
    total = epochs * n_batches if max_steps is None else min(epochs * n_batches, max_steps)
    schedule = Schedule(total, n_batches, batch_size, seed, max_grad_norm, save_every)
    config = _config(
        model,
        mode,
        steering,
        vector,
        spec,
        schedule,
        optimizer={
            "lr": lr,
            "weight_decay": weight_decay,
            "epochs": epochs,
            "max_steps": max_steps,
        },
        data={"n": n_samples, "sha256": data_sha, "encoded": encoded, "train_on_eos": train_on_eos},
    )
    run = open_run_dir(
        out,
        config,
        what="a finetuning run",
        fix="Resume with the same model, data, vector and settings, or use a new out= directory.",
    )
    done = _read_final(run) if run is not None else None
    if done is not None:  # a finished run is loaded, not trained again
        meta, tensors = done
        state = TrainingState(
            len(meta["losses"]), meta["losses"], meta["n_tokens"], float(meta.get("seconds", 0.0))
        )
        return _result(
            model, Adapters(spec, tensors), state, state.step, config, run, merge, n_batches
        )

    adapters = Adapters.init(model, spec, seed)
    opt = torch.optim.AdamW(adapters.parameters(), lr=lr, weight_decay=weight_decay, foreach=False)
    state = _resume(run, adapters, opt) if run is not None else TrainingState()
    start = state.step
    hooks = training_hooks(
        model,
        adapters,
        mode=mode,
        vector=vector,
        layers=steering["layers"] if steering else None,
        coeff=steering["coeff"] if steering else None,
        coeff_scale=coeff_scale,
    )
    train(
        model,
        adapters,
        opt,
        encoded,
        hooks,
        schedule,
        state,
        run=run,
        progress=progress,
        desc=f"finetune ({mode})",
    )
    if run is not None:
        _write_final(run, adapters, config, state)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return _result(model, adapters, state, start, config, run, merge, n_batches)


def _steering(
    model: HookedTransformer,
    mode: str,
    vector: PersonaVector | Tensor | None,
    layers: int | Sequence[int] | None,
    coeff: float | None,
    coeff_scale: str,
) -> dict[str, Any] | None:
    """The steering of the training forward passes (``None`` for ``"plain"``), checked."""
    if mode not in MODES:
        raise PersonaLensError(f"unknown finetuning mode {mode!r}: use one of {MODES}")
    if mode == "plain":
        if vector is not None or layers is not None or coeff is not None:
            raise PersonaLensError(
                "mode='plain' does not steer: drop vector=, layers= and coeff=, or use "
                "mode='preventative' / 'caft'"
            )
        return None
    if vector is None:
        raise PersonaLensError(f"mode={mode!r} needs vector=: the direction to steer along")
    if mode == "preventative" and coeff is None:
        raise PersonaLensError(
            "mode='preventative' needs coeff=: how much of the vector to add while training"
        )
    return {
        "layers": resolve_layers(model, vector, layers),
        "coeff": 1.0 if coeff is None else float(coeff),
        "coeff_scale": coeff_scale if mode == "preventative" else None,
        "positions": "all",
    }


def _check_schedule(
    lr: float, epochs: int, batch_size: int, max_steps: int | None, save_every: int | None
) -> None:
    if lr <= 0 or epochs < 1 or batch_size < 1:
        raise PersonaLensError(
            f"need lr > 0, epochs >= 1 and batch_size >= 1 (got {lr}, {epochs}, {batch_size})"
        )
    if max_steps is not None and max_steps < 1:
        raise PersonaLensError(f"max_steps must be >= 1, got {max_steps}")
    if save_every is not None and save_every < 1:
        raise PersonaLensError(f"save_every must be >= 1, got {save_every}")


def _config(
    model: HookedTransformer,
    mode: str,
    steering: dict[str, Any] | None,
    vector: PersonaVector | Tensor | None,
    spec: AdapterSpec,
    schedule: Schedule,
    *,
    optimizer: dict[str, Any],
    data: dict[str, Any],
) -> dict[str, Any]:
    """The run's identity (``config.json``): the resolved settings, model, vector and data."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": model.cfg.model_name,
            "n_layers": model.cfg.n_layers,
            "d_model": model.cfg.d_model,
        },
        "mode": mode,
        "steering": steering,
        "vector": None
        if vector is None or mode == "plain"
        else {
            "trait": getattr(vector, "trait", None),
            "model": getattr(vector, "model", None),
            "sha256": _vector_sha(vector),
        },
        "adapters": spec.to_dict(),
        "optimizer": {
            "name": "AdamW",
            "lr": optimizer["lr"],
            "weight_decay": optimizer["weight_decay"],
            "max_grad_norm": schedule.max_grad_norm,
            "epochs": optimizer["epochs"],
            "batch_size": schedule.batch_size,
            "max_steps": optimizer["max_steps"],
            "total_steps": schedule.total,
            "seed": schedule.seed,
        },
        "data": {
            "n": data["n"],
            "sha256": data["sha256"],
            "n_response_tokens": sum(len(r) for _, r in data["encoded"]),
            "train_on_eos": data["train_on_eos"],
        },
        "save_every": schedule.save_every,
    }


def _adapter_spec(
    model: HookedTransformer,
    params: str,
    targets: str | Sequence[str],
    adapter_layers: Sequence[int] | None,
    rank: int,
    alpha: float,
) -> AdapterSpec:
    """What is trained, checked against the model."""
    n_layers = model.cfg.n_layers
    a_layers = (
        tuple(range(n_layers))
        if adapter_layers is None
        else tuple(sorted({check_layer(int(L), n_layers) for L in adapter_layers}))
    )
    if not a_layers:
        raise PersonaLensError("adapter_layers is empty: give at least one layer to train")
    if isinstance(targets, str):
        targets = (targets,)
    spec = AdapterSpec(
        params=params, targets=tuple(targets), layers=a_layers, rank=rank, alpha=alpha
    )
    _check_adaptable(model, spec)
    return spec


def _vector_sha(vector: Any) -> str:
    dirs = vector.directions if hasattr(vector, "directions") else vector
    return digest(dirs.detach().float().cpu().contiguous().numpy().tobytes())


def _result(
    model: HookedTransformer,
    adapters: Adapters,
    state: TrainingState,
    start: int,
    config: dict[str, Any],
    run: Path | None,
    merge: bool,
    n_batches: int,
) -> FinetuneResult:
    return FinetuneResult(
        model=_merged_copy(model, adapters) if merge else None,
        adapters=adapters.state(),
        losses=state.losses,
        n_tokens=state.n_tokens,
        steps_per_epoch=n_batches,
        config=config,
        run_dir=run,
        resumed_from_step=start,
        seconds=state.seconds,
    )

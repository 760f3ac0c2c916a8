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
prompt (system, user, template) and padding tokens are never scored (:func:`response_loss`).

**Modes.** ``"plain"``; ``"preventative"``: ``coeff · v`` is added at ``layers`` (through
:func:`personalens.steering.steer.steer`, ``mode="add"``) in every training forward pass, at every
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
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._io import atomic_write_json, check_run_config
from personalens._types import Logits, Mask, Tokens
from personalens.conventions import check_layer
from personalens.errors import PersonaLensError
from personalens.model.chat import (
    ChatBatch,
    batch_from_ids,
    encode_chat,
    encode_response,
    format_chat,
    pad_id,
    stop_token_ids,
)
from personalens.studies.finetuning.adapters import TARGETS, Adapters, AdapterSpec, _check_adaptable
from personalens.studies.finetuning.checkpoints import (
    FORMAT,
    _latest_checkpoint,
    _load_tensors,
    _restore_optimizer,
    _save_checkpoint,
    _save_tensors,
)

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = [
    "MODES",
    "TARGETS",
    "AdapterSpec",
    "Adapters",
    "FinetuneResult",
    "finetune",
    "load_finetuned",
    "response_loss",
    "training_hooks",
]

VERSION = 1
MODES = ("plain", "preventative", "caft")


# ----------------------------------------------------------------------------- the loss


def response_loss(logits: Logits, labels: Tokens, response_mask: Mask) -> Float[Tensor, ""]:
    """Mean next-token cross-entropy over response tokens.

    Position ``t`` is scored on ``labels[t + 1]`` exactly when ``response_mask[t + 1]`` is true,
    so prompt and padding labels never enter the loss or its gradient. ``labels`` are the
    batch's tokens (teacher forcing); ``response_mask`` is :attr:`ChatBatch.response_mask`.
    """
    target = response_mask[:, 1:]
    n = int(target.sum())
    if n == 0:
        raise PersonaLensError("the batch has no response tokens: nothing to train on")
    scored = logits[:, :-1][target].float()  # [n, d_vocab]
    return torch.nn.functional.cross_entropy(scored, labels[:, 1:][target], reduction="sum") / n


def _training_loss(model: HookedTransformer, batch: ChatBatch) -> Tensor:
    """:func:`response_loss` of ``model`` on ``batch``, unembedding only the scored positions."""
    from transformer_lens.utilities.activation_functions import apply_softcap

    resid = model(
        batch.tokens,
        attention_mask=batch.attention_mask.long(),
        stop_at_layer=model.cfg.n_layers,
    )
    target = batch.response_mask[:, 1:]
    picked = resid[:, :-1][target][None]  # [1, n, d_model]; final norm is per position
    if model.cfg.normalization_type is not None:
        picked = model.ln_final(picked)
    logits = apply_softcap(model.unembed(picked), model.cfg.output_logits_soft_cap)[0]
    labels = batch.tokens[:, 1:][target]
    return torch.nn.functional.cross_entropy(logits.float(), labels, reduction="mean")


# ----------------------------------------------------------------------------- training hooks


@contextlib.contextmanager
def training_hooks(
    model: HookedTransformer,
    adapters: Adapters,
    *,
    mode: str = "plain",
    vector: PersonaVector | Tensor | None = None,
    layers: Sequence[int] | None = None,
    coeff: float | None = None,
    coeff_scale: str = "raw",
) -> Iterator[None]:
    """The hooks of a training forward pass, for the duration of a ``with`` block.

    The adapters' hooks, plus for ``mode="preventative"`` ``steer(mode="add", coeff=coeff)`` and
    for ``mode="caft"`` ``steer(mode="ablate")`` (``coeff``, default 1, is the fraction of the
    projection removed) at ``layers``, at every non-padding position (a teacher-forced forward
    has no separate reply positions to single out). Everything is removed on exit, also
    after an exception; hooks added by the caller are untouched.
    """
    from personalens.steering.steer import steer

    if mode not in MODES:
        raise PersonaLensError(f"unknown finetuning mode {mode!r}: use one of {MODES}")
    with contextlib.ExitStack() as stack:
        # steering first: a coeff_scale="resid" calibration must see the base model, not the
        # adapters (the hook points differ, so the order does not matter to the forward pass)
        if mode == "preventative":
            stack.enter_context(
                steer(
                    model,
                    vector,
                    coeff,
                    layers=list(layers) if layers is not None else None,
                    positions="all",
                    mode="add",
                    coeff_scale=coeff_scale,
                )
            )
        elif mode == "caft":
            stack.enter_context(
                steer(
                    model,
                    vector,
                    coeff,
                    layers=list(layers) if layers is not None else None,
                    positions="all",
                    mode="ablate",
                )
            )
        stack.enter_context(model.hooks(fwd_hooks=adapters.hooks()))
        yield


# ----------------------------------------------------------------------------- data


def _end_of_turn(tokenizer: Any) -> list[int]:
    """The end-of-turn token the chat template writes right after an assistant message."""
    marker = "\u2063personalens\u2063"
    text = format_chat(
        tokenizer,
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": marker}],
        add_generation_prompt=False,
    )
    suffix = text.split(marker, 1)[1] if marker in text else ""
    stops = set(stop_token_ids(tokenizer))
    for tok in tokenizer.encode(suffix, add_special_tokens=False):
        if tok in stops:
            return [int(tok)]
    if tokenizer.eos_token_id is None:
        raise PersonaLensError(
            "the tokenizer has no end-of-turn or eos token to train on; pass train_on_eos=False"
        )
    return [int(tokenizer.eos_token_id)]


def _encode_data(
    model: HookedTransformer, data: Any, train_on_eos: bool
) -> tuple[list[tuple[list[int], list[int]]], str, int]:
    """Token ids of every (prompt, response) sample, a hash of the data, and its sample count."""
    from personalens.studies.screening import load_screening_data

    samples = load_screening_data(data)
    tok = model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    eot = _end_of_turn(tok) if train_on_eos else []
    encoded = []
    for s in samples:
        p, r = encode_chat(tok, s.prompt), encode_response(tok, s.response) + eot
        if len(p) + len(r) > model.cfg.n_ctx:
            raise PersonaLensError(
                f"sample {s.id!r} is {len(p) + len(r)} tokens long, more than the model's "
                f"context of {model.cfg.n_ctx}; shorten or drop it"
            )
        encoded.append((p, r))
    digest = hashlib.sha256(
        json.dumps([[s.id, s.prompt, s.response] for s in samples], ensure_ascii=False).encode()
    ).hexdigest()
    return encoded, digest, len(samples)


def _epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=g).tolist()


def _batch_of(
    model: HookedTransformer, encoded: list, step: int, n_batches: int, batch_size: int, seed: int
) -> ChatBatch:
    epoch, i = divmod(step, n_batches)
    order = _epoch_order(len(encoded), seed, epoch)[i * batch_size : (i + 1) * batch_size]
    return batch_from_ids(
        [encoded[j][0] for j in order],
        [encoded[j][1] for j in order],
        pad_id(model.tokenizer),
        model.cfg.device,
    )


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class FinetuneResult:
    """A finished finetune: ``model`` (a merged copy; the base model is unchanged), the adapter
    tensors, the per-step losses and the resolved ``config``."""

    model: Any  # HookedTransformer with the adapters merged into its weights
    adapters: dict[str, Tensor] = field(repr=False)
    losses: list[float]
    n_tokens: list[int]
    steps_per_epoch: int
    config: dict[str, Any] = field(repr=False)
    run_dir: Path | None = None
    resumed_from_step: int = 0
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.losses)

    @property
    def final_loss(self) -> float:
        return self.losses[-1] if self.losses else math.nan

    def to_frame(self) -> pd.DataFrame:
        """One row per optimizer step: ``step`` (1-based), ``epoch``, ``loss``, ``n_tokens``."""
        import pandas as pd

        return pd.DataFrame(
            {
                "step": list(range(1, self.steps + 1)),
                "epoch": [s // self.steps_per_epoch for s in range(self.steps)],
                "loss": self.losses,
                "n_tokens": self.n_tokens,
            }
        )

    def summary(self) -> dict[str, Any]:
        first = self.losses[: self.steps_per_epoch]
        last = self.losses[-self.steps_per_epoch :]
        return {
            "mode": self.config["mode"],
            "steps": self.steps,
            "first_epoch_loss": sum(first) / len(first) if first else math.nan,
            "last_epoch_loss": sum(last) / len(last) if last else math.nan,
            "final_loss": self.final_loss,
            "n_trained_parameters": sum(t.numel() for t in self.adapters.values()),
            "seconds": self.seconds,
            "resumed_from_step": self.resumed_from_step,
        }


# ----------------------------------------------------------------------------- finetune


def _vector_sha(vector: Any) -> str | None:
    if vector is None:
        return None
    dirs = vector.directions if hasattr(vector, "directions") else vector
    return hashlib.sha256(dirs.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


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
            vector's ``best_layer``). ``coeff`` is required for ``"preventative"``; for
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
    from personalens.steering.steer import resolve_layers

    if mode not in MODES:
        raise PersonaLensError(f"unknown finetuning mode {mode!r}: use one of {MODES}")
    n_layers = model.cfg.n_layers
    steering = None
    if mode == "plain":
        if vector is not None or layers is not None or coeff is not None:
            raise PersonaLensError(
                "mode='plain' does not steer: drop vector=, layers= and coeff=, or use "
                "mode='preventative' / 'caft'"
            )
    else:
        if vector is None:
            raise PersonaLensError(f"mode={mode!r} needs vector=: the direction to steer along")
        if mode == "preventative" and coeff is None:
            raise PersonaLensError(
                "mode='preventative' needs coeff=: how much of the vector to add while training"
            )
        steer_layers = resolve_layers(model, vector, layers)
        steering = {
            "layers": steer_layers,
            "coeff": 1.0 if coeff is None else float(coeff),
            "coeff_scale": coeff_scale if mode == "preventative" else None,
            "positions": "all",
        }
    if lr <= 0 or epochs < 1 or batch_size < 1:
        raise PersonaLensError(
            f"need lr > 0, epochs >= 1 and batch_size >= 1 (got {lr}, {epochs}, {batch_size})"
        )
    if max_steps is not None and max_steps < 1:
        raise PersonaLensError(f"max_steps must be >= 1, got {max_steps}")
    if save_every is not None and save_every < 1:
        raise PersonaLensError(f"save_every must be >= 1, got {save_every}")
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

    encoded, data_sha, n_samples = _encode_data(model, data, train_on_eos)
    n_batches = math.ceil(n_samples / batch_size)
    total = epochs * n_batches if max_steps is None else min(epochs * n_batches, max_steps)
    config = {
        "format": FORMAT,
        "version": VERSION,
        "model": {
            "name": model.cfg.model_name,
            "n_layers": n_layers,
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
            "lr": lr,
            "weight_decay": weight_decay,
            "max_grad_norm": max_grad_norm,
            "epochs": epochs,
            "batch_size": batch_size,
            "max_steps": max_steps,
            "total_steps": total,
            "seed": seed,
        },
        "data": {
            "n": n_samples,
            "sha256": data_sha,
            "n_response_tokens": sum(len(r) for _, r in encoded),
            "train_on_eos": train_on_eos,
        },
        "save_every": save_every,
    }
    run = Path(out) if out is not None else None
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        check_run_config(
            run / "config.json",
            config,
            what="a finetuning run",
            fix="Resume with the same model, data, vector and settings, or use a new out= directory.",
        )
        done = _read_final(run)
        if done is not None:
            meta, tensors = done
            adapters = Adapters(spec, tensors)
            return FinetuneResult(
                model=_merged_copy(model, adapters) if merge else None,
                adapters=adapters.state(),
                losses=meta["losses"],
                n_tokens=meta["n_tokens"],
                steps_per_epoch=n_batches,
                config=config,
                run_dir=run,
                resumed_from_step=len(meta["losses"]),
                seconds=float(meta.get("seconds", 0.0)),
            )

    adapters = Adapters.init(model, spec, seed)
    opt = torch.optim.AdamW(adapters.parameters(), lr=lr, weight_decay=weight_decay, foreach=False)
    losses: list[float] = []
    n_tokens: list[int] = []
    start, seconds_before = 0, 0.0
    if run is not None:
        latest = _latest_checkpoint(run)
        if latest is not None:
            ckpt, state = latest
            restored = _load_tensors(ckpt / "adapters.safetensors", state["adapters_sha256"])
            with torch.no_grad():
                for name, t in adapters.tensors.items():
                    t.copy_(restored[name])
            _restore_optimizer(
                opt, _load_tensors(ckpt / "optimizer.safetensors", state["optimizer_sha256"])
            )
            losses, n_tokens = list(state["losses"]), list(state["n_tokens"])
            start, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))

    frozen = [p for p in model.parameters() if p.requires_grad]
    bar = None
    if progress and start < total:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=start, desc=f"finetune ({mode})", unit="step")
    t_train = time.perf_counter()
    try:
        for p in frozen:
            p.requires_grad_(False)
        with (
            torch.inference_mode(False),
            torch.enable_grad(),
            training_hooks(
                model,
                adapters,
                mode=mode,
                vector=vector,
                layers=steering["layers"] if steering else None,
                coeff=steering["coeff"] if steering else None,
                coeff_scale=coeff_scale,
            ),
        ):
            for step in range(start, total):
                batch = _batch_of(model, encoded, step, n_batches, batch_size, seed)
                opt.zero_grad(set_to_none=True)
                loss = _training_loss(model, batch)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(adapters.parameters(), max_grad_norm)
                opt.step()
                losses.append(float(loss.detach()))
                n_tokens.append(int(batch.response_mask[:, 1:].sum()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
                done_steps = step + 1
                boundary = done_steps % n_batches == 0 or done_steps == total
                if run is not None and (
                    boundary or (save_every is not None and done_steps % save_every == 0)
                ):
                    _save_checkpoint(
                        run,
                        adapters,
                        opt,
                        {
                            "step": done_steps,
                            "losses": losses,
                            "n_tokens": n_tokens,
                            "seconds": seconds_before + time.perf_counter() - t_train,
                        },
                    )
    finally:
        for p in frozen:
            p.requires_grad_(True)
        if bar is not None:
            bar.close()
    seconds = seconds_before + time.perf_counter() - t_train
    for t in adapters.tensors.values():
        t.requires_grad_(False)
    if run is not None:
        _write_final(run, adapters, config, losses, n_tokens, seconds)
        shutil.rmtree(run / "checkpoints", ignore_errors=True)
    return FinetuneResult(
        model=_merged_copy(model, adapters) if merge else None,
        adapters=adapters.state(),
        losses=losses,
        n_tokens=n_tokens,
        steps_per_epoch=n_batches,
        config=config,
        run_dir=run,
        resumed_from_step=start,
        seconds=seconds,
    )


def _write_final(
    run: Path,
    adapters: Adapters,
    config: dict[str, Any],
    losses: list[float],
    n_tokens: list[int],
    seconds: float,
) -> None:
    (run / "adapters.json").unlink(missing_ok=True)
    sha = _save_tensors(run / "adapters.safetensors", adapters.state())
    atomic_write_json(
        run / "adapters.json",
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config,
            "tensors_file": "adapters.safetensors",
            "tensors_sha256": sha,
            "n_trained_parameters": adapters.n_parameters(),
            "steps": len(losses),
            "final_loss": losses[-1] if losses else None,
            "losses": losses,
            "n_tokens": n_tokens,
            "seconds": round(seconds, 3),
        },
    )


def _read_final(run: Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    path = run / "adapters.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise PersonaLensError(f"{path} is not a personalens finetuning result")
    if int(meta.get("version", 0)) > VERSION:
        raise PersonaLensError(
            f"{path} has format version {meta.get('version')}: upgrade personalens"
        )
    return meta, _load_tensors(run / meta["tensors_file"], meta["tensors_sha256"])


# ----------------------------------------------------------------------------- loading


def _merged_copy(model: HookedTransformer, adapters: Adapters) -> HookedTransformer:
    """A copy of ``model`` (no hooks, frozen, eval) with the adapters merged into its weights."""
    from transformer_lens.hook_points import HookPoint

    memo: dict[int, Any] = {}
    if model.tokenizer is not None:
        memo[id(model.tokenizer)] = model.tokenizer  # shared, not copied
    new = copy.deepcopy(model, memo)
    for module in new.modules():  # the copy must not inherit hooks active on the original
        for name in (
            "_forward_hooks",
            "_forward_hooks_with_kwargs",
            "_forward_hooks_always_called",
            "_forward_pre_hooks",
            "_forward_pre_hooks_with_kwargs",
            "_backward_hooks",
            "_backward_pre_hooks",
        ):
            hooks = getattr(module, name, None)
            if hooks is not None:
                hooks.clear()
        if isinstance(module, HookPoint):
            module.fwd_hooks = []
            module.bwd_hooks = []
    new.eval()
    for p in new.parameters():
        p.requires_grad_(False)
        p.grad = None
    adapters.merge_into(new)
    return new


def load_finetuned(
    base: HookedTransformer | str | os.PathLike[str] | None,
    run_dir: str | os.PathLike[str],
    *,
    checkpoint: str | None = None,
) -> HookedTransformer:
    """The finetuned model of ``run_dir``: the base model with the trained adapters merged in.

    ``base`` is the loaded base model (it is copied, not changed) or anything
    :func:`personalens.load_model` accepts (``None``: the embedded model). The base must be the
    model the run was trained from (name, layers and width are checked). A run that has not
    finished raises; ``checkpoint="latest"`` merges its last checkpoint instead.
    """
    run = Path(run_dir)
    config_path = run / "config.json"
    if not config_path.is_file():
        raise PersonaLensError(
            f"{run} is not a finetuning run directory (no config.json); give the out= directory "
            "of personalens.studies.finetuning.train"
        )
    config = json.loads(config_path.read_text())
    if config.get("format") != FORMAT:
        raise PersonaLensError(f"{config_path} is not a personalens finetuning config")
    spec = AdapterSpec.from_dict(config["adapters"])
    done = _read_final(run)
    if done is not None:
        tensors = done[1]
    else:
        latest = _latest_checkpoint(run)
        if checkpoint != "latest" or latest is None:
            where = f" (last checkpoint: step {latest[1]['step']})" if latest else ""
            raise PersonaLensError(
                f"{run} holds no finished finetune{where}: rerun personalens.studies.finetuning.train with the "
                "same arguments to finish it, or pass checkpoint='latest' to load the last "
                "checkpoint"
            )
        ckpt, state = latest
        tensors = _load_tensors(ckpt / "adapters.safetensors", state["adapters_sha256"])
    owned = not hasattr(base, "cfg")
    if owned:
        from personalens.model.load import load_model

        base = load_model(base)
    want = config["model"]
    got = {"name": base.cfg.model_name, "n_layers": base.cfg.n_layers, "d_model": base.cfg.d_model}
    if got != want:
        raise PersonaLensError(
            f"{run} was finetuned from {want} but the base model is {got}: load the model the "
            "run was trained from"
        )
    adapters = Adapters(spec, {k: v.to(base.cfg.device) for k, v in tensors.items()})
    if owned:
        adapters.merge_into(base)
        return base
    return _merged_copy(base, adapters)

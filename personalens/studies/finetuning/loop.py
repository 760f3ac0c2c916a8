"""The training loop of a finetune: the response-only loss, optimizer steps and checkpoints.

**Loss.** Mean next-token cross-entropy over the response tokens only (the assistant's reply
and, with ``train_on_eos=True``, the end-of-turn token the chat template puts after it);
prompt (system, user, template) and padding tokens are never scored (:func:`response_loss`).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens.utilities.activation_functions import apply_softcap

from personalens._types import Logits, Mask, Tokens
from personalens.errors import PersonaLensError
from personalens.model.chat import ChatBatch
from personalens.studies.finetuning.adapters import Adapters
from personalens.studies.finetuning.checkpoints import TrainingState, _save_checkpoint
from personalens.studies.finetuning.data import Encoded, batch_of

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

__all__ = ["Schedule", "response_loss", "train"]


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


@dataclass(frozen=True)
class Schedule:
    """Which batches, how many steps, and when to checkpoint (with a run directory)."""

    total: int  # optimizer steps in all
    n_batches: int  # steps per epoch
    batch_size: int
    seed: int
    max_grad_norm: float | None
    save_every: int | None

    def checkpoint_after(self, done_steps: int) -> bool:
        """Checkpoint at every epoch end, at the last step, and every ``save_every`` steps."""
        boundary = done_steps % self.n_batches == 0 or done_steps == self.total
        return boundary or (self.save_every is not None and done_steps % self.save_every == 0)


def train(
    model: HookedTransformer,
    adapters: Adapters,
    opt: torch.optim.Optimizer,
    encoded: Encoded,
    hooks: contextlib.AbstractContextManager,
    schedule: Schedule,
    state: TrainingState,
    *,
    run: Path | None,
    progress: bool,
    desc: str,
) -> None:
    """Optimizer steps ``state.step .. schedule.total - 1`` inside ``hooks`` (the training
    hooks), updating ``state`` in place; the model's own parameters are frozen meanwhile."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    bar = None
    if progress and state.step < schedule.total:
        bar = tqdm(total=schedule.total, initial=state.step, desc=desc, unit="step")
    seconds_before, t_train = state.seconds, time.perf_counter()
    try:
        for p in frozen:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad(), hooks:
            for step in range(state.step, schedule.total):
                loss, n_tok = _step(model, adapters, opt, encoded, schedule, step)
                state.losses.append(loss)
                state.n_tokens.append(n_tok)
                state.step = step + 1
                state.seconds = seconds_before + time.perf_counter() - t_train
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.3f}")
                if run is not None and schedule.checkpoint_after(state.step):
                    _save_checkpoint(run, adapters, opt, state)
    finally:
        for p in frozen:
            p.requires_grad_(True)
        if bar is not None:
            bar.close()
    state.seconds = seconds_before + time.perf_counter() - t_train
    for t in adapters.tensors.values():
        t.requires_grad_(False)


def _step(
    model: HookedTransformer,
    adapters: Adapters,
    opt: torch.optim.Optimizer,
    encoded: Encoded,
    schedule: Schedule,
    step: int,
) -> tuple[float, int]:
    """One optimizer step on the batch of ``step``: its loss and its number of scored tokens."""
    batch = batch_of(model, encoded, step, schedule.n_batches, schedule.batch_size, schedule.seed)
    opt.zero_grad(set_to_none=True)
    loss = _training_loss(model, batch)
    loss.backward()
    if schedule.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(adapters.parameters(), schedule.max_grad_norm)
    opt.step()
    return float(loss.detach()), int(batch.response_mask[:, 1:].sum())

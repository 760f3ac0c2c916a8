"""The result of a finetune: the merged model, the adapter tensors and the loss history."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from personalens.results import Result, json_safe

__all__ = ["FinetuneResult"]


@dataclass(frozen=True)
class FinetuneResult(Result):
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

    def frame_records(self) -> list[dict[str, Any]]:
        """One row per optimizer step: ``step`` (1-based), ``epoch``, ``loss``, ``n_tokens``."""
        return [
            {"step": s + 1, "epoch": s // self.steps_per_epoch, "loss": loss, "n_tokens": n}
            for s, (loss, n) in enumerate(zip(self.losses, self.n_tokens))
        ]

    def to_dict(self) -> dict[str, Any]:
        """The fields without ``model`` and ``adapters`` (the run directory's
        ``adapters.safetensors`` holds the tensors); ``run_dir`` as a string."""
        out = {
            f.name: json_safe(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.name not in ("model", "adapters")
        }
        out["run_dir"] = None if self.run_dir is None else str(self.run_dir)
        return out

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

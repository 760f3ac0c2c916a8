"""The result of a screen: per-sample projection differences ΔP of one dataset."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.results import Result
from personalens.stats import nan_mean

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ScreeningResult"]

Scores = Float[Tensor, " n"]


@dataclass(frozen=True)
class ScreeningResult(Result):
    """Per-sample projection differences of one screened dataset, in the dataset's order.

    ``delta_p = proj_dataset - proj_model``; ``proj_model`` (and ``delta_p``) is NaN where the
    model's own reply was empty. ``settings`` are the run's resolved settings.
    """

    ids: list[str]
    delta_p: Scores
    proj_dataset: Scores
    proj_model: Scores
    layer: int
    name: str = "dataset"
    model_responses: list[str] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def _finite(self) -> Tensor:
        return self.delta_p[~self.delta_p.isnan()]

    @property
    def mean(self) -> float:
        """Mean ΔP over samples (NaN samples left out)."""
        return nan_mean(self.delta_p)

    @property
    def std(self) -> float:
        d = self._finite()
        return d.std().item() if len(d) > 1 else math.nan

    def frame_records(self) -> list[dict[str, Any]]:
        """``id, delta_p, proj_dataset, proj_model`` per sample, in the dataset's order."""
        columns = (self.delta_p.tolist(), self.proj_dataset.tolist(), self.proj_model.tolist())
        return [
            {"id": i, "delta_p": d, "proj_dataset": p, "proj_model": m}
            for i, d, p, m in zip(self.ids, *columns)
        ]

    def to_frame(self) -> pd.DataFrame:
        """``id, delta_p, proj_dataset, proj_model``, highest ΔP first (NaN last)."""
        df = super().to_frame()
        df = df.sort_values("delta_p", ascending=False, na_position="last", kind="stable")
        return df.reset_index(drop=True)

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` samples with the highest ΔP."""
        return self.to_frame().head(k)

    def summary(self) -> dict[str, Any]:
        d = self._finite().double()
        qs = (0.05, 0.25, 0.5, 0.75, 0.95)
        quant = (
            torch.quantile(d, torch.tensor(qs, dtype=torch.float64)).tolist()
            if len(d)
            else [math.nan] * len(qs)
        )
        return {
            "name": self.name,
            "n": len(self),
            "n_nan": len(self) - len(d),
            "layer": self.layer,
            "mean_delta_p": self.mean,
            "std_delta_p": self.std,
            "min_delta_p": d.min().item() if len(d) else math.nan,
            "max_delta_p": d.max().item() if len(d) else math.nan,
            "quantiles": {f"p{round(q * 100)}": v for q, v in zip(qs, quant)},
            "mean_proj_dataset": self.proj_dataset.mean().item(),
            "mean_proj_model": nan_mean(self.proj_model),
        }

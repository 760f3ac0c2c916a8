"""Small, dependency-free statistics used across personalens."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor


def _ranks(x: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """1-based ranks with ties given their average rank."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    ranks = torch.empty_like(x, dtype=torch.float64)
    n = len(x)
    i = 0
    while i < n:
        j = i
        while j + 1 < n and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def roc_auc(pos: Sequence[float] | Tensor, neg: Sequence[float] | Tensor) -> float:
    """Area under the ROC curve for scores of positives vs negatives (Mann-Whitney U / (n_pos n_neg)).

    1.0: every positive scores above every negative; 0.5: chance; ties count half. NaN when a
    class is empty.
    """
    p = torch.as_tensor(pos, dtype=torch.float64).flatten()
    q = torch.as_tensor(neg, dtype=torch.float64).flatten()
    if len(p) == 0 or len(q) == 0:
        return math.nan
    ranks = _ranks(torch.cat([p, q]))
    u = ranks[: len(p)].sum().item() - len(p) * (len(p) + 1) / 2.0
    return u / (len(p) * len(q))


def cohens_d(pos: Sequence[float] | Tensor, neg: Sequence[float] | Tensor) -> float:
    p = torch.as_tensor(pos, dtype=torch.float64).flatten()
    q = torch.as_tensor(neg, dtype=torch.float64).flatten()
    if len(p) < 2 or len(q) < 2:
        return math.nan
    pooled = ((len(p) - 1) * p.var() + (len(q) - 1) * q.var()) / (len(p) + len(q) - 2)
    return ((p.mean() - q.mean()) / pooled.sqrt()).item() if pooled > 0 else math.nan


def pearson_r(x: Any, y: Any) -> float:
    """Pearson correlation of paired values (sequences, arrays, Series or tensors); pairs with a
    NaN are dropped.

    NaN when fewer than 3 pairs remain or either side is constant.
    """
    a, b = (
        torch.as_tensor(v if isinstance(v, Tensor) else np.array(v, dtype=np.float64))
        .to(torch.float64)
        .flatten()
        for v in (x, y)
    )
    if a.shape != b.shape:
        raise ValueError(f"pearson_r needs paired values, got {len(a)} and {len(b)}")
    keep = ~(a.isnan() | b.isnan())
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = (a.square().sum() * b.square().sum()).sqrt()
    return (a @ b / denom).item() if denom > 0 else math.nan


def pearson_ci(r: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of a Pearson ``r`` from ``n`` pairs (Fisher z; NaN when n < 4)."""
    if n < 4 or math.isnan(r):
        return (math.nan, math.nan)
    from statistics import NormalDist

    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(n - 3)
    return (math.tanh(z - half), math.tanh(z + half))

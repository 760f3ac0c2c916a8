"""The statistics of personalens: ROC-AUC (plain and bootstrap-weighted), bootstrap resamples
and percentile intervals, Cohen's d, Pearson r with its Fisher-z interval, NaN-aware means, and
the Wilson interval of a proportion."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError


def weighted_auc(
    pos: Float[Tensor, "n_pos n_cols"],
    neg: Float[Tensor, "n_neg n_cols"],
    w_pos: Float[Tensor, "n_boot n_pos"],
    w_neg: Float[Tensor, "n_boot n_neg"],
) -> Float[Tensor, "n_boot n_cols"]:
    """ROC-AUC per column of samples weighted by multiplicities (a bootstrap resample's counts).

    ``U = sum_i w_i (W_neg(< p_i) + W_neg(= p_i) / 2)``, with the weighted neg counts read off a
    cumulative sum over the sorted neg scores: ``O(n_boot x n_cols x n)`` after one sort. The
    counts are half-integers, summed exactly in float64, then divided by ``n_pos n_neg``, so
    with unit weights this is exactly :func:`roc_auc` (which calls it).
    """
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    n_boot, n_cols = w_pos.shape[0], pos.shape[1]
    neg_sorted, order = torch.sort(neg, dim=0)
    seq = neg_sorted.T.contiguous()  # [n_cols, n_neg], sorted along the last dim
    values = pos.T.contiguous()  # [n_cols, n_pos]
    below = torch.searchsorted(seq, values, right=False)  # neg < p
    upto = torch.searchsorted(seq, values, right=True)  # neg <= p
    w_sorted = w_neg[:, order.T]  # [n_boot, n_cols, n_neg] in sorted order per column
    cum = torch.cat([w_sorted.new_zeros(n_boot, n_cols, 1), w_sorted.cumsum(-1)], dim=-1)
    lo = cum.gather(-1, below.unsqueeze(0).expand(n_boot, -1, -1))
    hi = cum.gather(-1, upto.unsqueeze(0).expand(n_boot, -1, -1))
    u = ((lo + 0.5 * (hi - lo)) * w_pos.unsqueeze(1)).sum(-1)
    return u / (n_pos * n_neg)


def roc_auc(pos: Sequence[float] | Tensor, neg: Sequence[float] | Tensor) -> float:
    """Area under the ROC curve of positives' vs negatives' scores: Mann-Whitney U / (n_pos n_neg).

    1.0: every positive scores above every negative; 0.5: chance; ties count half. NaN when a
    class is empty or a score is NaN.
    """
    # Not scipy.stats.mannwhitneyu (equal on random data with ties, tests/unit/test_metrics.py):
    # sharing weighted_auc keeps this bit-equal to the layer sweep's bootstrap AUCs, without
    # scipy.stats' 0.75 s import.
    p = torch.as_tensor(pos, dtype=torch.float64).flatten()
    q = torch.as_tensor(neg, dtype=torch.float64).flatten()
    if len(p) == 0 or len(q) == 0 or bool(p.isnan().any()) or bool(q.isnan().any()):
        return math.nan
    return weighted_auc(p[:, None], q[:, None], p.new_ones(1, len(p)), q.new_ones(1, len(q))).item()


def bootstrap_counts(n: int, n_boot: int, generator: torch.Generator) -> Float[Tensor, "n_boot n"]:
    """How often each of ``n`` samples is drawn in each of ``n_boot`` resamples with replacement
    (float64 multiplicities, e.g. the weights of :func:`weighted_auc`)."""
    idx = torch.randint(0, n, (n_boot, n), generator=generator)
    counts = torch.zeros(n_boot, n, dtype=torch.float64)
    return counts.scatter_add_(1, idx, torch.ones(n_boot, n, dtype=torch.float64))


def percentile_intervals(
    boot: Float[Tensor, "n_boot n_cols"], ci: float | int
) -> tuple[tuple[float, float], ...]:
    """Percentile bootstrap interval of coverage ``ci`` per column (linear interpolation, as
    numpy's default quantile)."""
    alpha = (1.0 - float(ci)) / 2.0
    q = torch.tensor([alpha, 1.0 - alpha], dtype=torch.float64)
    lo_hi = torch.quantile(boot, q, dim=0)  # [2, n_cols]
    return tuple((float(a), float(b)) for a, b in zip(lo_hi[0].tolist(), lo_hi[1].tolist()))


def nan_mean(values: Tensor) -> float:
    """Mean of the non-NaN values of a tensor (NaN when there are none)."""
    kept = values[~values.isnan()]
    return kept.mean().item() if len(kept) else math.nan


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
    # Not scipy.stats.pearsonr (within 1e-15, tests/unit/test_metrics.py): no 0.75 s import and
    # no warning on constant input.
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
    # scipy computes the same interval only from the data (pearsonr(x, y).confidence_interval()),
    # equal within 1e-14 (tests/unit/test_metrics.py); callers here hold r and n.
    if n < 4 or math.isnan(r):
        return (math.nan, math.nan)
    z = math.atanh(max(min(r, 1 - 1e-12), -1 + 1e-12))
    half = NormalDist().inv_cdf(0.5 + level / 2) / math.sqrt(n - 3)
    return (math.tanh(z - half), math.tanh(z + half))


def wilson_interval(
    successes: float | int, n: int, confidence: float = 0.95
) -> tuple[float, float]:
    """Wilson score interval for a proportion ``successes / n`` (NaNs when ``n == 0``).

    ``center = (p + z²/2n) / (1 + z²/n)``, ``half = z · sqrt(p(1-p)/n + z²/4n²) / (1 + z²/n)``
    with ``z`` the two-sided normal quantile of ``confidence``.
    """
    if not 0 < confidence < 1:
        raise PersonaLensError(f"confidence must be in (0, 1), got {confidence}")
    if n < 0 or successes < 0 or successes > n:
        raise PersonaLensError(f"need 0 <= successes <= n, got {successes} of {n}")
    if n == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)

"""The statistics of personalens: ROC-AUC (plain and bootstrap-weighted), bootstrap resamples
and percentile intervals (stratified pos/neg resamples of per-column AUCs), Cohen's d, Pearson r
with its Fisher-z interval, Spearman's rho with its Fisher-z interval, NaN-aware means, and the
Wilson interval of a proportion."""

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

Interval = tuple[float, float]

# bootstrap AUCs are computed in blocks of resamples of about this many float64 values
_BLOCK_ELEMENTS = 8_000_000

# the scores of the positive and the negative samples (a column per layer, variant ...), how often
# each sample is drawn in each bootstrap resample, and an AUC per resample and column
PosScores = Float[Tensor, "n_pos n_cols"]
NegScores = Float[Tensor, "n_neg n_cols"]
PosCounts = Float[Tensor, "n_boot n_pos"]
NegCounts = Float[Tensor, "n_boot n_neg"]
BootAUCs = Float[Tensor, "n_boot n_cols"]


def weighted_auc(pos: PosScores, neg: NegScores, w_pos: PosCounts, w_neg: NegCounts) -> BootAUCs:
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


def stratified_bootstrap_counts(
    n_pos: int, n_neg: int, n_boot: int, seed: int
) -> tuple[PosCounts, NegCounts]:
    """Multiplicities of ``n_boot`` stratified resamples: pos and neg samples are redrawn
    separately with replacement (so both classes keep their sizes), pos first, from
    ``torch.Generator().manual_seed(seed)``: the same seed gives the same resamples."""
    g = torch.Generator().manual_seed(seed)
    return bootstrap_counts(n_pos, n_boot, g), bootstrap_counts(n_neg, n_boot, g)


def bootstrap_auc(pos: PosScores, neg: NegScores, w_pos: PosCounts, w_neg: NegCounts) -> BootAUCs:
    """:func:`weighted_auc` of every resample, in blocks of resamples that bound the memory."""
    n_pos, n_neg, n_cols = pos.shape[0], neg.shape[0], pos.shape[1]
    block = max(1, _BLOCK_ELEMENTS // max(1, n_cols * (n_pos + n_neg + 1)))
    return torch.cat(
        [
            weighted_auc(pos, neg, w_pos[i : i + block], w_neg[i : i + block])
            for i in range(0, w_pos.shape[0], block)
        ]
    )


def auc_intervals(
    pos: PosScores,
    neg: NegScores,
    *,
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[Interval, ...] | None:
    """Percentile bootstrap interval of the ROC-AUC of each column (float64 scores), over
    ``n_boot`` :func:`stratified_bootstrap_counts` resamples; ``None`` when ``n_boot`` is 0 or
    a class is empty. The layer sweep draws the same resamples, so with the same ``n_boot``,
    ``ci`` and ``seed`` its intervals are these."""
    p, q = pos.to(torch.float64), neg.to(torch.float64)
    if n_boot <= 0 or p.shape[0] == 0 or q.shape[0] == 0:
        return None
    w_pos, w_neg = stratified_bootstrap_counts(p.shape[0], q.shape[0], n_boot, seed)
    return percentile_intervals(bootstrap_auc(p, q, w_pos, w_neg), ci)


def percentile_intervals(boot: BootAUCs, ci: float | int) -> tuple[tuple[float, float], ...]:
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


def average_ranks(values: Any) -> np.ndarray:
    """Ranks 1..n of ``values`` with ties given their average rank (``scipy.stats.rankdata``'s
    default)."""
    a = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(a, kind="mergesort")
    inverse = np.empty(len(a), dtype=np.intp)
    inverse[order] = np.arange(len(a))
    s = a[order]
    first = np.r_[True, s[1:] != s[:-1]]
    dense = first.cumsum()[inverse]
    bounds = np.r_[np.nonzero(first)[0], len(a)]
    return 0.5 * (bounds[dense] + bounds[dense - 1] + 1)


def spearman_r(x: Any, y: Any) -> float:
    """Spearman's rank correlation of paired values (Pearson r of their average ranks); pairs
    with a NaN are dropped. NaN when fewer than 3 pairs remain or either side is constant."""
    a = np.asarray(x.tolist() if isinstance(x, Tensor) else x, dtype=np.float64).ravel()
    b = np.asarray(y.tolist() if isinstance(y, Tensor) else y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"spearman_r needs paired values, got {len(a)} and {len(b)}")
    keep = ~(np.isnan(a) | np.isnan(b))
    if keep.sum() < 3:
        return math.nan
    return pearson_r(average_ranks(a[keep]), average_ranks(b[keep]))


def spearman_ci(rho: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Confidence interval of Spearman's ``rho`` from ``n`` pairs: Fisher z with the variance
    ``1.06 / (n - 3)`` of Fieller, Hartley and Pearson (1957). NaN when n < 4."""
    if n < 4 or math.isnan(rho):
        return (math.nan, math.nan)
    z = math.atanh(max(min(rho, 1 - 1e-12), -1 + 1e-12))
    half = NormalDist().inv_cdf(0.5 + level / 2) * math.sqrt(1.06 / (n - 3))
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

import math

import numpy as np
import pytest
import torch

from personalens.stats import (
    bootstrap_counts,
    cohens_d,
    nan_mean,
    pearson_ci,
    pearson_r,
    percentile_intervals,
    roc_auc,
    weighted_auc,
)


def test_auc_extremes_and_ties():
    assert roc_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert roc_auc([1.0, 2.0], [3.0, 4.0]) == 0.0
    assert roc_auc([1.0, 1.0], [1.0, 1.0]) == 0.5
    assert roc_auc([2.0, 1.0], [1.0, 0.0]) == 0.875  # one tie counts half
    assert math.isnan(roc_auc([], [1.0]))


def test_auc_matches_pairwise_definition():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(37, generator=g).round(decimals=1) + 0.5
    q = torch.randn(23, generator=g).round(decimals=1)
    pairwise = (
        ((p[:, None] > q[None]).double() + 0.5 * (p[:, None] == q[None]).double()).mean().item()
    )
    assert abs(roc_auc(p, q) - pairwise) < 1e-12


def test_cohens_d():
    assert cohens_d([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    assert cohens_d([2.0, 3.0, 4.0], [1.0, 2.0, 3.0]) == 1.0


def _random_pairs_with_ties(seed, trials):
    g = torch.Generator().manual_seed(seed)
    for _ in range(trials):
        n1, n2 = (int(torch.randint(1, 80, (1,), generator=g)) for _ in range(2))
        decimals = int(torch.randint(0, 3, (1,), generator=g))
        p = (torch.randn(n1, generator=g, dtype=torch.float64) + 0.3).round(decimals=decimals)
        q = torch.randn(n2, generator=g, dtype=torch.float64).round(decimals=decimals)
        yield p, q


def test_auc_equals_scipy_mann_whitney_u_with_ties():
    stats = pytest.importorskip("scipy.stats")
    for p, q in _random_pairs_with_ties(0, 200):
        u = stats.mannwhitneyu(p.numpy(), q.numpy(), method="asymptotic").statistic
        assert abs(roc_auc(p, q) - float(u) / (len(p) * len(q))) < 1e-12


def test_auc_of_nan_scores_is_nan():
    assert math.isnan(roc_auc([1.0, math.nan], [0.0]))
    assert math.isnan(roc_auc([1.0], [math.nan]))


def test_weighted_auc_with_unit_weights_is_roc_auc_and_with_counts_a_resample():
    g = torch.Generator().manual_seed(1)
    pos = torch.randn(17, 3, generator=g, dtype=torch.float64).round(decimals=1)
    neg = torch.randn(11, 3, generator=g, dtype=torch.float64).round(decimals=1)
    unit = weighted_auc(pos, neg, pos.new_ones(1, 17), neg.new_ones(1, 11))[0]
    assert unit.tolist() == [roc_auc(pos[:, j], neg[:, j]) for j in range(3)]
    w_pos, w_neg = bootstrap_counts(17, 4, g), bootstrap_counts(11, 4, g)
    assert (w_pos.sum(1) == 17).all() and (w_neg.sum(1) == 11).all()
    boot = weighted_auc(pos, neg, w_pos, w_neg)
    for b in range(4):
        p = pos.repeat_interleave(w_pos[b].long(), dim=0)
        q = neg.repeat_interleave(w_neg[b].long(), dim=0)
        for j in range(3):
            assert abs(boot[b, j].item() - roc_auc(p[:, j], q[:, j])) < 1e-12


def test_percentile_intervals_match_numpy():
    g = torch.Generator().manual_seed(2)
    boot = torch.randn(101, 2, generator=g, dtype=torch.float64)
    (lo0, hi0), (lo1, hi1) = percentile_intervals(boot, 0.9)
    ref = np.quantile(boot.numpy(), [0.05, 0.95], axis=0)
    assert np.allclose([[lo0, lo1], [hi0, hi1]], ref, atol=1e-12)


def test_pearson_r_and_ci_equal_scipy():
    stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(3)
    for _ in range(200):
        n = int(torch.randint(4, 60, (1,), generator=g))
        x = torch.randn(n, generator=g, dtype=torch.float64).round(decimals=1)
        y = (0.5 * x + torch.randn(n, generator=g, dtype=torch.float64)).round(decimals=1)
        r = pearson_r(x, y)
        if math.isnan(r):  # a constant side
            continue
        ref = stats.pearsonr(x.numpy(), y.numpy())
        assert abs(r - ref.statistic) < 1e-12
        ci = ref.confidence_interval(0.95)
        lo, hi = pearson_ci(r, n)
        assert abs(lo - ci.low) < 1e-12 and abs(hi - ci.high) < 1e-12


def test_nan_mean():
    assert nan_mean(torch.tensor([1.0, math.nan, 3.0], dtype=torch.float64)) == 2.0
    assert math.isnan(nan_mean(torch.tensor([math.nan])))


def test_importing_stats_does_not_import_scipy():
    import subprocess
    import sys

    code = "import sys, personalens.stats; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

import math

import torch

from personalens.stats import cohens_d, roc_auc


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

"""Per-layer separation of pos vs neg samples along a persona vector, with bootstrap CIs.

For every layer the samples' activations are projected onto the unit direction
``v̂_L = v_L / ‖v_L‖`` (:func:`project`) and the projections of pos and neg samples compared
(:func:`sweep_from_projections`): ROC-AUC, separation of the means, Cohen's d, the within-class
variances, and percentile bootstrap intervals of the AUC and the separation. Each of ``n_boot``
resamples draws pos and neg samples separately with replacement (stratified, so both classes
keep their sizes); the same resamples serve every layer, vectorised over layers and resamples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.stats import (
    bootstrap_auc,
    percentile_intervals,
    stratified_bootstrap_counts,
    weighted_auc,
)
from personalens.studies.layer_sweep_result import LayerMetrics, LayerSweepResult
from personalens.vectors.vector import PersonaVector, unit_rows

Acts = Float[Tensor, "n n_layers d_model"]
PosActs = Float[Tensor, "n_pos n_layers d_model"]
NegActs = Float[Tensor, "n_neg n_layers d_model"]
Projections = Float[Tensor, "n n_layers"]
PosProjections = Float[Tensor, "n_pos n_layers"]
NegProjections = Float[Tensor, "n_neg n_layers"]


def check_sweep_args(n_boot: int, ci: float | int) -> None:
    if isinstance(n_boot, bool) or n_boot < 0:
        raise PersonaLensError(f"n_boot must be a non-negative int, got {n_boot!r}")
    if not 0.0 < float(ci) < 1.0:
        raise PersonaLensError(f"ci must be a coverage between 0 and 1 (e.g. 0.95), got {ci!r}")


def _checked_projections(
    pos: PosProjections, neg: NegProjections, layers: Sequence[int] | None
) -> tuple[PosProjections, NegProjections, tuple[int, ...]]:
    """float64 copies of finite projections of both classes, and the layer labels."""
    if pos.ndim != 2 or neg.ndim != 2 or pos.shape[1] != neg.shape[1]:
        raise PersonaLensError(
            f"projections must be [n_pos, n_layers] and [n_neg, n_layers], got "
            f"{list(pos.shape)} and {list(neg.shape)}"
        )
    n_pos, n_neg, n_layers = pos.shape[0], neg.shape[0], pos.shape[1]
    if n_pos == 0 or n_neg == 0:
        raise PersonaLensError(
            f"a layer sweep needs samples of both classes, got {n_pos} pos and {n_neg} neg"
        )
    layers = tuple(range(n_layers)) if layers is None else tuple(int(L) for L in layers)
    if len(layers) != n_layers:
        raise PersonaLensError(f"{len(layers)} layer labels for {n_layers} projection columns")
    p, q = pos.to(torch.float64), neg.to(torch.float64)
    if not (bool(torch.isfinite(p).all()) and bool(torch.isfinite(q).all())):
        raise PersonaLensError("non-finite projections (NaN or inf): check the activations")
    return p, q, layers


def _bootstrap_intervals(
    p: PosProjections, q: NegProjections, n_boot: int, ci: float | int, seed: int
) -> tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]:
    """Percentile intervals of the AUC and the separation over ``n_boot`` stratified resamples
    (the resamples of :func:`personalens.stats.auc_intervals`, so an extraction run's
    ``layer_auc_ci`` is this ``auc_ci`` for the same seed)."""
    n_pos, n_neg = p.shape[0], q.shape[0]
    w_pos, w_neg = stratified_bootstrap_counts(n_pos, n_neg, n_boot, seed)
    boot_auc = bootstrap_auc(p, q, w_pos, w_neg)
    boot_sep = (w_pos @ p) / n_pos - (w_neg @ q) / n_neg
    return percentile_intervals(boot_auc, ci), percentile_intervals(boot_sep, ci)


def sweep_from_projections(
    pos: PosProjections,
    neg: NegProjections,
    *,
    layers: Sequence[int] | None = None,
    n_boot: int = 1000,
    ci: float | int = 0.95,
    seed: int = 0,
) -> LayerMetrics:
    """Per-layer metrics of pos vs neg projections (``[n_pos, n_layers]``, ``[n_neg, n_layers]``).

    ``layers`` labels the columns (default ``0 .. n_layers-1``). Bootstrap: ``n_boot``
    stratified resamples from ``torch.Generator().manual_seed(seed)``; percentile intervals of
    coverage ``ci``. ``n_boot=0`` skips the bootstrap (CIs are ``None``).
    """
    check_sweep_args(n_boot, ci)
    p, q, layers = _checked_projections(pos, neg, layers)
    n_pos, n_neg, n_layers = p.shape[0], q.shape[0], p.shape[1]
    auc = weighted_auc(p, q, p.new_ones(1, n_pos), q.new_ones(1, n_neg))[0]
    separation = p.mean(0) - q.mean(0)
    nan = torch.full((n_layers,), math.nan, dtype=torch.float64)
    var_pos = p.var(0) if n_pos >= 2 else nan
    var_neg = q.var(0) if n_neg >= 2 else nan
    if n_pos >= 2 and n_neg >= 2:
        pooled = ((n_pos - 1) * var_pos + (n_neg - 1) * var_neg) / (n_pos + n_neg - 2)
        d = torch.where(pooled > 0, separation / pooled.clamp_min(1e-300).sqrt(), math.nan)
    else:
        d = nan
    auc_ci = separation_ci = None
    if n_boot > 0:
        auc_ci, separation_ci = _bootstrap_intervals(p, q, n_boot, ci, seed)
    return LayerMetrics(
        layers=layers,
        auc=tuple(auc.tolist()),
        auc_ci=auc_ci,
        separation=tuple(separation.tolist()),
        separation_ci=separation_ci,
        cohens_d=tuple(d.tolist()),
        var_pos=tuple(var_pos.tolist()),
        var_neg=tuple(var_neg.tolist()),
        n_pos=n_pos,
        n_neg=n_neg,
    )


def project(
    acts: Acts, directions: Float[Tensor, "n_layers d_model"] | PersonaVector
) -> Projections:
    """``acts[:, i] · v̂_i`` for every layer slot ``i``: projections onto the unit directions.

    ``directions`` has one row per layer slot of ``acts`` (a PersonaVector's ``directions``).
    Computed one layer at a time exactly as
    :func:`personalens.extraction.heldout.heldout_layer_auc` does, so AUCs agree bit for bit. Zero directions project to 0.
    """
    dirs = directions.directions if isinstance(directions, PersonaVector) else directions
    if acts.ndim != 3 or dirs.ndim != 2 or acts.shape[1:] != dirs.shape:
        raise PersonaLensError(
            f"activations [n, n_layers, d_model] {list(acts.shape)} and directions "
            f"[n_layers, d_model] {list(dirs.shape)} do not match"
        )
    dtype = torch.float64 if acts.dtype == torch.float64 else torch.float32
    acts = acts.to(dtype)
    dirs = dirs.detach().to(device="cpu", dtype=torch.float32)
    cols = [
        acts[:, i] @ unit_rows(dirs[i][None])[0].to(device=acts.device, dtype=dtype)
        for i in range(dirs.shape[0])
    ]
    return torch.stack(cols, dim=1).cpu()


def sweep_from_activations(
    pos_acts: PosActs,
    neg_acts: NegActs,
    directions: Float[Tensor, "n_layers d_model"] | PersonaVector,
    *,
    layers: Sequence[int] | None = None,
    variant: str = "response_avg",
    trait: str = "",
    model: str = "",
    n_boot: int = 1000,
    ci: float | int = 0.95,
    seed: int = 0,
) -> LayerSweepResult:
    """Layer sweep of raw activations ``[n, n_layers, d_model]`` against per-layer directions.

    ``directions`` (a ``[n_layers, d_model]`` tensor or a PersonaVector) has one row per layer
    slot of the activations; ``layers`` labels the slots (default ``0 .. n_layers-1``). The
    result holds one variant, named ``variant``; ``trait`` and ``model`` default to the
    PersonaVector's when one is given.
    """
    if isinstance(directions, PersonaVector):
        trait, model = trait or directions.trait, model or directions.model
    metrics = sweep_from_projections(
        project(pos_acts, directions),
        project(neg_acts, directions),
        layers=layers,
        n_boot=n_boot,
        ci=ci,
        seed=seed,
    )
    return LayerSweepResult(
        trait=trait,
        model=model,
        metrics={variant: metrics},
        split="given",
        evaluated_on="given activations",
        n_boot=n_boot,
        ci=float(ci),
        seed=seed,
    )

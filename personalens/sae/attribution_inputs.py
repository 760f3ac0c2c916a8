"""The pos/neg activations behind :func:`~personalens.sae.decompose.decompose`'s attribution
columns: from an extraction run directory or :class:`ExtractionResult` (its kept extraction
pairs, the samples the vector is the mean difference of), from ``(pos, neg)``
:class:`~personalens.model.activations.ActivationSet` s, or from given pos/neg means.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.extraction.pipeline import ExtractionResult
from personalens.extraction.responses import filter_pairs
from personalens.extraction.run_activations import activation_records, gather_side
from personalens.model.activations import VARIANTS, ActivationSet
from personalens.studies.extraction_run import RunData

# per layer: (pos, neg) mean residuals, or (pos, neg) per-sample residuals
LayerPairs = dict[int, tuple[Tensor, Tensor]]


def attribution_inputs(
    activations: Any,
    pos_mean: Any,
    neg_mean: Any,
    layers: list[int],
    variant: str,
    model: Any,
) -> tuple[LayerPairs | None, LayerPairs | None, dict]:
    """(means per layer, samples per layer or None, description) for the attributions."""
    if activations is None and pos_mean is None and neg_mean is None:
        return None, None, {"activations": None}
    if activations is not None and (pos_mean is not None or neg_mean is not None):
        raise PersonaLensError("give either activations= or pos_mean=/neg_mean=, not both")
    if activations is None:
        if pos_mean is None or neg_mean is None:
            raise PersonaLensError("give both pos_mean= and neg_mean=")
        means = {
            L: (_mean_at(pos_mean, L, "pos_mean"), _mean_at(neg_mean, L, "neg_mean"))
            for L in layers
        }
        return means, None, {"activations": "given pos/neg means"}
    variant = variant if variant in VARIANTS else "response_avg"
    pos, neg, where = _activation_sets(activations, model)
    if not isinstance(pos, ActivationSet) or not isinstance(neg, ActivationSet):
        raise PersonaLensError("pos and neg activations must be ActivationSets")
    samples = {}
    for L in layers:
        for side, acts in (("pos", pos), ("neg", neg)):
            if L not in acts.layers:
                raise PersonaLensError(
                    f"the {side} activations ({where}) have no layer {L} (they hold layers "
                    f"{list(acts.layers)[:3]}...{list(acts.layers)[-1:]})"
                )
        samples[L] = (
            pos.variant(variant)[:, pos.layers.index(L)],
            neg.variant(variant)[:, neg.layers.index(L)],
        )
    means = {L: (p.mean(0), n.mean(0)) for L, (p, n) in samples.items()}
    info = {
        "activations": where,
        "activation_variant": variant,
        "n_pos": len(pos),
        "n_neg": len(neg),
    }
    return means, samples, info


def _mean_at(value: Any, layer: int, name: str) -> Tensor:
    if isinstance(value, Mapping):
        if layer not in value:
            raise PersonaLensError(f"{name} has no entry for layer {layer}")
        t = torch.as_tensor(value[layer])
    else:
        t = torch.as_tensor(value)
        if t.ndim == 2:
            if layer >= t.shape[0]:
                raise PersonaLensError(f"{name} has {t.shape[0]} layers; no layer {layer}")
            t = t[layer]
    if t.ndim != 1:
        raise PersonaLensError(
            f"{name} must be [n_layers, d_model], [d_model] or {{layer: [d_model]}}, got shape "
            f"{list(t.shape)}"
        )
    return t.detach().float().cpu()


def _activation_sets(activations: Any, model: Any) -> tuple[Any, Any, str]:
    """(pos, neg, description) from a run directory, an ExtractionResult, or a pair."""
    if isinstance(activations, str | os.PathLike):
        run = RunData.from_dir(Path(activations))
        return (*_run_sides(run), f"kept extraction pairs of {activations}")
    if isinstance(activations, ExtractionResult):
        run = RunData.from_result(activations, model, batch_size=16, progress=False)
        return (*_run_sides(run), f"kept extraction pairs of {run.where}")
    if isinstance(activations, Mapping):
        if "pos" not in activations or "neg" not in activations:
            raise PersonaLensError("activations as a mapping needs 'pos' and 'neg' entries")
        return activations["pos"], activations["neg"], "given ActivationSets"
    if isinstance(activations, tuple | list) and len(activations) == 2:
        return activations[0], activations[1], "given ActivationSets"
    raise PersonaLensError(
        "activations must be an extraction run directory, an ExtractionResult, a (pos, neg) "
        f"pair or {{'pos': ..., 'neg': ...}} of ActivationSets; got {type(activations).__name__}"
    )


def _run_sides(run: Any) -> tuple[Any, Any]:
    """The activations of a run's kept extraction pairs: (pos, neg)."""
    filt = filter_pairs(run.records, run.scores, run.config)
    keys = filt.keys("extract")
    acts = run.acts_for(activation_records(run.records, filt))
    pos = gather_side(acts, run.records, keys, "pos")
    neg = gather_side(acts, run.records, keys, "neg")
    if pos is None or neg is None:
        raise PersonaLensError(f"{run.where}: no kept extraction pairs with activations")
    return pos, neg

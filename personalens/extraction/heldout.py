"""Held-out evaluation of an extraction run: which held-out samples measure the vector
(:func:`heldout_sets`), and how well its projection separates them at each layer
(:func:`heldout_layer_auc`, a ROC-AUC per layer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.responses import FilterResult
from personalens.extraction.run_activations import gather_side
from personalens.model.activations import ActivationSet
from personalens.stats import roc_auc
from personalens.vectors.vector import PersonaVector


@dataclass(frozen=True)
class HeldoutSets:
    """The held-out samples a run measures its layer AUC on."""

    pos: ActivationSet
    neg: ActivationSet
    on_kept: bool  # True: the kept held-out pairs; False: all held-out samples (too few kept)

    @property
    def description(self) -> str:
        return (
            "kept held-out pairs" if self.on_kept else "all held-out samples (too few kept pairs)"
        )


def heldout_sets(
    records: Sequence[dict[str, Any]],
    filt: FilterResult,
    acts: dict[str, ActivationSet],
    config: ExtractionConfig,
) -> HeldoutSets:
    """The kept held-out pairs, or all held-out samples when fewer than
    ``config.min_heldout_per_class`` kept ones per class have activations."""
    by_key = {r["key"]: r for r in records}
    heldout_kept = filt.keys("eval")
    heldout_all = [r["key"] for r in records if r["split"] == "eval"]
    n_kept_pos = sum(1 for k in heldout_kept if by_key[k]["side"] == "pos" and k in acts)
    n_kept_neg = sum(1 for k in heldout_kept if by_key[k]["side"] == "neg" and k in acts)
    use_kept = min(n_kept_pos, n_kept_neg) >= config.min_heldout_per_class
    auc_keys = heldout_kept if use_kept else heldout_all
    pos = gather_side(acts, records, auc_keys, "pos")
    neg = gather_side(acts, records, auc_keys, "neg")
    if pos is None or neg is None:
        raise PersonaLensError("no held-out samples with responses: cannot compute the layer AUC")
    return HeldoutSets(pos=pos, neg=neg, on_kept=use_kept)


def heldout_layer_auc(
    vector: PersonaVector, pos: ActivationSet, neg: ActivationSet, variant: str = "response_avg"
) -> list[float]:
    """Per layer: ROC-AUC of the projection onto the unit vector, pos vs neg samples."""
    aucs = []
    for layer in range(vector.n_layers):
        direction = vector.unit(layer)
        p = pos.variant(variant)[:, layer] @ direction
        q = neg.variant(variant)[:, layer] @ direction
        aucs.append(roc_auc(p, q))
    return aucs

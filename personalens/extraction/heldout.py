"""Held-out evaluation of an extraction run: which held-out replies measure the vector
(:func:`heldout_sets`), how well its projection separates them at each layer
(:func:`heldout_layer_auc`, :func:`layer_auc_ci`: a ROC-AUC per layer with a bootstrap CI), how
well it tracks the judge's trait score (:func:`trait_correlation`), and all of it for
``summary.json`` and the vectors' metadata (:func:`measure_heldout`, a :class:`HeldoutReport`).

Every held-out reply is read twice (see :mod:`personalens.extraction.run_activations`):

* *with the system prompt in context* (``activations/``, the contaminated reading): through
  attention every reply token can read the pos or neg instruction, so late layers separate the
  two conditions whether or not the reply's text shows the trait. Its AUC answers "can the
  model's state tell the two instructions apart": an upper bound, inflated by the prompt.
* *reply only, no system prompt* (``activations_neutral/``, the clean reading): the reply after
  its question in the model's default context. Its AUC answers "does the reply's text carry the
  trait the vector reads"; its best layer is the one steering and monitoring default to.

The headline AUCs are on **all** held-out replies; the judge-kept pairs (a selection that
favours clear replies, hence higher AUCs) are reported beside them, never instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.responses import FilterResult
from personalens.model.activations import VARIANTS, ActivationSet
from personalens.stats import Interval, auc_intervals, roc_auc, spearman_ci, spearman_r
from personalens.vectors.vector import PersonaVector

# the bootstrap of the summary's CIs: fixed, so a run's summary is deterministic (the layer
# sweep's defaults, so `layer_sweep(run)` reproduces these intervals)
N_BOOT, CI_LEVEL, SEED = 1000, 0.95, 0

HELDOUT_NOTE = (
    "All AUCs are ROC-AUCs per layer of the projection onto the vector, pos vs neg held-out "
    "replies, on ALL held-out replies (n_heldout_pos/neg) with a bootstrap CI. layer_auc / "
    "best_layer: each reply read with its pos or neg system prompt still in context; every "
    "reply token can read the instruction through attention, so this is confounded by the "
    "prompt: it measures whether the model's state tells the two instructions apart (an upper "
    "bound), not whether the reply shows the trait. layer_auc_neutral / best_layer_neutral: the "
    "same replies read after their question with no system prompt: does the reply's text carry "
    "the trait the vector reads (the vectors' best_layer, used by steering and monitoring; "
    "its prompt_avg and last_prompt_token see only the question, the same for both sides, so "
    "they are about 0.5 by construction). "
    "layer_auc_kept: only the judge-kept held-out pairs, a selected subset (optimistic). "
    "trait_spearman_neutral: Spearman's rho (Fisher-z CI) between the no-system-prompt "
    "projection and the judge's trait score over all held-out replies, pos and neg together: "
    "does the projection track how much trait the text shows."
)


@dataclass(frozen=True)
class HeldoutSets:
    """The held-out replies of a run that have activations, as pos/neg sets.

    ``keys``: every held-out reply with a non-empty response (the headline AUC's samples);
    ``kept``: the judge-kept ones among them, ``None`` (with ``kept_note`` saying why) when
    fewer than ``min_heldout_per_class`` per class; ``acts`` read with the system prompt in
    context, ``neutral`` without (``None``: not collected, e.g. a run made before it existed).
    """

    keys: tuple[str, ...]
    side: Mapping[str, str]
    acts: Mapping[str, ActivationSet]
    neutral: Mapping[str, ActivationSet] | None
    kept: tuple[str, ...] | None
    kept_note: str = ""
    description: str = "all held-out replies"

    def sides(
        self, *, neutral: bool = False, kept: bool = False
    ) -> tuple[ActivationSet, ActivationSet]:
        """(pos, neg) activations of all (or the kept) held-out replies, in run order."""
        source = self.neutral if neutral else self.acts
        if source is None:
            raise PersonaLensError("no activations without the system prompt were collected")
        keys = self.keys if not kept else self.kept
        if keys is None:
            raise PersonaLensError(f"no kept held-out set: {self.kept_note}")
        pos = [source[k] for k in keys if self.side[k] == "pos"]
        neg = [source[k] for k in keys if self.side[k] == "neg"]
        return ActivationSet.concat(pos), ActivationSet.concat(neg)

    @property
    def pos(self) -> ActivationSet:
        return self.sides()[0]

    @property
    def neg(self) -> ActivationSet:
        return self.sides()[1]

    def counts(self, *, kept: bool = False) -> tuple[int, int]:
        keys = (self.kept or ()) if kept else self.keys
        n_pos = sum(1 for k in keys if self.side[k] == "pos")
        return n_pos, len(keys) - n_pos


def heldout_sets(
    records: Sequence[dict[str, Any]],
    filt: FilterResult,
    acts: Mapping[str, ActivationSet],
    config: ExtractionConfig,
    neutral: Mapping[str, ActivationSet] | None = None,
) -> HeldoutSets:
    """All held-out replies with activations, and the judge-kept ones when at least
    ``config.min_heldout_per_class`` (and one) per class have activations."""
    side = {r["key"]: r["side"] for r in records}
    keys = tuple(r["key"] for r in records if r["split"] == "eval" and r["key"] in acts)
    if not any(side[k] == "pos" for k in keys) or not any(side[k] == "neg" for k in keys):
        raise PersonaLensError(
            "no held-out replies of both sides with responses: cannot compute the layer AUC"
        )
    if neutral is not None:
        missing = [k for k in keys if k not in neutral]
        if missing:
            raise PersonaLensError(
                f"{len(missing)} held-out replies (first {missing[0]!r}) have no activations "
                "read without the system prompt"
            )
    kept = tuple(k for k in filt.keys("eval") if k in acts)
    n_pos = sum(1 for k in kept if side[k] == "pos")
    n_neg = len(kept) - n_pos
    need = max(1, config.min_heldout_per_class)
    note = ""
    if min(n_pos, n_neg) < need:
        note = (
            f"only {n_pos} pos / {n_neg} neg held-out replies passed the judge's filter, fewer "
            f"than min_heldout_per_class={config.min_heldout_per_class} per class"
        )
    return HeldoutSets(keys, side, acts, neutral, None if note else kept, note)


# ----------------------------------------------------------------------------- measurements


def projections(
    vector: PersonaVector, acts: ActivationSet, variant: str = "response_avg"
) -> Float[Tensor, "n n_layers"]:
    """``acts[:, L] · v̂_L`` at every layer of the vector (float32, as the layer sweep)."""
    x = acts.variant(variant)
    return torch.stack([x[:, L] @ vector.unit(L) for L in range(vector.n_layers)], dim=1)


def heldout_layer_auc(
    vector: PersonaVector, pos: ActivationSet, neg: ActivationSet, variant: str = "response_avg"
) -> list[float]:
    """Per layer: ROC-AUC of the projection onto the unit vector, pos vs neg samples."""
    p, q = projections(vector, pos, variant), projections(vector, neg, variant)
    return [roc_auc(p[:, L], q[:, L]) for L in range(vector.n_layers)]


@dataclass(frozen=True)
class LayerAUC:
    """ROC-AUC per layer with its percentile bootstrap CI (``None`` without a bootstrap)."""

    auc: tuple[float, ...]
    ci: tuple[Interval, ...] | None
    n_pos: int
    n_neg: int

    @property
    def best_layer(self) -> int:
        """The highest-AUC layer; ties go to the lower layer, NaN loses."""
        return max(range(len(self.auc)), key=lambda L: (_or_neg_inf(self.auc[L]), -L))

    @property
    def best_auc(self) -> float:
        return self.auc[self.best_layer]

    def rounded(self) -> list[float | None]:
        return [_r4(a) for a in self.auc]

    def rounded_ci(self) -> list[list[float | None]] | None:
        return None if self.ci is None else [[_r4(lo), _r4(hi)] for lo, hi in self.ci]


def layer_auc_ci(
    vector: PersonaVector,
    pos: ActivationSet,
    neg: ActivationSet,
    variant: str = "response_avg",
    *,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = SEED,
) -> LayerAUC:
    """:func:`heldout_layer_auc` with stratified percentile bootstrap CIs (seeded)."""
    p, q = projections(vector, pos, variant), projections(vector, neg, variant)
    auc = tuple(roc_auc(p[:, L], q[:, L]) for L in range(vector.n_layers))
    intervals = auc_intervals(p, q, n_boot=n_boot, ci=ci, seed=seed)
    return LayerAUC(auc, intervals, len(pos), len(neg))


@dataclass(frozen=True)
class TraitCorrelation:
    """Spearman's rho per layer between the projection and the judge's trait score, with its
    Fisher-z CI (variance 1.06 / (n - 3)); ``n``: replies with a trait score."""

    rho: tuple[float, ...]
    ci: tuple[Interval, ...]
    n: int

    def at(self, layer: int) -> dict[str, Any]:
        lo, hi = self.ci[layer]
        return {"layer": layer, "rho": _r4(self.rho[layer]), "ci": [_r4(lo), _r4(hi)]}


def trait_correlation(
    vector: PersonaVector,
    acts: ActivationSet,
    scores: Sequence[float],
    variant: str = "response_avg",
    *,
    level: float = CI_LEVEL,
) -> TraitCorrelation:
    """Per layer: Spearman's rho of the replies' projections with their trait ``scores`` (one
    per sample of ``acts``; NaN scores are dropped)."""
    proj = projections(vector, acts, variant).double().numpy()
    s = np.asarray(scores, dtype=np.float64)
    n = int((~np.isnan(s)).sum())
    rho = tuple(spearman_r(proj[:, L], s) for L in range(vector.n_layers))
    return TraitCorrelation(rho, tuple(spearman_ci(r, n, level) for r in rho), n)


# ----------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class HeldoutReport:
    """Every held-out measurement of a run (see the module doc): AUCs by variant with the
    system prompt in context (``prompted``) and without (``neutral``), on the kept subset
    (``kept``, ``kept_neutral``; response-average), and the trait correlation (``spearman``)."""

    prompted: dict[str, LayerAUC]
    neutral: dict[str, LayerAUC] | None
    kept: LayerAUC | None
    kept_neutral: LayerAUC | None
    kept_note: str
    n_kept: tuple[int, int]
    spearman: TraitCorrelation | None
    description: str = "all held-out replies"
    bootstrap: tuple[int, float, int] = (N_BOOT, CI_LEVEL, SEED)

    @property
    def best_layer(self) -> int:
        """The best layer with the system prompt in context (the confounded curve)."""
        return self.prompted["response_avg"].best_layer

    @property
    def best_layer_neutral(self) -> int | None:
        return None if self.neutral is None else self.neutral["response_avg"].best_layer

    def vector_metadata(self, variant: str) -> dict[str, Any]:
        """What each vector records: both curves with their CIs and n (so a layer sweep can be
        drawn from the vector alone), and ``best_layer`` (the clean curve's best,
        the layer steering and monitoring default to) beside ``best_layer_contaminated``."""
        prompted = self.prompted[variant]
        n_boot, ci, seed = self.bootstrap
        meta: dict[str, Any] = {
            "layer_auc": prompted.rounded(),
            "layer_auc_ci": prompted.rounded_ci(),
            "n_heldout_pos": prompted.n_pos,
            "n_heldout_neg": prompted.n_neg,
            "heldout_auc_on": self.description,
            "heldout_bootstrap": {"n_boot": n_boot, "ci": ci, "seed": seed},
        }
        if self.neutral is not None:
            meta["layer_auc_neutral"] = self.neutral[variant].rounded()
            meta["layer_auc_neutral_ci"] = self.neutral[variant].rounded_ci()
        best = self.best_layer_neutral
        meta["best_layer"] = self.best_layer if best is None else best
        meta["best_layer_contaminated"] = self.best_layer
        return meta

    def summary_entries(self) -> dict[str, Any]:
        """The held-out entries of ``summary.json``, in its order."""
        head = self.prompted["response_avg"]
        out: dict[str, Any] = {
            "heldout_auc_on": self.description,
            "n_heldout_pos": head.n_pos,
            "n_heldout_neg": head.n_neg,
            "layer_auc": head.rounded(),
            "layer_auc_ci": head.rounded_ci(),
            "layer_auc_by_variant": {v: m.rounded() for v, m in self.prompted.items()},
            "best_layer": head.best_layer,
            "best_auc": _r4(head.best_auc),
        }
        out.update(self._neutral_entries())
        out.update(
            {
                "n_heldout_kept_pos": self.n_kept[0],
                "n_heldout_kept_neg": self.n_kept[1],
                "layer_auc_kept": None if self.kept is None else self.kept.rounded(),
                "layer_auc_kept_neutral": (
                    None if self.kept_neutral is None else self.kept_neutral.rounded()
                ),
                "layer_auc_kept_note": self.kept_note or None,
            }
        )
        out.update(self._spearman_entries())
        n_boot, ci, seed = self.bootstrap
        out["heldout_bootstrap"] = {"n_boot": n_boot, "ci": ci, "seed": seed}
        out["heldout_note"] = HELDOUT_NOTE
        return out

    def _neutral_entries(self) -> dict[str, Any]:
        if self.neutral is None:
            keys = ("layer_auc_neutral", "layer_auc_neutral_ci", "layer_auc_neutral_by_variant")
            return {**dict.fromkeys(keys), "best_layer_neutral": None, "best_auc_neutral": None}
        m = self.neutral["response_avg"]
        return {
            "layer_auc_neutral": m.rounded(),
            "layer_auc_neutral_ci": m.rounded_ci(),
            "layer_auc_neutral_by_variant": {v: x.rounded() for v, x in self.neutral.items()},
            "best_layer_neutral": m.best_layer,
            "best_auc_neutral": _r4(m.best_auc),
        }

    def _spearman_entries(self) -> dict[str, Any]:
        s, best = self.spearman, self.best_layer_neutral
        if s is None or best is None:
            keys = ("trait_spearman_neutral", "trait_spearman_neutral_ci")
            return {
                **dict.fromkeys(keys),
                "n_trait_spearman": 0,
                "trait_spearman_at_best_neutral": None,
            }
        return {
            "trait_spearman_neutral": [_r4(r) for r in s.rho],
            "trait_spearman_neutral_ci": [[_r4(lo), _r4(hi)] for lo, hi in s.ci],
            "n_trait_spearman": s.n,
            "trait_spearman_at_best_neutral": s.at(best),
        }


def measure_heldout(
    vectors: Mapping[str, PersonaVector],
    held: HeldoutSets,
    scores: Mapping[str, Mapping[str, float]],
    *,
    n_boot: int = N_BOOT,
    ci: float = CI_LEVEL,
    seed: int = SEED,
) -> HeldoutReport:
    """Every held-out measurement of a run's vectors (one per variant) on ``held``."""
    boot = {"n_boot": n_boot, "ci": ci, "seed": seed}

    def curves(neutral: bool, kept: bool, variants: Sequence[str]) -> dict[str, LayerAUC]:
        pos, neg = held.sides(neutral=neutral, kept=kept)
        return {v: layer_auc_ci(vectors[v], pos, neg, v, **boot) for v in variants}

    variants = [v for v in VARIANTS if v in vectors]
    has_neutral, has_kept = held.neutral is not None, held.kept is not None
    prompted = curves(False, False, variants)
    neutral = curves(True, False, variants) if has_neutral else None
    kept = curves(False, True, ["response_avg"])["response_avg"] if has_kept else None
    kept_neutral = None
    if has_kept and has_neutral:
        kept_neutral = curves(True, True, ["response_avg"])["response_avg"]
    spearman = None
    if has_neutral:
        acts = ActivationSet.concat([held.neutral[k] for k in held.keys])
        trait = [scores.get(k, {}).get("trait", math.nan) for k in held.keys]
        spearman = trait_correlation(vectors["response_avg"], acts, trait, level=ci)
    return HeldoutReport(
        prompted=prompted,
        neutral=neutral,
        kept=kept,
        kept_neutral=kept_neutral,
        kept_note=held.kept_note,
        n_kept=held.counts(kept=True),
        spearman=spearman,
        description=held.description,
        bootstrap=(n_boot, ci, seed),
    )


def _r4(x: float) -> float | None:
    """Rounded to 4 digits for JSON; NaN (undefined) becomes ``None``."""
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _or_neg_inf(x: float) -> float:
    return -math.inf if math.isnan(x) else x

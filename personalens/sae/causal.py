"""Causal test of SAE features: steer along each feature's decoder direction and judge the trait.

Built on :func:`personalens.steering_sweep` (so on :func:`personalens.steer`). This module never
imports sae_lens itself (SAEs come from :func:`personalens.sae.load.load_sae`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.extraction.traits import Trait
from personalens.judges.base import Judge
from personalens.judges.factory import make_judge
from personalens.model.generation import GenerationConfig
from personalens.results import Result, json_safe
from personalens.sae.decompose import Decomposition
from personalens.sae.layer_sae import LayerSAE, _model_dims, _one_sae
from personalens.studies.steering_sweep import resolve_trait, steering_sweep, summarize_judged
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# ----------------------------------------------------------------------------- causal test


def feature_vector(
    sae: Any, feature: int, model: Any, *, layer: int | None = None
) -> PersonaVector:
    """A PersonaVector that is feature ``feature``'s decoder row at the SAE's layer, 0 elsewhere.

    Steer with it like any persona vector, e.g.
    ``steer(model, feature_vector(sae, f, model), coeff=0.5, layers=[sae.layer], coeff_scale="resid")``.
    """
    s = _one_sae(sae, layer, model)
    if isinstance(feature, bool) or not isinstance(feature, int) or not 0 <= feature < s.d_sae:
        raise PersonaLensError(f"feature must be an int in 0..{s.d_sae - 1}, got {feature!r}")
    n_layers, d_model, name = _model_dims(model)
    directions = torch.zeros(n_layers, d_model)
    directions[s.layer] = s.sae.W_dec[feature].detach().float().cpu()
    return PersonaVector(
        directions=directions,
        model=name or s.model_name or "",
        trait=f"feature {feature} (layer {s.layer})",
        method="sae_decoder",
        variant="sae_decoder",
        metadata={"sae": s.source, "feature": feature, "layer": s.layer, "hook": s.hook},
    )


@dataclass(frozen=True, eq=False)
class FeatureSteeringResult(Result):
    """Judged replies under steering with each feature's decoder direction (and the baseline).

    ``records`` holds every reply (``label``, ``feature``, ``coeff``, ``prompt_index``,
    ``sample_index``, ``question``, ``response``, ``trait``, ``coherence``); coefficient 0 is
    the unsteered model, generated once and listed under every feature.
    """

    trait: str
    layer: int
    features: tuple[int, ...]
    coeffs: tuple[float, ...]
    coeff_scale: str
    records: tuple[dict[str, Any], ...] = field(repr=False)
    settings: dict[str, Any] = field(default_factory=dict)

    def replies(self) -> pd.DataFrame:
        """One row per reply."""
        return pd.DataFrame.from_records(list(self.records))

    def to_frame(
        self, decomposition: Decomposition | None = None, *, coherence_threshold: float | int = 50.0
    ) -> pd.DataFrame:
        """Per (feature, coeff): mean trait (± s.e.m.), coherence, share coherent, and
        ``trait_change``/``coherence_change`` against coefficient 0. With a ``decomposition``
        of the same layer, its cosine and attribution columns are added per feature."""
        out = summarize_judged(
            self.replies(),
            ["label", "feature", "coeff"],
            coherence_threshold=coherence_threshold,
            sort=False,
        )
        base = out[out.coeff == 0.0].iloc[0]
        out["trait_change"] = out["trait"] - float(base["trait"])
        out["coherence_change"] = out["coherence"] - float(base["coherence"])
        out.insert(0, "layer", self.layer)
        out["coeff_scale"] = self.coeff_scale
        if decomposition is not None:
            d = decomposition.to_frame()
            d = d[d.layer == self.layer].drop_duplicates("feature")
            cols = [
                c
                for c in ("feature", "cosine", "attribution", "attribution_samples")
                if c in d.columns
            ]
            out = out.merge(d[cols], on="feature", how="left")
        return out

    def to_dict(self) -> dict[str, Any]:
        """The settings and the :meth:`to_frame` summary, without the replies (JSON-safe)."""
        return {
            "trait": self.trait,
            "layer": self.layer,
            "features": list(self.features),
            "coeffs": list(self.coeffs),
            "coeff_scale": self.coeff_scale,
            "settings": self.settings,
            "summary": json_safe(self.to_frame().to_dict(orient="records")),
        }


def feature_steering_test(
    model: HookedTransformer,
    sae: Any,
    features: Sequence[int] | Tensor | Decomposition,
    layer: int | None = None,
    coeffs: Sequence[float | int] = (0.0, 0.25, 0.5, 1.0),
    trait: Trait | str | None = None,
    judge: Judge | str = "auto",
    prompts: Sequence[Any] | None = None,
    *,
    generation: GenerationConfig | None = None,
    coeff_scale: str = "resid",
    positions: str = "response",
    system: str | None = None,
    vector: PersonaVector | None = None,
    reference: Sequence[Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> FeatureSteeringResult:
    """Causal test: steer along each feature's decoder direction and judge the trait.

    For each feature ``f`` and nonzero coefficient ``c`` the model answers ``prompts``
    (default: the trait's held-out evaluation questions) with ``c`` times the feature's decoder
    direction added at ``blocks.{layer}.hook_resid_post`` (through
    :func:`personalens.steering_sweep`, so through :func:`personalens.steer`), and the judge
    scores trait and coherence. Coefficient 0 (the unsteered model) is generated and judged
    once and reported under every feature; changes are against it.

    Coefficient scale (``coeff_scale``, as in :func:`personalens.steer`):

    * ``"resid"`` (default): ``c`` times the *unit* decoder direction times the mean residual
      norm at the layer (over neutral reference prompts, first token excluded): ``c = 0.25``
      adds a quarter of a typical residual's length along the feature, the same at every layer
      and for every feature, whatever its decoder norm.
    * ``"unit"``: ``c`` is a length in residual units along the unit decoder direction.
    * ``"raw"``: ``c`` times the decoder row as trained (``c`` = a feature activation of ``c``).

    Args:
        features: feature ids, or a :class:`Decomposition` (all its features at this layer,
            aligned and anti: each costs one generation per nonzero coefficient, so pass
            ``dec.features(L, n=5)`` to test fewer).
        trait: the trait to judge (name or Trait); default ``vector.trait`` if a vector is given.
        judge: a Judge or ``"auto"``/``"offline"``/``"openai"``.
        vector: optional persona vector, steered the same way (its unit direction at the layer
            under "resid"/"unit") as a reference row labelled ``"persona vector"``.
        out: a directory that makes the test resumable (one steering_sweep run per feature
            under ``feature_<f>/``, the baseline under ``baseline/``).
    """
    s = _one_sae(sae, layer, model)
    layer = s.layer
    feats = _feature_ids(features, layer)
    coeff_list = sorted({float(c) for c in coeffs} | {0.0})
    nonzero = [c for c in coeff_list if c != 0.0]
    if not nonzero:
        raise PersonaLensError("give at least one nonzero coefficient")
    if coeff_scale not in ("raw", "unit", "resid"):
        raise PersonaLensError(f"coeff_scale must be 'raw', 'unit' or 'resid', got {coeff_scale!r}")
    if trait is None and vector is None:
        raise PersonaLensError("give trait= (a trait name or Trait) to judge")
    vectors = _vectors_to_steer(s, feats, model, vector)
    trait_obj = resolve_trait(trait, vector if vector is not None else vectors[0][2])
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge
    common = {
        "trait": trait_obj,
        "judge": judge_obj,
        "system": system,
        "generation": generation,
        "positions": positions,
        "coeff_scale": coeff_scale,
        "reference": reference,
        "progress": progress,
    }
    run = Path(out) if out is not None else None
    base, records = _judged_replies(model, vectors, prompts, layer, nonzero, run, common)
    settings = {
        "sae": s.source,
        "hook": s.hook,
        "positions": positions,
        "system": system,
        "judge": judge_obj.name,
        "n_prompts": base.settings.get("n_prompts"),
        "generation": base.settings.get("generation"),
        "vector": None if vector is None else {"trait": vector.trait, "model": vector.model},
    }
    return FeatureSteeringResult(
        trait=trait_obj.name,
        layer=layer,
        features=tuple(feats),
        coeffs=tuple(coeff_list),
        coeff_scale=coeff_scale,
        records=tuple(records),
        settings=settings,
    )


def _feature_ids(features: Sequence[int] | Tensor | Decomposition, layer: int) -> list[int]:
    """The feature ids to test (a Decomposition's features at ``layer``), distinct, not empty."""
    feats = (
        features.features(layer)
        if isinstance(features, Decomposition)
        else [int(f) for f in features]
    )
    if not feats:
        raise PersonaLensError("no features given")
    if len(set(feats)) != len(feats):
        raise PersonaLensError(f"features {feats} name a feature twice")
    return feats


def _vectors_to_steer(
    sae: LayerSAE, feats: list[int], model: Any, vector: PersonaVector | None
) -> list[tuple[str, int, PersonaVector]]:
    """``(label, feature id or -1, vector)``: each feature's decoder vector, then ``vector``."""
    vectors = [(f"feature {f}", f, feature_vector(sae, f, model)) for f in feats]
    if vector is not None:
        if not isinstance(vector, PersonaVector):
            raise PersonaLensError("vector= must be a PersonaVector")
        vector.check_compatible(model)
        vectors.append(("persona vector", -1, vector))
    return vectors


def _judged_replies(
    model: HookedTransformer,
    vectors: list[tuple[str, int, PersonaVector]],
    prompts: Sequence[Any] | None,
    layer: int,
    nonzero: list[float],
    run: Path | None,
    common: dict[str, Any],
) -> tuple[Any, list[dict[str, Any]]]:
    """(the baseline sweep, every reply's record): the unsteered baseline once (under
    ``run/baseline``), then one :func:`steering_sweep` per labelled vector; the baseline's
    replies are listed under every vector."""
    n_layers, d_model, name = _model_dims(model)
    neutral = PersonaVector(
        directions=torch.zeros(n_layers, d_model), model=name or "", trait="unsteered baseline"
    )
    base = steering_sweep(
        model,
        neutral,
        prompts,
        layers=[layer],
        coeffs=[0.0],
        out=run / "baseline" if run else None,
        **common,
    )
    records: list[dict[str, Any]] = []
    for label, f, vec in vectors:
        res = steering_sweep(
            model,
            vec,
            prompts,
            layers=[layer],
            coeffs=nonzero,
            out=(run / ("persona_vector" if f < 0 else f"feature_{f}")) if run else None,
            **common,
        )
        for r in list(base.records) + list(res.records):
            records.append(
                {
                    "label": label,
                    "feature": f,
                    "coeff": float(r["coeff"]),
                    "prompt_index": r["prompt_index"],
                    "sample_index": r["sample_index"],
                    "question": r["question"],
                    "response": r["response"],
                    "trait": r["trait"],
                    "coherence": r["coherence"],
                }
            )
    return base, records

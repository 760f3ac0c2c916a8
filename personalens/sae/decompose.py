"""Decompose a persona vector into SAE features: signed decoder cosines and activation attributions.

SAEs come from :func:`personalens.sae.load.load_sae` (see :mod:`personalens.sae.layer_sae` for
which hook point an SAE must belong to); this module never imports sae_lens itself.

**Cosines.** For layer ``L``, :func:`decompose` takes the persona vector's direction ``v_L``
and the SAE's decoder rows ``W_dec[f]`` normalised to unit length and ranks features by the
signed cosine ``cos(v_L, W_dec[f])``: the ``k`` most aligned (largest) and the ``k`` most
anti-aligned (most negative). ``projection = cos * |v_L|`` is the component of the vector along
the feature in residual units.

**Attributions** (activation space, optional; from the extraction run's activations). Two
numbers per feature, both differences "pos minus neg" of SAE feature activations:

* ``attribution = encode(mean_pos) - encode(mean_neg)``: the activation difference when the
  mean pos and mean neg residuals at the layer are encoded through the SAE. For the run the
  vector came from, ``mean_pos - mean_neg`` *is* the persona vector, so this is the issue's
  "projection of the pos-neg mean activation difference encoded through the SAE".
* ``attribution_samples = mean_i encode(pos_i) - mean_j encode(neg_j)``: the mean over samples
  of each sample's encoding. The SAE is nonlinear (a threshold per feature), so the two differ:
  a feature that fires strongly on a few pos samples survives in the per-sample mean but can
  fall under the threshold once the samples are averaged first. We report both;
  ``attribution_samples`` is the more faithful "how much more does this feature fire on pos
  samples", ``attribution`` the one that matches the mean-difference vector. Only available
  when per-sample activations are given (a run directory or :class:`ActivationSet` s).

Both use the run's stored per-sample summaries (by default the response average, the
vector's variant), i.e. each sample's residual averaged over its response tokens. An SAE is
trained on single-token residuals, so these encodings are of averaged inputs; to see what a
feature does on single tokens use :func:`feature_contexts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError
from personalens.results import Result, json_safe
from personalens.sae.attribution_inputs import attribution_inputs
from personalens.sae.layer_sae import LayerSAE, _as_saes, _model_dims
from personalens.vectors.vector import PersonaVector

RANK_BY = ("cosine", "attribution", "attribution_samples")

# ----------------------------------------------------------------------------- decomposition


@dataclass(frozen=True, eq=False)
class Decomposition(Result):
    """The top features of a persona vector at one or more layers (see the module docstring).

    ``rows`` holds one record per (layer, direction, rank); ``cosines[L]`` the cosine of every
    feature (``[d_sae]``), and, when activations were given, ``attributions[L]`` and
    ``sample_attributions[L]`` every feature's attribution. ``to_frame()`` has one row per
    feature: layer, direction (aligned/anti), rank, feature, cosine, projection (cosine x
    ``|v_L|``), decoder_norm, and with activations attribution, attribution_samples, pos_act and
    neg_act (encode(mean_pos), encode(mean_neg)).
    """

    trait: str
    model: str
    k: int
    layers: tuple[int, ...]
    rows: tuple[dict[str, Any], ...]
    cosines: dict[int, Tensor] = field(repr=False)
    attributions: dict[int, Tensor] | None = field(default=None, repr=False)
    sample_attributions: dict[int, Tensor] | None = field(default=None, repr=False)
    saes: dict[int, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    _frame_field: ClassVar[str] = "rows"

    def features(
        self, layer: int | None = None, *, direction: str = "both", n: int | None = None
    ) -> list[int]:
        """Feature ids at ``layer`` (default: the only or first layer), best first.

        ``direction``: ``"aligned"``, ``"anti"`` or ``"both"`` (aligned then anti); ``n`` keeps
        the first ``n`` of each direction.
        """
        if direction not in ("aligned", "anti", "both"):
            raise PersonaLensError(
                f"direction must be 'aligned', 'anti' or 'both', got {direction!r}"
            )
        layer = self.layers[0] if layer is None else layer
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} is not decomposed (layers {list(self.layers)})")
        out: list[int] = []
        for d in ("aligned", "anti"):
            if direction in (d, "both"):
                rows = [r for r in self.rows if r["layer"] == layer and r["direction"] == d]
                out += [r["feature"] for r in rows[: n if n is not None else len(rows)]]
        return list(dict.fromkeys(out))

    def to_dict(self) -> dict[str, Any]:
        """The rows and settings, without the per-feature tensors (JSON-safe: NaN -> None)."""
        return json_safe(
            {
                "trait": self.trait,
                "model": self.model,
                "k": self.k,
                "layers": self.layers,
                "saes": self.saes,
                "settings": self.settings,
                "rows": self.rows,
            }
        )

    def __repr__(self) -> str:
        return (
            f"Decomposition(trait={self.trait!r}, model={self.model!r}, layers={list(self.layers)}, "
            f"k={self.k}, attributions={self.attributions is not None})"
        )


def decompose(
    vector: PersonaVector | Tensor,
    saes: Any,
    layer: int | Sequence[int] | None = None,
    k: int = 20,
    *,
    k_anti: int | None = None,
    activations: Any = None,
    pos_mean: Tensor | Mapping[int, Tensor] | None = None,
    neg_mean: Tensor | Mapping[int, Tensor] | None = None,
    model: Any = None,
    rank_by: str = "cosine",
) -> Decomposition:
    """Top-k SAE features of a persona vector by signed decoder cosine, per layer.

    Args:
        vector: a :class:`~personalens.PersonaVector` (``[n_layers, d_model]``), a
            ``[n_layers, d_model]`` tensor, or one ``[d_model]`` direction (one SAE only).
        saes: a :class:`LayerSAE` or sae-lens SAE, a list of them, or ``{layer: sae}``.
        layer: with one SAE, its layer (checked); with several, the layers to use.
        k: how many of the most aligned features to keep per layer; ``k_anti`` (default
            ``k``) how many of the most anti-aligned.
        activations: pos/neg activations for the attribution columns: an extraction run
            directory (its kept extraction pairs, i.e. the samples the vector is the mean
            difference of), an :class:`~personalens.extraction.pipeline.ExtractionResult`, a
            ``(pos, neg)`` pair or ``{"pos": ..., "neg": ...}`` of
            :class:`~personalens.ActivationSet` s.
        pos_mean, neg_mean: instead of ``activations``, the mean pos and neg residuals:
            ``[n_layers, d_model]`` tensors or ``{layer: [d_model]}`` (gives ``attribution``
            but not ``attribution_samples``).
        model: optional ``HookedTransformer`` to check the SAEs and the vector against (also
            needed for an ExtractionResult without a run directory).
        rank_by: ``"cosine"`` (default), ``"attribution"`` or ``"attribution_samples"``:
            which score picks and orders the top features.
    """
    k_anti = _check_settings(k, k_anti, rank_by)
    table, directions, (trait, model_name, variant) = _directions_by_layer(
        vector, saes, layer, model
    )
    means, samples, act_info = attribution_inputs(
        activations, pos_mean, neg_mean, list(table), variant, model
    )
    if rank_by == "attribution" and means is None:
        raise PersonaLensError("rank_by='attribution' needs activations= or pos_mean/neg_mean")
    if rank_by == "attribution_samples" and samples is None:
        raise PersonaLensError(
            "rank_by='attribution_samples' needs per-sample activations (a run directory or "
            "ActivationSets)"
        )
    rows: list[dict[str, Any]] = []
    cosines: dict[int, Tensor] = {}
    attributions: dict[int, Tensor] | None = {} if means is not None else None
    sample_attr: dict[int, Tensor] | None = {} if samples is not None else None
    for L, s in table.items():
        scores = _layer_scores(s, directions[L], means and means[L], samples and samples[L])
        cosines[L] = scores["cosine"]
        if attributions is not None:
            attributions[L] = scores["attribution"]
        if sample_attr is not None:
            sample_attr[L] = scores["attribution_samples"]
        rows += _top_rows(L, s, directions[L], scores, rank_by, k, k_anti)
    settings = {
        "k": k,
        "k_anti": k_anti,
        "rank_by": rank_by,
        "variant": variant,
        "vector_norms": {str(L): float(directions[L].float().norm()) for L in table},
        "d_sae": {str(L): s.d_sae for L, s in table.items()},
        "d_model": int(next(iter(directions.values())).shape[-1]),  # the figure's random baseline
        **act_info,
    }
    return Decomposition(
        trait=trait,
        model=model_name,
        k=k,
        layers=tuple(table),
        rows=tuple(rows),
        cosines=cosines,
        attributions=attributions,
        sample_attributions=sample_attr,
        saes={L: s.source for L, s in table.items()},
        settings=settings,
    )


def _check_settings(k: int, k_anti: int | None, rank_by: str) -> int:
    """``k_anti`` (default ``k``) after checking ``k``, ``k_anti`` and ``rank_by``."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PersonaLensError(f"k must be a positive int, got {k!r}")
    k_anti = k if k_anti is None else k_anti
    if isinstance(k_anti, bool) or not isinstance(k_anti, int) or k_anti < 0:
        raise PersonaLensError(f"k_anti must be a non-negative int, got {k_anti!r}")
    if rank_by not in RANK_BY:
        raise PersonaLensError(
            f"rank_by must be 'cosine', 'attribution' or 'attribution_samples', got {rank_by!r}"
        )
    return k_anti


def _directions_by_layer(
    vector: PersonaVector | Tensor, saes: Any, layer: Any, model: Any
) -> tuple[dict[int, LayerSAE], dict[int, Tensor], tuple[str, str, str]]:
    """(``{layer: SAE}``, ``{layer: the vector's direction}``, (trait, model name, variant)),
    with every direction checked against its SAE's width, nonzero and finite."""
    if isinstance(vector, PersonaVector):
        if model is not None:
            vector.check_compatible(model)
        ref: Any = model if model is not None else vector
        table = _as_saes(saes, layer, ref)
        directions = {L: vector.directions[L] for L in table}
        about = (vector.trait, vector.model, vector.variant)
    elif isinstance(vector, Tensor):
        if vector.ndim == 1:
            table = _as_saes(saes, layer, model)
            if len(table) != 1:
                raise PersonaLensError(
                    "a single [d_model] direction can be decomposed with one SAE only; pass a "
                    "[n_layers, d_model] tensor or a PersonaVector for several layers"
                )
            directions = {L: vector for L in table}
        elif vector.ndim == 2:
            table = _as_saes(saes, layer, model)
            bad = [L for L in table if L >= vector.shape[0]]
            if bad:
                raise PersonaLensError(
                    f"the vector has {vector.shape[0]} layers but SAEs are for layer(s) {bad}"
                )
            directions = {L: vector[L] for L in table}
        else:
            raise PersonaLensError(
                f"vector must be [d_model] or [n_layers, d_model], got shape {list(vector.shape)}"
            )
        model_name = (_model_dims(model)[2] or "") if model is not None else ""
        about = ("vector", model_name, "response_avg")
    else:
        raise PersonaLensError(
            f"vector must be a PersonaVector or a tensor, got {type(vector).__name__}"
        )
    for L, s in table.items():
        d = directions[L]
        if d.shape[-1] != s.d_in:
            raise PersonaLensError(
                f"the vector has d_model={d.shape[-1]} but {s.source} has d_in={s.d_in}: the "
                "SAE was trained on another model's residual stream"
            )
        if not bool(torch.isfinite(d).all()) or float(d.norm()) == 0.0:
            raise PersonaLensError(f"the vector is zero or not finite at layer {L}")
    return table, directions, about


def _layer_scores(
    sae: LayerSAE,
    direction: Tensor,
    means: tuple[Tensor, Tensor] | None,
    samples: tuple[Tensor, Tensor] | None,
) -> dict[str, Tensor]:
    """Every feature's ``cosine`` and decoder norm at one layer, and with activations its
    ``attribution`` (+ ``pos_act``/``neg_act``) and ``attribution_samples``; ``[d_sae]`` each."""
    dec = sae.decoder()
    dec_norm = dec.norm(dim=-1)
    unit_dec = torch.where(dec_norm[:, None] > 0, dec / dec_norm.clamp(min=1e-12)[:, None], 0.0)
    v = direction.detach().float().cpu()
    scores = {"cosine": unit_dec @ (v / v.norm()), "decoder_norm": dec_norm}
    if means is not None:
        p, n = means
        enc = sae.encode(torch.stack([p, n]).float()).cpu()
        scores.update(pos_act=enc[0], neg_act=enc[1], attribution=enc[0] - enc[1])
    if samples is not None:
        ps, ns = samples
        scores["attribution_samples"] = _mean_encoding(sae, ps) - _mean_encoding(sae, ns)
    return scores


def _top_rows(
    layer: int,
    sae: LayerSAE,
    direction: Tensor,
    scores: dict[str, Tensor],
    rank_by: str,
    k: int,
    k_anti: int,
) -> list[dict[str, Any]]:
    """The ``k`` most aligned and ``k_anti`` most anti-aligned features by ``rank_by``, one row
    each (see :class:`Decomposition`)."""
    cos, score = scores["cosine"], scores[rank_by]
    norm = direction.detach().float().cpu().norm()
    rows = []
    for direction_name, count in (("aligned", k), ("anti", k_anti)):
        count = min(count, sae.d_sae)
        if count == 0:
            continue
        top = torch.topk(score if direction_name == "aligned" else -score, count)
        for rank, f in enumerate(top.indices.tolist(), start=1):
            row: dict[str, Any] = {
                "layer": layer,
                "direction": direction_name,
                "rank": rank,
                "feature": int(f),
                "cosine": float(cos[f]),
                "projection": float(cos[f] * norm),
                "decoder_norm": float(scores["decoder_norm"][f]),
            }
            if "attribution" in scores:
                row["attribution"] = float(scores["attribution"][f])
            if "attribution_samples" in scores:
                row["attribution_samples"] = float(scores["attribution_samples"][f])
            if "attribution" in scores:
                row["pos_act"] = float(scores["pos_act"][f])
                row["neg_act"] = float(scores["neg_act"][f])
            rows.append(row)
    return rows


def _mean_encoding(sae: LayerSAE, x: Float[Tensor, "n d_in"], chunk: int = 256) -> Tensor:
    total = torch.zeros(sae.d_sae)
    for i in range(0, x.shape[0], chunk):
        total += sae.encode(x[i : i + chunk].float()).sum(0).cpu()
    return total / max(x.shape[0], 1)

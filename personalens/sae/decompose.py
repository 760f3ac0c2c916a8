"""Decompose a persona vector into SAE features: signed decoder cosines and activation attributions.

See :mod:`personalens.sae.load` for the layer convention and what ``attribution`` and
``attribution_samples`` mean. SAEs come from :func:`personalens.sae.load.load_sae`; this module never
imports sae_lens itself.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    import pandas as pd

    from personalens.vectors.vector import PersonaVector


from personalens.sae.load import LayerSAE, _as_saes, _model_dims

# ----------------------------------------------------------------------------- decomposition


@dataclass(frozen=True, eq=False)
class Decomposition:
    """The top features of a persona vector at one or more layers (see the module docstring).

    ``rows`` holds one record per (layer, direction, rank); ``cosines[L]`` the cosine of every
    feature (``[d_sae]``), and, when activations were given, ``attributions[L]`` and
    ``sample_attributions[L]`` every feature's attribution.
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

    def to_frame(self) -> pd.DataFrame:
        """One row per feature: layer, direction (aligned/anti), rank, feature, cosine,
        projection (cosine x |v_L|), decoder_norm, and with activations attribution,
        attribution_samples, pos_act and neg_act (encode(mean_pos), encode(mean_neg))."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.rows))

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
        return {
            "trait": self.trait,
            "model": self.model,
            "k": self.k,
            "layers": list(self.layers),
            "saes": {str(L): s for L, s in self.saes.items()},
            "settings": self.settings,
            "rows": [{k: _json_num(v) for k, v in r.items()} for r in self.rows],
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_dict` as JSON (atomic)."""
        from personalens._io import atomic_write_json

        return atomic_write_json(Path(path), self.to_dict())

    def __repr__(self) -> str:
        return (
            f"Decomposition(trait={self.trait!r}, model={self.model!r}, layers={list(self.layers)}, "
            f"k={self.k}, attributions={self.attributions is not None})"
        )


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


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
    from personalens.vectors.vector import PersonaVector

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise PersonaLensError(f"k must be a positive int, got {k!r}")
    k_anti = k if k_anti is None else k_anti
    if isinstance(k_anti, bool) or not isinstance(k_anti, int) or k_anti < 0:
        raise PersonaLensError(f"k_anti must be a non-negative int, got {k_anti!r}")
    if rank_by not in ("cosine", "attribution", "attribution_samples"):
        raise PersonaLensError(
            f"rank_by must be 'cosine', 'attribution' or 'attribution_samples', got {rank_by!r}"
        )
    if isinstance(vector, PersonaVector):
        if model is not None:
            vector.check_compatible(model)
        ref: Any = model if model is not None else vector
        table = _as_saes(saes, layer, ref)
        directions = {L: vector.directions[L] for L in table}
        trait, model_name, variant = vector.trait, vector.model, vector.variant
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
        trait, variant = "vector", "response_avg"
        model_name = (_model_dims(model)[2] or "") if model is not None else ""
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

    means, samples, act_info = _attribution_inputs(
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
    pos_acts: dict[int, Tensor] = {}
    neg_acts: dict[int, Tensor] = {}
    for L, s in table.items():
        dec = s.decoder()
        dec_norm = dec.norm(dim=-1)
        unit_dec = torch.where(dec_norm[:, None] > 0, dec / dec_norm.clamp(min=1e-12)[:, None], 0.0)
        v = directions[L].detach().float().cpu()
        cos = unit_dec @ (v / v.norm())
        cosines[L] = cos
        if means is not None and attributions is not None:
            p, n = means[L]
            enc = s.encode(torch.stack([p, n]).float()).cpu()
            pos_acts[L], neg_acts[L] = enc[0], enc[1]
            attributions[L] = enc[0] - enc[1]
        if samples is not None and sample_attr is not None:
            ps, ns = samples[L]
            sample_attr[L] = _mean_encoding(s, ps) - _mean_encoding(s, ns)
        score = {
            "cosine": cos,
            "attribution": attributions[L] if attributions is not None else None,
            "attribution_samples": sample_attr[L] if sample_attr is not None else None,
        }[rank_by]
        assert score is not None
        for direction, count in (("aligned", k), ("anti", k_anti)):
            count = min(count, s.d_sae)
            if count == 0:
                continue
            top = torch.topk(score if direction == "aligned" else -score, count)
            for rank, f in enumerate(top.indices.tolist(), start=1):
                row: dict[str, Any] = {
                    "layer": L,
                    "direction": direction,
                    "rank": rank,
                    "feature": int(f),
                    "cosine": float(cos[f]),
                    "projection": float(cos[f] * v.norm()),
                    "decoder_norm": float(dec_norm[f]),
                }
                if attributions is not None:
                    row["attribution"] = float(attributions[L][f])
                if sample_attr is not None:
                    row["attribution_samples"] = float(sample_attr[L][f])
                if attributions is not None:
                    row["pos_act"] = float(pos_acts[L][f])
                    row["neg_act"] = float(neg_acts[L][f])
                rows.append(row)
    settings = {
        "k": k,
        "k_anti": k_anti,
        "rank_by": rank_by,
        "variant": variant,
        "vector_norms": {str(L): float(directions[L].float().norm()) for L in table},
        "d_sae": {str(L): s.d_sae for L, s in table.items()},
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


def _mean_encoding(sae: LayerSAE, x: Float[Tensor, "n d_in"], chunk: int = 256) -> Tensor:
    total = torch.zeros(sae.d_sae)
    for i in range(0, x.shape[0], chunk):
        total += sae.encode(x[i : i + chunk].float()).sum(0).cpu()
    return total / max(x.shape[0], 1)


def _attribution_inputs(
    activations: Any,
    pos_mean: Any,
    neg_mean: Any,
    layers: list[int],
    variant: str,
    model: Any,
) -> tuple[dict[int, tuple[Tensor, Tensor]] | None, dict[int, tuple[Tensor, Tensor]] | None, dict]:
    """(means per layer, samples per layer or None, description) for the attributions."""
    from personalens.model.activations import VARIANTS, ActivationSet

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
    from personalens.extraction.pipeline import ExtractionResult

    if isinstance(activations, str | os.PathLike):
        from personalens.studies.layer_sweep import RunData

        run = RunData.from_dir(Path(activations))
        return (*_run_sides(run), f"kept extraction pairs of {activations}")
    if isinstance(activations, ExtractionResult):
        from personalens.studies.layer_sweep import RunData

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
    from personalens.extraction.pipeline import activation_records, filter_pairs, gather_side

    filt = filter_pairs(run.records, run.scores, run.config)
    keys = filt.keys("extract")
    acts = run.acts_for(activation_records(run.records, filt))
    pos = gather_side(acts, run.records, keys, "pos")
    neg = gather_side(acts, run.records, keys, "neg")
    if pos is None or neg is None:
        raise PersonaLensError(f"{run.where}: no kept extraction pairs with activations")
    return pos, neg

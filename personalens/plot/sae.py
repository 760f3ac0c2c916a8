"""Figures of SAE decomposition: the top features of a persona vector
(:class:`~personalens.sae.decompose.Decomposition`) and steering along them
(:class:`~personalens.sae.causal.FeatureSteeringResult`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from personalens.plot.style import (
    _add_score_and_coherence,
    _finish,
    _finish_score_and_coherence,
    _score_and_coherence_panels,
)

if TYPE_CHECKING:
    from personalens.sae.causal import FeatureSteeringResult
    from personalens.sae.decompose import Decomposition

__all__ = ["plot_feature_steering", "plot_sae_cosines"]


def plot_sae_cosines(decomposition: Decomposition, *, title: str | None = None) -> go.Figure:
    """Signed decoder cosines of a :class:`~personalens.sae.decompose.Decomposition`'s top features.

    One row of bars per layer: the most aligned features (red, best first), then the most
    anti-aligned (blue). Bars are labelled ``f<id>``; hovering shows the cosine, the projection
    and, when the decomposition has them, the attributions.
    """
    df = decomposition.to_frame()
    layers = list(decomposition.layers)
    fig = make_subplots(
        rows=len(layers),
        cols=1,
        vertical_spacing=0.12 / max(len(layers), 1),
        subplot_titles=[f"layer {L}" for L in layers],
    )
    extra = [c for c in ("attribution", "attribution_samples") if c in df.columns]
    for i, layer in enumerate(layers, start=1):
        for direction, color in (("aligned", "rgb(214,39,40)"), ("anti", "rgb(31,119,180)")):
            rows = df[(df.layer == layer) & (df.direction == direction)]
            if rows.empty:
                continue
            hover = "<b>feature %{customdata[0]}</b><br>cosine %{y:.3f}<br>projection %{customdata[1]:.3g}"
            hover += "".join(f"<br>{c} %{{customdata[{j + 2}]:.3g}}" for j, c in enumerate(extra))
            fig.add_trace(
                go.Bar(
                    x=[f"f{f}" for f in rows.feature],
                    y=rows.cosine.tolist(),
                    marker={"color": color},
                    name=f"{direction} (layer {layer})",
                    legendgroup=direction,
                    showlegend=i == 1,
                    customdata=rows[["feature", "projection", *extra]].values.tolist(),
                    hovertemplate=hover + "<extra></extra>",
                ),
                row=i,
                col=1,
            )
        fig.update_yaxes(title_text="cosine", range=[-1.05, 1.05], row=i, col=1)
        fig.update_xaxes(type="category", row=i, col=1)
    title = title or (
        f"SAE features of {decomposition.trait}: signed cosine with the decoder directions"
    )
    return _finish(fig, title, barmode="relative", height=max(380, 300 * len(layers)))


def plot_feature_steering(
    result: FeatureSteeringResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait-score change vs coefficient 0 (top, ± s.e.m.) and mean coherence (bottom) against
    the steering coefficient, one line per feature of a
    :class:`~personalens.sae.causal.FeatureSteeringResult` (and the persona vector if it was run)."""
    table = result.to_frame(coherence_threshold=coherence_threshold)
    fig = _score_and_coherence_panels("trait score change vs coeff 0")
    for i, label in enumerate(dict.fromkeys(table.label)):
        rows = table[table.label == label].sort_values("coeff")
        _add_score_and_coherence(
            fig,
            rows,
            "trait_change",
            name=label,
            legendgroup=label,
            color="black" if label == "persona vector" else i,
            score_hover=f"{label}<br>coeff %{{x}}<br>trait change %{{y:+.1f}}<extra></extra>",
            coherence_hover=f"{label}<br>coeff %{{x}}<br>coherence %{{y:.1f}}<extra></extra>",
        )
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1}, row=1, col=1)
    fig.update_yaxes(title_text="Δ trait (0-100 scale)", row=1, col=1)
    title = title or (
        f"Steering along SAE decoder directions at layer {result.layer}: {result.trait}"
    )
    return _finish_score_and_coherence(
        fig,
        title,
        coherence_threshold=coherence_threshold,
        x=f"steering coefficient ({result.coeff_scale})",
    )

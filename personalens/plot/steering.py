"""Figures of a steering sweep (:class:`~personalens.studies.steering_sweep.SteeringSweepResult`):
trait score and coherence against the coefficient, and a layer x coefficient heatmap."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go

from personalens.plot.style import (
    _add_score_and_coherence,
    _finish,
    _finish_score_and_coherence,
    _score_and_coherence_panels,
)

if TYPE_CHECKING:
    from personalens.studies.steering_sweep import SteeringSweepResult

__all__ = ["plot_steering_heatmap", "plot_steering_sweep"]


def plot_steering_sweep(
    result: SteeringSweepResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait score (top, ± s.e.m. over prompts) and coherence (bottom) vs coefficient per layer."""
    table = result.summary(coherence_threshold)
    fig = _score_and_coherence_panels("judged trait score")
    for i, layer in enumerate(result.layers):
        rows = table[table.layer == layer].sort_values("coeff")
        _add_score_and_coherence(
            fig,
            rows,
            "trait",
            name=f"layer {layer}",
            legendgroup=str(layer),
            color=i,
            score_hover="layer %{fullData.name}<br>coeff %{x}<br>trait %{y:.1f}<extra></extra>",
            coherence_hover="coeff %{x}<br>coherence %{y:.1f}<extra></extra>",
        )
    fig.update_yaxes(range=[0, 100], row=1, col=1, title_text="trait (0-100)")
    title = title or f"Steering sweep: {result.trait} ({result.settings.get('mode', 'add')})"
    return _finish_score_and_coherence(
        fig, title, coherence_threshold=coherence_threshold, x="steering coefficient"
    )


def plot_steering_heatmap(
    result: SteeringSweepResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Layer x coefficient heatmap of the mean trait score; cells show ``trait / coherence``.

    Cells whose mean coherence is below ``coherence_threshold`` are marked with an asterisk:
    a high trait score there may just be broken text.
    """
    table = result.summary(coherence_threshold)
    coeffs = sorted(result.coeffs)
    layers = list(result.layers)
    z, text, hover = [], [], []
    for layer in layers:
        zr, tr, hr = [], [], []
        for c in coeffs:
            row = table[(table.layer == layer) & (table.coeff == c)]
            t = float(row.trait.iloc[0]) if len(row) else float("nan")
            coh = float(row.coherence.iloc[0]) if len(row) else float("nan")
            zr.append(t)
            flag = "*" if coh < coherence_threshold else ""
            tr.append(f"{t:.0f} / {coh:.0f}{flag}")
            hr.append(f"layer {layer}, coeff {c:g}<br>trait {t:.1f}<br>coherence {coh:.1f}")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[f"{c:g}" for c in coeffs],
            y=[f"L{layer}" for layer in layers],
            text=text,
            texttemplate="%{text}",
            hovertext=hover,
            hoverinfo="text",
            colorscale="Reds",
            zmin=0,
            zmax=100,
            colorbar={"title": "trait"},
        )
    )
    title = title or (
        f"{result.trait}: trait score / coherence (* = coherence < {coherence_threshold:g})"
    )
    return _finish(fig, title, x="steering coefficient", y="layer")

"""Figures of persona drift and style vectors: drift trajectories per scenario kind (uncapped vs
capped, a :class:`~personalens.studies.persona_drift.result.DriftResult`) and the cosine of style
vectors with persona vectors (a :class:`~personalens.studies.style_comparison.StyleCosines`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from personalens.plot.style import _ci_band, _finish, _palette
from personalens.plot.vectors import COSINE_COLORSCALE

if TYPE_CHECKING:
    from personalens.studies.persona_drift.result import DriftResult
    from personalens.studies.style_comparison import StyleCosines

__all__ = ["plot_drift_trajectories", "plot_style_persona_cosines"]

CONDITION_DASH = {False: "solid", True: "dash"}


def plot_drift_trajectories(result: DriftResult, *, title: str | None = None) -> go.Figure:
    """Mean projection on the axis (± 95% CI across conversations) against the turn, one panel
    per scenario kind, uncapped (solid) and capped (dashed), the capping floor at the read layer
    dotted when it was capped."""
    table = result.trajectories()
    kinds = list(dict.fromkeys(table["kind"]))
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, subplot_titles=kinds)
    for col, kind in enumerate(kinds, start=1):
        for capped in (False, True):
            rows = table[(table["kind"] == kind) & (table["capped"] == capped)]
            if rows.empty:
                continue
            name = "capped" if capped else "uncapped"
            color = _palette(1 if capped else 0)
            turns = [int(t) + 1 for t in rows["turn"]]
            lo, hi = rows["ci_lo"].tolist(), rows["ci_hi"].tolist()
            if not any(math.isnan(v) for v in lo + hi):
                fig.add_trace(_ci_band(turns, lo, hi, color, name, legendgroup=name), 1, col)
            fig.add_trace(
                go.Scatter(
                    x=turns,
                    y=rows["mean"].tolist(),
                    mode="lines+markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    line={"color": color, "dash": CONDITION_DASH[capped]},
                    hovertemplate=f"{kind}, {name}<br>turn %{{x}}<br>projection %{{y:.2f}}"
                    "<extra></extra>",
                ),
                1,
                col,
            )
        floor = (result.capping or {}).get("floors") or {}
        if str(result.layer) in floor:
            fig.add_hline(y=floor[str(result.layer)], line_dash="dot", line_color="grey", row=1,
                          col=col)  # fmt: skip
        fig.update_xaxes(title_text="user turn", dtick=1, row=1, col=col)
    fig.update_yaxes(title_text=f"projection on the axis (layer {result.layer})", row=1, col=1)
    spec = (result.capping or {}).get("spec")
    heading = title or "Persona drift per scenario kind" + (f" (capping {spec})" if spec else "")
    return _finish(fig, heading, legend="condition", width=max(520, 360 * len(kinds)), height=460)


def plot_style_persona_cosines(
    cosines: StyleCosines, layer: int | None = None, *, title: str | None = None
) -> go.Figure:
    """Heatmap of the cosine of each style vector (rows) with each persona vector (columns) at
    ``layer`` (default the middle one of ``cosines.layers``), colour scale fixed to [-1, 1]."""
    layer = cosines.layers[len(cosines.layers) // 2] if layer is None else layer
    values = cosines.at(layer)
    heatmap = {
        "colorscale": COSINE_COLORSCALE,
        "zmin": -1.0,
        "zmax": 1.0,
        "texttemplate": "%{z:.2f}",
        "colorbar": {"title": {"text": "cosine"}},
        "hovertemplate": "style %{y}<br>persona %{x}<br>cosine %{z:.3f}<extra></extra>",
    }
    fig = go.Figure(go.Heatmap(z=values.tolist(), x=cosines.personas, y=cosines.styles, **heatmap))
    return _finish(
        fig,
        title or f"Style vectors vs persona vectors (cosine, layer {layer})",
        x="persona vector",
        y="style vector",
        xaxis={"type": "category", "tickangle": -30},
        yaxis={"type": "category", "autorange": "reversed"},
        width=max(480, 70 * len(cosines.personas) + 260),
        height=max(300, 60 * len(cosines.styles) + 220),
    )

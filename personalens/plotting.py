"""Plotly figures for personalens results.

This is the only personalens module that imports plotly; ``import personalens`` does not load it
(the names below are imported on first use). Every ``plot_*`` function builds and returns a
:class:`plotly.graph_objects.Figure` and never calls ``.show()``: display it with ``fig.show()``
(or by leaving it as the last expression of a notebook cell), or write it with :func:`save_html`,
which embeds plotly.js so the file opens offline.

Figures:

* :func:`plot_cosine_matrix` -- heatmap of a :class:`~personalens.algebra.CosineMatrix` at one
  layer, with a slider to scrub through its layers.
* :func:`plot_cosine_by_layer` -- the cosine of each pair of vectors against the layer.
* :func:`plot_steering_sweep` -- mean judged trait score (± s.e.m.) and coherence against the
  steering coefficient, one line per layer.
* :func:`plot_steering_heatmap` -- layer x coefficient heatmap of the trait score, each cell
  annotated with the mean coherence.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from ._io import atomic_write_text
from .algebra import CosineMatrix

if TYPE_CHECKING:
    from .sweep import SteeringSweepResult

__all__ = [
    "plot_cosine_by_layer",
    "plot_cosine_matrix",
    "plot_steering_heatmap",
    "plot_steering_sweep",
    "save_html",
]

# diverging, red for positive and blue for negative cosines, white at 0
COSINE_COLORSCALE = "RdBu_r"


# ----------------------------------------------------------------------------- cosines


def plot_cosine_matrix(
    cm: CosineMatrix, layer: int | None = None, *, title: str | None = None
) -> go.Figure:
    """Heatmap of the ``k x k`` cosine matrix at one layer, with a slider over all layers of ``cm``.

    ``layer`` is the personalens layer shown first; it must be one of ``cm.layers``. By default
    it is the middle one of ``cm.layers`` (``cm.layers[len(cm.layers) // 2]``), where persona
    vectors usually steer best. The colour scale is diverging and fixed to ``[-1, 1]`` (white at
    0) so that colours mean the same at every layer; each cell is annotated with its value. The
    slider has one step per layer of ``cm`` and restyles the single heatmap trace, so the figure
    works offline without animation frames. Rows and columns follow ``cm.names``, top-left to
    bottom-right.
    """
    start = len(cm.layers) // 2 if layer is None else cm._position(layer)
    base = title or "Cosine similarity between persona vectors"

    def heading(i: int) -> str:
        return f"{base} (layer {cm.layers[i]})"

    fig = go.Figure(
        go.Heatmap(
            z=cm.values[start].tolist(),
            x=cm.names,
            y=cm.names,
            zmin=-1.0,
            zmax=1.0,
            colorscale=COSINE_COLORSCALE,
            colorbar={"title": {"text": "cosine"}},
            texttemplate="%{z:.2f}",
            hovertemplate="%{y} vs %{x}<br>cosine %{z:.3f}<extra></extra>",
        )
    )
    steps = [
        {
            "label": str(layer_number),
            "method": "update",
            "args": [{"z": [cm.values[i].tolist()]}, {"title": {"text": heading(i)}}],
        }
        for i, layer_number in enumerate(cm.layers)
    ]
    size = max(420, 60 * cm.k + 260)
    fig.update_layout(
        title={"text": heading(start)},
        xaxis={"type": "category", "side": "bottom", "tickangle": -30},
        yaxis={"type": "category", "autorange": "reversed", "scaleanchor": "x"},
        sliders=[
            {
                "active": start,
                "currentvalue": {"prefix": "layer "},
                "pad": {"t": 60},
                "steps": steps,
            }
        ],
        width=size + 80,
        height=size + 80,
        template="plotly_white",
    )
    return fig


def plot_cosine_by_layer(cm: CosineMatrix, *, title: str | None = None) -> go.Figure:
    """One line per pair of vectors (``a`` before ``b`` in ``cm.names``): cosine against layer.

    ``k * (k - 1) / 2`` traces, named ``"a · b"``; the y axis is fixed to ``[-1, 1]``. A single
    vector has no pairs and gives a figure with no traces.
    """
    fig = go.Figure()
    k = cm.k
    for a in range(k):
        for b in range(a + 1, k):
            name = f"{cm.names[a]} · {cm.names[b]}"
            fig.add_trace(
                go.Scatter(
                    x=cm.layers,
                    y=cm.values[:, a, b].tolist(),
                    mode="lines+markers",
                    name=name,
                    hovertemplate=f"{name}<br>layer %{{x}}: cosine %{{y:.3f}}<extra></extra>",
                )
            )
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1, "dash": "dot"})
    fig.update_layout(
        title={"text": title or "Cosine similarity by layer"},
        xaxis={"title": {"text": "layer (blocks.L.hook_resid_post)"}},
        yaxis={"title": {"text": "cosine"}, "range": [-1.05, 1.05]},
        legend={"title": {"text": "pair"}},
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------------- files


# ----------------------------------------------------------------------------- steering


def plot_steering_sweep(
    result: SteeringSweepResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait score (top, ± s.e.m. over prompts) and coherence (bottom) vs coefficient per layer."""
    from plotly.subplots import make_subplots

    table = result.summary(coherence_threshold)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.62, 0.38],
        subplot_titles=("judged trait score", "judged coherence"),
    )
    for i, layer in enumerate(result.layers):
        rows = table[table.layer == layer].sort_values("coeff")
        color = _palette(i)
        fig.add_trace(
            go.Scatter(
                x=rows.coeff,
                y=rows.trait,
                error_y={"type": "data", "array": rows.trait_sem.fillna(0.0), "visible": True},
                mode="lines+markers",
                name=f"layer {layer}",
                legendgroup=str(layer),
                line={"color": color},
                hovertemplate="layer %{fullData.name}<br>coeff %{x}<br>trait %{y:.1f}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=rows.coeff,
                y=rows.coherence,
                mode="lines+markers",
                name=f"layer {layer}",
                legendgroup=str(layer),
                showlegend=False,
                line={"color": color, "dash": "dot"},
                hovertemplate="coeff %{x}<br>coherence %{y:.1f}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    fig.add_hline(
        y=coherence_threshold, line={"color": "grey", "dash": "dash", "width": 1}, row=2, col=1
    )
    fig.update_yaxes(range=[0, 100], row=1, col=1, title_text="trait (0-100)")
    fig.update_yaxes(range=[0, 100], row=2, col=1, title_text="coherence")
    fig.update_xaxes(title_text="steering coefficient", row=2, col=1)
    fig.update_layout(
        title=title or f"Steering sweep: {result.trait} ({result.settings.get('mode', 'add')})",
        template="plotly_white",
        height=620,
    )
    return fig


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
    fig.update_layout(
        title=title
        or f"{result.trait}: trait score / coherence (* = coherence < {coherence_threshold:g})",
        xaxis_title="steering coefficient",
        yaxis_title="layer",
        template="plotly_white",
    )
    return fig


def _palette(i: int) -> str:
    import plotly.colors

    colors = plotly.colors.qualitative.Plotly
    return colors[i % len(colors)]


def save_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a self-contained HTML file (plotly.js embedded, opens offline); atomic.

    Readers of ``path`` see the previous file or the complete new one, never a partial write.
    Returns ``path`` as a :class:`~pathlib.Path`. The file is about 4-5 MB, mostly plotly.js.
    """
    path = Path(path)
    html = fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True)
    atomic_write_text(path, html)
    return path

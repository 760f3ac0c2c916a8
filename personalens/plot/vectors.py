"""Figures of the cosine similarity between persona vectors (a
:class:`~personalens.vectors.algebra.CosineMatrix`): the matrix at one layer, each pair by layer."""

from __future__ import annotations

import plotly.graph_objects as go

from personalens.plot.style import LAYER_AXIS_TITLE, _finish
from personalens.vectors.algebra import CosineMatrix

__all__ = ["plot_cosine_by_layer", "plot_cosine_matrix"]

# diverging, red for positive and blue for negative cosines, white at 0
COSINE_COLORSCALE = "RdBu_r"


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
    return _finish(
        fig,
        heading(start),
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
    )


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
    return _finish(
        fig,
        title or "Cosine similarity by layer",
        x=LAYER_AXIS_TITLE,
        y="cosine",
        legend="pair",
        yaxis={"range": [-1.05, 1.05]},
    )

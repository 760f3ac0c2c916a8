"""What the personalens figures share: colours, the common layout, CI bands, two-panel layouts,
HTML output.

:func:`save_html` is public (re-exported as ``personalens.plot.save_html``); the ``_`` helpers
are for the figure modules of this package only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import plotly.colors
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from personalens._io import atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["save_html"]

# x-axis title of every figure drawn against the layer
LAYER_AXIS_TITLE = "layer (blocks.L.hook_resid_post)"


def save_html(fig: go.Figure, path: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as a self-contained HTML file (plotly.js embedded, opens offline); atomic.

    Readers of ``path`` see the previous file or the complete new one, never a partial write.
    Returns ``path`` as a :class:`~pathlib.Path`. The file is about 4-5 MB, mostly plotly.js.
    """
    path = Path(path)
    html = fig.to_html(include_plotlyjs=True, include_mathjax=False, full_html=True)
    atomic_write_text(path, html)
    return path


def _finish(
    fig: go.Figure,
    title: str,
    *,
    x: str | None = None,
    y: str | None = None,
    legend: str | None = None,
    **layout: Any,
) -> go.Figure:
    """Lay out ``fig`` as every personalens figure: its ``title``, the ``plotly_white`` template,
    the x axis, y axis and legend titles ``x``, ``y`` and ``legend`` where given, and any other
    ``layout`` keys (an ``xaxis``, ``yaxis`` or ``legend`` dict among them is merged with its
    title). Returns ``fig``."""
    for key, text in (("xaxis", x), ("yaxis", y), ("legend", legend)):
        if text is not None:
            layout[key] = {"title": {"text": text}, **layout.get(key, {})}
    fig.update_layout(title={"text": title}, template="plotly_white", **layout)
    return fig


def _palette(i: int) -> str:
    """The ``i``-th colour of plotly's default qualitative palette (cycling)."""
    colors = plotly.colors.qualitative.Plotly
    return colors[i % len(colors)]


def _rgba(color: str, alpha: float) -> str:
    """``"rgba(r, g, b, alpha)"`` of a ``#rrggbb`` colour."""
    r, g, b = plotly.colors.hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def _ci_bounds(ci: Sequence[Sequence[float]]) -> tuple[list[float], list[float]]:
    """The lower and upper ends of a list of ``(lo, hi)`` intervals."""
    return [c[0] for c in ci], [c[1] for c in ci]


def _ci_band(
    layers: list[int],
    lo: list[float],
    hi: list[float],
    color: str,
    name: str,
    legendgroup: str | None = None,
) -> go.Scatter:
    """A shaded band from ``lo`` to ``hi`` over ``layers`` (no legend entry, no hover)."""
    return go.Scatter(
        x=layers + layers[::-1],
        y=hi + lo[::-1],
        fill="toself",
        fillcolor=_rgba(color, 0.18),
        line={"width": 0},
        hoverinfo="skip",
        showlegend=False,
        legendgroup=legendgroup,
        name=name,
    )


def _two_panels(
    subplot_titles: tuple[str, str], row_heights: list[float] | None = None
) -> go.Figure:
    """Two stacked panels sharing the x axis."""
    return make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=row_heights,
        subplot_titles=subplot_titles,
    )


def _score_and_coherence_panels(score_title: str) -> go.Figure:
    """Two panels: a judged trait score (top, larger) and the judged coherence (bottom)."""
    return _two_panels((score_title, "judged coherence"), row_heights=[0.62, 0.38])


def _add_score_and_coherence(
    fig: go.Figure,
    rows: pd.DataFrame,
    score: str,
    *,
    name: str,
    legendgroup: str,
    color: str | int,
    score_hover: str,
    coherence_hover: str,
) -> None:
    """One line in each panel of :func:`_score_and_coherence_panels`: column ``score`` of
    ``rows`` with its ``trait_sem`` error bars (top, in the legend) and the ``coherence`` column
    dotted (bottom, same legend group), both against the ``coeff`` column. ``color`` is a colour,
    or ``i`` for the ``i``-th colour of :func:`_palette`."""
    if isinstance(color, int):
        color = _palette(color)
    fig.add_trace(
        go.Scatter(
            x=rows.coeff,
            y=rows[score],
            error_y={"type": "data", "array": rows.trait_sem.fillna(0.0), "visible": True},
            mode="lines+markers",
            name=name,
            legendgroup=legendgroup,
            line={"color": color},
            hovertemplate=score_hover,
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=rows.coeff,
            y=rows.coherence,
            mode="lines+markers",
            name=name,
            legendgroup=legendgroup,
            showlegend=False,
            line={"color": color, "dash": "dot"},
            hovertemplate=coherence_hover,
        ),
        row=2,
        col=1,
    )


def _finish_score_and_coherence(
    fig: go.Figure, title: str, *, coherence_threshold: float, x: str
) -> go.Figure:
    """Finish a figure of :func:`_score_and_coherence_panels`: the dashed coherence threshold and
    the 0-100 coherence axis in the bottom panel, the x axis title ``x`` under it, and the
    :func:`_finish` layout, 620 px high. Returns ``fig``."""
    fig.add_hline(
        y=coherence_threshold, line={"color": "grey", "dash": "dash", "width": 1}, row=2, col=1
    )
    fig.update_yaxes(range=[0, 100], title_text="coherence", row=2, col=1)
    fig.update_xaxes(title_text=x, row=2, col=1)
    return _finish(fig, title, height=620)

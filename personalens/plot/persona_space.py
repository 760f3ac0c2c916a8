"""Figures of the persona space
(:class:`~personalens.studies.persona_space.result.PersonaSpaceResult`): the roles on PC1-PC3,
the variance each component explains, and PC1 against the axis layer by layer."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from personalens.plot.style import LAYER_AXIS_TITLE, _finish, _palette

if TYPE_CHECKING:
    from personalens.studies.persona_space.result import PersonaSpaceResult

__all__ = ["plot_persona_layers", "plot_persona_space", "plot_persona_variance"]

AXIS_COLORSCALE = "RdBu"  # red: role-play end of the axis, blue: the assistant end


def plot_persona_space(
    result: PersonaSpaceResult, *, layer: int | None = None, title: str | None = None
) -> go.Figure:
    """The roles on PC1, PC2 and PC3 at ``layer`` (default: the result's report layer), in 3-D,
    each labelled and coloured by its projection on the axis (blue toward the assistant); the
    default assistant is the large black diamond. PC1 points toward the default."""
    p = result.at(layer)
    coords = p.role_coords.tolist()
    proj = p.role_projection.tolist()
    counts = result.summary["n_replies_per_role"]
    hover = [
        f"{n}<br>axis projection {v:.2f}<br>{counts[n]} replies"
        for n, v in zip(result.role_names, proj)
    ]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter3d(
            x=[c[0] for c in coords],
            y=[c[1] for c in coords],
            z=[c[2] for c in coords],
            mode="markers+text",
            text=list(result.role_names),
            hovertext=hover,
            hoverinfo="text",
            textfont={"size": 9},
            name="roles",
            marker={
                "size": 5,
                "color": proj,
                "colorscale": AXIS_COLORSCALE,
                "colorbar": {"title": {"text": "axis projection"}},
            },
        )
    )
    d = p.default_coords.tolist()
    fig.add_trace(
        go.Scatter3d(
            x=[d[0]],
            y=[d[1]],
            z=[d[2]],
            mode="markers+text",
            text=["default"],
            name="default assistant",
            hovertext=[f"default<br>axis projection {p.default_projection:.2f}"],
            hoverinfo="text",
            marker={"size": 10, "color": "black", "symbol": "diamond"},
        )
    )
    ratio = p.explained_variance_ratio
    names = [f"PC{i + 1} ({ratio[i]:.0%})" if i < len(ratio) else f"PC{i + 1}" for i in range(3)]
    title = title or (
        f"Persona space at layer {p.layer}: {len(result.role_names)} roles; cos(PC1, axis) = "
        f"{p.pc1_axis_cosine:.2f}, default at rank {p.default_pc1_rank} on PC1"
    )
    scene = {"xaxis_title": names[0], "yaxis_title": names[1], "zaxis_title": names[2]}
    return _finish(fig, title, scene=scene, legend="")


def plot_persona_variance(
    result: PersonaSpaceResult, *, layer: int | None = None, title: str | None = None
) -> go.Figure:
    """The share of the role vectors' variance each principal component explains at ``layer``
    (bars), with the cumulative share (line)."""
    p = result.at(layer)
    ratio = list(p.explained_variance_ratio)
    xs = [f"PC{i + 1}" for i in range(len(ratio))]
    cumulative = [sum(ratio[: i + 1]) for i in range(len(ratio))]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=xs, y=ratio, name="explained", marker_color=_palette(0)))
    fig.add_trace(
        go.Scatter(
            x=xs, y=cumulative, name="cumulative", mode="lines+markers", line_color=_palette(1)
        )
    )
    title = title or f"Variance of the role vectors per principal component, layer {p.layer}"
    return _finish(fig, title, x="component", y="explained variance ratio", yaxis={"range": [0, 1]})


def plot_persona_layers(result: PersonaSpaceResult, *, title: str | None = None) -> go.Figure:
    """Against the layer: the variance PC1 explains and the cosine of PC1 with the axis (top),
    and where the default sits on PC1 among the roles (bottom; 1 = beyond every role)."""
    s = result.summary
    layers = s["layers"]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08)
    for i, (key, name) in enumerate(
        (
            ("pc1_explained_variance", "PC1 explained variance"),
            ("pc1_axis_cosine", "cos(PC1, axis)"),
        )
    ):
        fig.add_trace(
            go.Scatter(x=layers, y=s[key], name=name, mode="lines+markers", line_color=_palette(i)),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=s["default_pc1_rank"],
            name="default's rank on PC1",
            mode="lines+markers",
            line_color=_palette(2),
        ),
        row=2,
        col=1,
    )
    fig.update_yaxes(title_text="value", range=[0, 1.05], row=1, col=1)
    fig.update_yaxes(title_text="rank (1 = beyond all roles)", row=2, col=1)
    fig.update_xaxes(title_text=LAYER_AXIS_TITLE, row=2, col=1)
    title = title or f"Persona space by layer ({s['n_roles']} roles)"
    return _finish(fig, title)

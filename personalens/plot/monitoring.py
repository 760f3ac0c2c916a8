"""Figures of trait monitoring: the per-token projection of a conversation
(:class:`~personalens.studies.monitoring.TokenTrace`), and projection vs judged trait score of a
:class:`~personalens.studies.monitoring_experiment.MonitoringResult` (scatter, r by layer)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import plotly.graph_objects as go

from personalens.plot.style import LAYER_AXIS_TITLE, _finish, _palette

if TYPE_CHECKING:
    from personalens.studies.monitoring import TokenTrace
    from personalens.studies.monitoring_result import MonitoringResult

__all__ = ["plot_monitoring_r_by_layer", "plot_monitoring_scatter", "plot_token_trace"]


_SEGMENT_COLORS = {
    "system": "#8c564b",
    "user": "#1f77b4",
    "assistant": "#17becf",
    "template": "#b0b0b0",
    "prompt": "#7f7f7f",
    "response": "#d62728",
}


def plot_token_trace(trace: TokenTrace, *, title: str | None = None) -> go.Figure:
    """Projection of every token of a :class:`~personalens.studies.monitoring.TokenTrace`.

    Bars are the tokens in order (hover for the token text), coloured by where they come from
    (system, user, template, response); the dashed line marks the last prompt token, the dotted
    line the reply's mean projection. Token 0 (the attention sink) is drawn but its bar is cut
    off by the y range, set from tokens 1 onwards.
    """
    x = list(range(len(trace)))
    y = trace.projections.tolist()
    fig = go.Figure()
    for seg in dict.fromkeys(trace.segments):
        idx = [i for i, s in enumerate(trace.segments) if s == seg]
        fig.add_trace(
            go.Bar(
                x=[x[i] for i in idx],
                y=[y[i] for i in idx],
                name=seg,
                marker={"color": _SEGMENT_COLORS.get(seg, "#7f7f7f")},
                customdata=[[trace.tokens[i]] for i in idx],
                hovertemplate="#%{x} %{customdata[0]|s}<br>projection %{y:.2f}<extra>"
                + seg
                + "</extra>",
            )
        )
    fig.add_vline(x=trace.n_prompt_tokens - 1, line={"dash": "dash", "color": "#444"})
    if len(trace.response):
        fig.add_hline(y=trace.response_mean(), line={"dash": "dot", "color": "#d62728"})
    body = y[1:] if len(y) > 1 else y
    lo, hi = min(body), max(body)
    pad = 0.05 * (hi - lo or 1.0)
    title = title or (
        f"Per-token projection on the {trace.trait} vector, layer {trace.layer} "
        f"(last prompt token {trace.last_prompt:.1f})"
    )
    return _finish(
        fig,
        title,
        x="token position",
        y="projection on unit vector",
        legend="segment",
        yaxis={"range": [lo - pad, hi + pad]},
        bargap=0.05,
    )


def plot_monitoring_scatter(
    result: MonitoringResult, *, layer: int | None = None, title: str | None = None
) -> go.Figure:
    """Last-prompt-token projection (x) vs judged trait score (y), one point per reply.

    One marker colour per condition (circles: system prompts, diamonds: many-shot); larger
    outlined markers are the condition means. The title gives Pearson r overall (95% CI),
    between condition means, and the mean within-condition r.
    """
    df = result.to_frame(layer)
    c = result.correlations(layer)
    fig = go.Figure()
    conds = list(dict.fromkeys(df["condition"]))
    for i, name in enumerate(conds):
        sub = df[df["condition"] == name]
        symbol = "diamond" if sub["kind"].iloc[0] == "many_shot" else "circle"
        color = _palette(i)
        fig.add_trace(
            go.Scatter(
                x=sub["projection"],
                y=sub["trait"],
                mode="markers",
                name=name,
                legendgroup=name,
                marker={"color": color, "symbol": symbol, "size": 7, "opacity": 0.6},
                customdata=sub[["question"]].to_numpy(),
                hovertemplate=f"{name}<br>%{{customdata[0]}}<br>projection %{{x:.2f}}"
                "<br>trait %{y:.1f}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=[sub["projection"].mean()],
                y=[sub["trait"].mean()],
                mode="markers",
                name=f"{name} (mean)",
                legendgroup=name,
                showlegend=False,
                marker={
                    "color": color,
                    "symbol": symbol,
                    "size": 15,
                    "line": {"color": "black", "width": 1.5},
                },
                hovertemplate=f"{name} mean<br>projection %{{x:.2f}}<br>trait %{{y:.1f}}"
                "<extra></extra>",
            )
        )
    lo, hi = c["r_ci95"]
    title = title or (
        f"{result.trait}: last-prompt projection vs trait score (layer {c['layer']})<br>"
        f"<sup>r = {c['r']:.2f} [{lo:.2f}, {hi:.2f}] (n={c['n']}), condition means r = "
        f"{c['r_condition_means']:.2f}, within-condition mean r = "
        f"{c['r_within_mean']:.2f}</sup>"
    )
    return _finish(
        fig,
        title,
        x="projection of the last prompt token on the unit vector",
        y=f"trait score ({result.settings.get('judge', 'judge')})",
        legend="condition",
    )


def plot_monitoring_r_by_layer(result: MonitoringResult, *, title: str | None = None) -> go.Figure:
    """Pearson r (all points, and condition means) of projection vs trait score at each layer,
    for all conditions and for each kind of condition."""
    fig = go.Figure()
    kinds = [None, *sorted({r["kind"] for r in result.records})]
    for i, kind in enumerate(kinds):
        df = result.r_by_layer(kind)
        label = kind or "all"
        color = _palette(i)
        for column, mode, what, dash in (
            ("r", "lines+markers", "points", None),
            ("r_condition_means", "lines", "condition means", "dot"),
        ):
            fig.add_trace(
                go.Scatter(
                    x=df["layer"],
                    y=df[column],
                    mode=mode,
                    name=f"{label}: {what}",
                    line={"color": color, "dash": dash},
                )
            )
    fig.add_vline(x=result.layer, line={"dash": "dash", "color": "#888"})
    title = title or f"{result.trait}: monitoring correlation by layer"
    return _finish(fig, title, x=LAYER_AXIS_TITLE, y="Pearson r", yaxis={"range": [-1, 1]})

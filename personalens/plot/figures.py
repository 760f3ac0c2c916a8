"""Plotly figures for personalens results.

This is the only personalens module that imports plotly; ``import personalens`` does not load it
(the names below are imported on first use). Every ``plot_*`` function builds and returns a
:class:`plotly.graph_objects.Figure` and never calls ``.show()``: display it with ``fig.show()``
(or by leaving it as the last expression of a notebook cell), or write it with :func:`save_html`,
which embeds plotly.js so the file opens offline.

Figures:

* :func:`plot_cosine_matrix` -- heatmap of a :class:`~personalens.vectors.algebra.CosineMatrix` at one
  layer, with a slider to scrub through its layers.
* :func:`plot_cosine_by_layer` -- the cosine of each pair of vectors against the layer.
* :func:`plot_steering_sweep` -- mean judged trait score (± s.e.m.) and coherence against the
  steering coefficient, one line per layer.
* :func:`plot_steering_heatmap` -- layer x coefficient heatmap of the trait score, each cell
  annotated with the mean coherence.
* :func:`plot_layer_sweep` -- held-out AUC against layer with bootstrap CI bands, one or more
  traits overlaid, each trait's best layer starred.
* :func:`plot_layer_separation` -- separation (with CI) and Cohen's d against layer.
* :func:`plot_token_trace` -- the projection of every token of a conversation, coloured by
  segment (system, user, template, response).
* :func:`plot_monitoring_scatter` -- last-prompt-token projection vs judged trait score, one
  colour per prompt condition, condition means outlined, Pearson r in the title.
* :func:`plot_monitoring_r_by_layer` -- that Pearson r at every layer.
* :func:`plot_screening_histogram` -- overlaid histograms of the projection difference ΔP of
  one or more screened datasets, with each dataset's mean marked.
* :func:`plot_sae_cosines` -- the top-k SAE features of a persona vector per layer, as bars of
  signed decoder cosine (aligned red, anti-aligned blue).
* :func:`plot_feature_steering` -- trait-score change (and coherence) against the steering
  coefficient, one line per SAE feature.
* :func:`plot_finetuning_shift` -- finetuning shift along the persona vector vs judged trait-score
  change, one point per finetuned model, Pearson r in the title.
* :func:`plot_shift_by_layer` -- the finetuning shift against the layer, one line per model.
* :func:`plot_scalar_sweep` -- questionnaire score change against the steering coefficient, one
  line per dimension with its least-squares fit, the trait's target dimension highlighted.
* :func:`plot_additive_test` -- observed vs predicted score changes of summed and subtracted
  trait vectors, one point per dimension, with the identity line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from personalens._io import atomic_write_text
from personalens.vectors.algebra import CosineMatrix

if TYPE_CHECKING:
    from personalens.sae.causal import FeatureSteeringResult
    from personalens.sae.decompose import Decomposition
    from personalens.studies.finetuning.shift import FinetuningShift
    from personalens.studies.layer_sweep import LayerSweepResult
    from personalens.studies.monitoring import TokenTrace
    from personalens.studies.monitoring_experiment import MonitoringResult
    from personalens.studies.personality.ocean import AdditiveTestResult, ScalarSweepResult
    from personalens.studies.screening import ScreeningResult
    from personalens.studies.steering_sweep import SteeringSweepResult

__all__ = [
    "plot_additive_test",
    "plot_scalar_sweep",
    "plot_cosine_by_layer",
    "plot_cosine_matrix",
    "plot_layer_separation",
    "plot_layer_sweep",
    "plot_monitoring_r_by_layer",
    "plot_monitoring_scatter",
    "plot_feature_steering",
    "plot_finetuning_shift",
    "plot_shift_by_layer",
    "plot_sae_cosines",
    "plot_screening_histogram",
    "plot_steering_heatmap",
    "plot_steering_sweep",
    "plot_token_trace",
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


# ----------------------------------------------------------------------------- layer sweep


def _sweep_items(
    results: LayerSweepResult | Sequence[LayerSweepResult] | Mapping[str, LayerSweepResult],
) -> list[tuple[str, LayerSweepResult]]:
    """``(label, result)`` pairs; list labels are the traits (plus model/number when repeated)."""
    from personalens.studies.layer_sweep import LayerSweepResult

    if isinstance(results, LayerSweepResult):
        return [(results.trait or "sweep", results)]
    if isinstance(results, Mapping):
        return [(str(k), v) for k, v in results.items()]
    items = list(results)
    labels = [r.trait or "sweep" for r in items]
    if len(set(labels)) < len(labels):
        labels = [f"{r.trait} ({r.model})" for r in items]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return list(zip(labels, items))


def _rgba(color: str, alpha: float) -> str:
    import plotly.colors

    r, g, b = plotly.colors.hex_to_rgb(color)
    return f"rgba({r}, {g}, {b}, {alpha})"


def plot_layer_sweep(
    results: LayerSweepResult | Sequence[LayerSweepResult] | Mapping[str, LayerSweepResult],
    variant: str = "response_avg",
    *,
    title: str | None = None,
) -> go.Figure:
    """ROC-AUC of the projection onto ``v̂_L`` against layer ``L``, one colour per trait.

    ``results`` is one :class:`~personalens.studies.layer_sweep.LayerSweepResult`, a list of them
    (labelled by trait) or a ``{label: result}`` mapping, overlaid. Per trait, three traces in
    this order: the bootstrap CI as a shaded band (omitted when the sweep has no CIs), the AUC
    line, and a star on the best layer (also annotated ``L<best>: AUC``). A dashed line marks
    chance (0.5). The y axis spans [0.4, 1] when every interval stays above 0.4, else [0, 1].
    Hovering a point shows the layer, AUC, its CI and Cohen's d.
    """
    items = _sweep_items(results)
    if not items:
        raise ValueError("plot_layer_sweep needs at least one LayerSweepResult")
    fig = go.Figure()
    lowest = 1.0
    for i, (label, result) in enumerate(items):
        m = result[variant]
        color = _palette(i)
        layers = list(m.layers)
        has_ci = m.auc_ci is not None
        lo = [c[0] for c in m.auc_ci] if has_ci else [float("nan")] * len(layers)
        hi = [c[1] for c in m.auc_ci] if has_ci else [float("nan")] * len(layers)
        lowest = min([lowest, *(x for x in (lo if has_ci else m.auc) if x == x)])
        ci_text = f"{result.ci:.0%} CI" if has_ci else "no CI"
        if has_ci:
            fig.add_trace(
                go.Scatter(
                    x=layers + layers[::-1],
                    y=hi + lo[::-1],
                    fill="toself",
                    fillcolor=_rgba(color, 0.18),
                    line={"width": 0},
                    hoverinfo="skip",
                    showlegend=False,
                    legendgroup=label,
                    name=f"{label} {ci_text}",
                )
            )
        ci_hover = " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]" if has_ci else ""
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=list(m.auc),
                customdata=[[a, b, d] for a, b, d in zip(lo, hi, m.cohens_d)],
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                hovertemplate=f"<b>{label}</b><br>layer %{{x}}<br>AUC %{{y:.3f}}{ci_hover}"
                + (f" ({ci_text})" if has_ci else "")
                + "<br>Cohen's d %{customdata[2]:.2f}<extra></extra>",
            )
        )
        best = m.best_layer()
        j = layers.index(best)
        fig.add_trace(
            go.Scatter(
                x=[best],
                y=[m.auc[j]],
                mode="markers",
                marker={
                    "symbol": "star",
                    "size": 16,
                    "color": color,
                    "line": {"color": "black", "width": 1},
                },
                name=f"{label} best layer",
                legendgroup=label,
                showlegend=False,
                hovertemplate=f"<b>{label}</b>: best layer %{{x}}<br>AUC %{{y:.3f}}<extra></extra>",
            )
        )
        fig.add_annotation(
            x=best,
            y=m.auc[j],
            text=f"{label}: L{best}, AUC {m.auc[j]:.2f}" if len(items) > 1 else f"L{best}",
            showarrow=True,
            arrowhead=2,
            ax=0,
            ay=-28 - 18 * i,
            font={"color": color},
        )
    fig.add_hline(
        y=0.5,
        line={"color": "grey", "width": 1, "dash": "dash"},
        annotation_text="chance",
        annotation_position="bottom right",
    )
    bottom = 0.4 if lowest >= 0.4 else 0.0
    first = items[0][1]
    if title is None:
        traits = ", ".join(label for label, _ in items)
        title = f"Layer sweep: {traits} ({variant}, {first.model})"
        if first.evaluated_on and len(items) == 1:
            title += f"<br><sup>evaluated on {first.evaluated_on}</sup>"
    fig.update_layout(
        title={"text": title},
        xaxis={"title": {"text": "layer (blocks.L.hook_resid_post)"}, "dtick": 1},
        yaxis={"title": {"text": "ROC-AUC, pos vs neg projection"}, "range": [bottom, 1.03]},
        legend={"title": {"text": "trait"}},
        hovermode="closest",
        template="plotly_white",
    )
    return fig


def plot_layer_separation(
    result: LayerSweepResult, variant: str = "response_avg", *, title: str | None = None
) -> go.Figure:
    """Separation (mean pos − mean neg projection, with its bootstrap CI band; top) and
    Cohen's d (bottom) against layer, the best layer (by AUC) marked by a dotted line."""
    from plotly.subplots import make_subplots

    m = result[variant]
    layers = list(m.layers)
    color = _palette(0)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("separation (mean pos − mean neg projection)", "Cohen's d"),
    )
    if m.separation_ci is not None:
        lo = [c[0] for c in m.separation_ci]
        hi = [c[1] for c in m.separation_ci]
        fig.add_trace(
            go.Scatter(
                x=layers + layers[::-1],
                y=hi + lo[::-1],
                fill="toself",
                fillcolor=_rgba(color, 0.18),
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                name=f"{result.ci:.0%} CI",
            ),
            row=1,
            col=1,
        )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=list(m.separation),
            mode="lines+markers",
            name="separation",
            line={"color": color},
            hovertemplate="layer %{x}<br>separation %{y:.3g}<extra></extra>",
        ),
        row=1,
        col=1,
    )
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=list(m.cohens_d),
            mode="lines+markers",
            name="Cohen's d",
            line={"color": _palette(1)},
            hovertemplate="layer %{x}<br>Cohen's d %{y:.2f}<extra></extra>",
        ),
        row=2,
        col=1,
    )
    fig.add_vline(x=m.best_layer(), line={"color": "grey", "width": 1, "dash": "dot"})
    fig.update_xaxes(title_text="layer (blocks.L.hook_resid_post)", row=2, col=1)
    fig.update_layout(
        title={"text": title or f"Separation by layer: {result.trait} ({variant})"},
        template="plotly_white",
        height=620,
    )
    return fig


# ----------------------------------------------------------------------------- monitoring


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
    fig.update_layout(
        title={
            "text": title
            or f"Per-token projection on the {trace.trait} vector, layer {trace.layer} "
            f"(last prompt token {trace.last_prompt:.1f})"
        },
        xaxis={"title": {"text": "token position"}},
        yaxis={"title": {"text": "projection on unit vector"}, "range": [lo - pad, hi + pad]},
        bargap=0.05,
        legend={"title": {"text": "segment"}},
        template="plotly_white",
    )
    return fig


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
    fig.update_layout(
        title={
            "text": title
            or f"{result.trait}: last-prompt projection vs trait score (layer {c['layer']})<br>"
            f"<sup>r = {c['r']:.2f} [{lo:.2f}, {hi:.2f}] (n={c['n']}), condition means r = "
            f"{c['r_condition_means']:.2f}, within-condition mean r = "
            f"{c['r_within_mean']:.2f}</sup>"
        },
        xaxis={"title": {"text": "projection of the last prompt token on the unit vector"}},
        yaxis={"title": {"text": "judged trait score"}},
        legend={"title": {"text": "condition"}},
        template="plotly_white",
    )
    return fig


def plot_monitoring_r_by_layer(result: MonitoringResult, *, title: str | None = None) -> go.Figure:
    """Pearson r (all points, and condition means) of projection vs trait score at each layer,
    for all conditions and for each kind of condition."""
    fig = go.Figure()
    kinds = [None, *sorted({r["kind"] for r in result.records})]
    for i, kind in enumerate(kinds):
        df = result.r_by_layer(kind)
        label = kind or "all"
        color = _palette(i)
        fig.add_trace(
            go.Scatter(
                x=df["layer"],
                y=df["r"],
                mode="lines+markers",
                name=f"{label}: points",
                line={"color": color},
            )
        )
        fig.add_trace(
            go.Scatter(
                x=df["layer"],
                y=df["r_condition_means"],
                mode="lines",
                name=f"{label}: condition means",
                line={"color": color, "dash": "dot"},
            )
        )
    fig.add_vline(x=result.layer, line={"dash": "dash", "color": "#888"})
    fig.update_layout(
        title={"text": title or f"{result.trait}: monitoring correlation by layer"},
        xaxis={"title": {"text": "layer (blocks.L.hook_resid_post)"}},
        yaxis={"title": {"text": "Pearson r"}, "range": [-1, 1]},
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------------- screening (ΔP)


def plot_screening_histogram(
    results: Mapping[str, ScreeningResult] | Sequence[ScreeningResult] | ScreeningResult,
    *,
    bins: int = 40,
    title: str | None = None,
) -> go.Figure:
    """Overlaid histograms of ΔP (projection difference) of one or more screened datasets.

    ``results`` maps a dataset name to its :class:`~personalens.studies.screening.ScreeningResult`, or
    is a list of results (named by their ``.name``). All datasets share the same ``bins`` bin
    edges so the bars compare; a dashed vertical line marks each dataset's mean ΔP, and the
    legend gives the mean and the number of samples. NaN ΔP (empty model replies) are left out.
    """
    if isinstance(results, Mapping):
        named = list(results.items())
    elif isinstance(results, Sequence):
        named = [(r.name, r) for r in results]
    else:
        named = [(results.name, results)]
    if not named:
        raise ValueError("plot_screening_histogram needs at least one ScreeningResult")
    values = {n: [v for v in r.delta_p.tolist() if v == v] for n, r in named}
    everything = [v for vs in values.values() for v in vs]
    lo, hi = (min(everything), max(everything)) if everything else (0.0, 1.0)
    size = (hi - lo) / max(bins, 1) if hi > lo else 1.0
    fig = go.Figure()
    for i, (name, result) in enumerate(named):
        color = _palette(i)
        mean = result.mean
        fig.add_trace(
            go.Histogram(
                x=values[name],
                xbins={"start": lo, "end": hi + size * 1e-6, "size": size},
                name=f"{name} (mean ΔP {mean:+.3g}, n={len(result)})",
                marker={"color": color},
                opacity=0.55,
                hovertemplate=f"{name}<br>ΔP %{{x}}<br>%{{y}} samples<extra></extra>",
            )
        )
        if mean == mean:
            fig.add_vline(x=mean, line={"color": color, "dash": "dash", "width": 2})
    layers = sorted({r.layer for _, r in named})
    fig.update_layout(
        barmode="overlay",
        title={
            "text": title
            or f"Projection difference ΔP (layer {', '.join(map(str, layers))}): dataset "
            "response minus the model's own"
        },
        xaxis={"title": {"text": "ΔP = proj(dataset response) - proj(model response)"}},
        yaxis={"title": {"text": "samples"}},
        legend={"title": {"text": "dataset"}},
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------------- SAE decomposition


def plot_sae_cosines(decomposition: Decomposition, *, title: str | None = None) -> go.Figure:
    """Signed decoder cosines of a :class:`~personalens.sae.decompose.Decomposition`'s top features.

    One row of bars per layer: the most aligned features (red, best first), then the most
    anti-aligned (blue). Bars are labelled ``f<id>``; hovering shows the cosine, the projection
    and, when the decomposition has them, the attributions.
    """
    from plotly.subplots import make_subplots

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
    fig.update_layout(
        title={
            "text": title
            or f"SAE features of {decomposition.trait}: signed cosine with the decoder directions"
        },
        barmode="relative",
        height=max(380, 300 * len(layers)),
        template="plotly_white",
    )
    return fig


def plot_feature_steering(
    result: FeatureSteeringResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait-score change vs coefficient 0 (top, ± s.e.m.) and mean coherence (bottom) against
    the steering coefficient, one line per feature of a
    :class:`~personalens.sae.causal.FeatureSteeringResult` (and the persona vector if it was run)."""
    from plotly.subplots import make_subplots

    table = result.to_frame(coherence_threshold=coherence_threshold)
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        row_heights=[0.62, 0.38],
        subplot_titles=("trait score change vs coeff 0", "judged coherence"),
    )
    for i, label in enumerate(dict.fromkeys(table.label)):
        rows = table[table.label == label].sort_values("coeff")
        color = "black" if label == "persona vector" else _palette(i)
        fig.add_trace(
            go.Scatter(
                x=rows.coeff,
                y=rows.trait_change,
                error_y={"type": "data", "array": rows.trait_sem.fillna(0.0), "visible": True},
                mode="lines+markers",
                name=label,
                legendgroup=label,
                line={"color": color},
                hovertemplate=f"{label}<br>coeff %{{x}}<br>trait change %{{y:+.1f}}<extra></extra>",
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=rows.coeff,
                y=rows.coherence,
                mode="lines+markers",
                name=label,
                legendgroup=label,
                showlegend=False,
                line={"color": color, "dash": "dot"},
                hovertemplate=f"{label}<br>coeff %{{x}}<br>coherence %{{y:.1f}}<extra></extra>",
            ),
            row=2,
            col=1,
        )
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1}, row=1, col=1)
    fig.add_hline(
        y=coherence_threshold, line={"color": "grey", "dash": "dash", "width": 1}, row=2, col=1
    )
    fig.update_yaxes(title_text="Δ trait (0-100 scale)", row=1, col=1)
    fig.update_yaxes(range=[0, 100], title_text="coherence", row=2, col=1)
    fig.update_xaxes(title_text=f"steering coefficient ({result.coeff_scale})", row=2, col=1)
    fig.update_layout(
        title=title
        or f"Steering along SAE decoder directions at layer {result.layer}: {result.trait}",
        template="plotly_white",
        height=620,
    )
    return fig


# ----------------------------------------------------------------------------- finetuning shift


def _shift_items(
    results: Mapping[str, FinetuningShift] | Sequence[FinetuningShift],
) -> list[tuple[str, FinetuningShift]]:
    named = (
        list(results.items()) if isinstance(results, Mapping) else [(r.name, r) for r in results]
    )
    if not named:
        raise ValueError("give at least one FinetuningShift")
    return named


def plot_finetuning_shift(
    results: Mapping[str, FinetuningShift] | Sequence[FinetuningShift],
    *,
    layer: int | None = None,
    variant: str = "response_avg",
    groups: Mapping[str, str] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Finetuning shift (x) vs judged trait-score change (y), one point per finetuned model.

    ``results`` maps a name to a :class:`~personalens.studies.finetuning.shift.FinetuningShift` (or is a list,
    named by ``.name``); ``layer`` defaults to the first result's best layer; ``groups`` maps a
    name to a legend group (one colour each). The title gives Pearson r over all points.
    """
    from personalens.stats import pearson_r

    named = _shift_items(results)
    if layer is None:
        layer = named[0][1].best_layer
        if layer is None:
            raise ValueError("give layer=L: the results record no best layer")
    xs = [r.shift(layer, variant) for _, r in named]
    ys = [r.trait_change for _, r in named]
    if all(y != y for y in ys):
        raise ValueError("no trait scores: run finetuning_shift with judge= and trait=")
    label = {name: (groups or {}).get(name, "finetuned models") for name, _ in named}
    fig = go.Figure()
    for i, group in enumerate(dict.fromkeys(label.values())):
        idx = [j for j, (name, _) in enumerate(named) if label[name] == group]
        fig.add_trace(
            go.Scatter(
                x=[xs[j] for j in idx],
                y=[ys[j] for j in idx],
                mode="markers+text",
                text=[named[j][0] for j in idx],
                textposition="top center",
                name=group,
                marker={"color": _palette(i), "size": 11},
                hovertemplate="%{text}<br>shift %{x:.3g}<br>trait change %{y:+.1f}<extra></extra>",
            )
        )
    r = pearson_r(xs, ys)
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1})
    fig.add_vline(x=0.0, line={"color": "grey", "width": 1})
    fig.update_layout(
        title={
            "text": title
            or f"Finetuning shift vs trait change (layer {layer}, {variant})<br>"
            f"<sup>Pearson r = {r:.2f} over {len(named)} finetuned models</sup>"
        },
        xaxis={"title": {"text": "shift along the unit persona vector (finetuned − base)"}},
        yaxis={"title": {"text": "trait score change (finetuned − base)"}},
        legend={"title": {"text": "group"}},
        template="plotly_white",
    )
    return fig


def plot_shift_by_layer(
    results: Mapping[str, FinetuningShift] | Sequence[FinetuningShift],
    *,
    variant: str = "response_avg",
    title: str | None = None,
) -> go.Figure:
    """The finetuning shift (± s.e.m. over prompts) against the layer, one line per model."""
    fig = go.Figure()
    named = _shift_items(results)
    for i, (name, res) in enumerate(named):
        df = res.to_frame()
        fig.add_trace(
            go.Scatter(
                x=df["layer"],
                y=df[f"shift_{variant}"],
                error_y={
                    "type": "data",
                    "array": df[f"sem_{variant}"].fillna(0.0),
                    "visible": True,
                },
                mode="lines+markers",
                name=name,
                line={"color": _palette(i)},
            )
        )
    best = named[0][1].best_layer
    if best is not None:
        fig.add_vline(x=best, line={"dash": "dash", "color": "#888"})
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1})
    fig.update_layout(
        title={"text": title or f"Finetuning shift along the persona vector by layer ({variant})"},
        xaxis={"title": {"text": "layer (blocks.L.hook_resid_post)"}},
        yaxis={"title": {"text": "shift (finetuned − base) on the unit vector"}},
        template="plotly_white",
    )
    return fig


# ----------------------------------------------------------------------------- Big Five control


def plot_scalar_sweep(
    result: ScalarSweepResult, *, value: str = "delta", title: str | None = None
) -> go.Figure:
    """Questionnaire score against the steering coefficient, one line per dimension.

    ``value="delta"`` (default) plots the change from coefficient 0 with its paired s.e.m.;
    ``"score"`` the score itself with its s.e.m. over items. Markers are the measurements, the
    line through them each dimension's least-squares fit (slope and R² in the legend). The
    target dimension of the trait (``result.target``) is drawn thick and opaque, the others thin.
    """
    from personalens.studies.personality.ocean import fit_line

    if value not in ("delta", "score"):
        raise ValueError(f"value must be 'delta' or 'score', got {value!r}")
    df = result.to_frame()
    err = "delta_sem" if value == "delta" else "sem"
    fig = go.Figure()
    xs = sorted(result.coeffs)
    for i, dim in enumerate(result.dimensions):
        rows = df[df.dimension == dim].sort_values("coeff")
        slope, intercept, r2 = fit_line(rows.coeff.tolist(), rows[value].tolist())
        target = dim == result.target
        color = _palette(i)
        group = f"{dim}{' (target)' if target else ''}"
        fig.add_trace(
            go.Scatter(
                x=rows.coeff,
                y=rows[value],
                error_y={"type": "data", "array": rows[err].fillna(0.0), "visible": True},
                mode="markers",
                name=f"{group}: slope {slope:+.3g}, R² {r2:.2f}",
                legendgroup=dim,
                marker={"color": color, "size": 10 if target else 7},
                opacity=1.0 if target else 0.6,
                hovertemplate=f"{dim}<br>coeff %{{x}}<br>{value} %{{y:+.3f}}<extra></extra>",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=xs,
                y=[slope * x + intercept for x in xs],
                mode="lines",
                name=f"{dim} fit",
                legendgroup=dim,
                showlegend=False,
                line={"color": color, "width": 4 if target else 1.5},
                opacity=1.0 if target else 0.6,
                hoverinfo="skip",
            )
        )
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1})
    what = "change from coeff 0" if value == "delta" else "score"
    layers = result.settings.get("layers")
    where = f"layer {layers[0]}" if isinstance(layers, list) and len(layers) == 1 else "layers"
    fig.update_layout(
        title={
            "text": title
            or f"Steering along {result.trait}: questionnaire {what}<br>"
            f"<sup>{result.method} ({result.units}); {where}, coeff_scale "
            f"{result.settings.get('coeff_scale')}; target dimension: {result.target}</sup>"
        },
        xaxis={"title": {"text": f"steering coefficient ({result.settings.get('coeff_scale')})"}},
        yaxis={"title": {"text": f"{what} ({result.units})"}},
        legend={"title": {"text": "dimension"}},
        template="plotly_white",
    )
    return fig


def plot_additive_test(
    results: AdditiveTestResult | Sequence[AdditiveTestResult],
    *,
    title: str | None = None,
) -> go.Figure:
    """Observed (y, ± paired s.e.m.) vs predicted (x) score change of ``a + b`` and ``a - b``.

    The prediction is ``Δ(a) ± Δ(b)`` from steering along each vector alone; one point per
    dimension (labelled), one colour per combination (several results: one colour each), and
    the dashed identity line where effects add exactly.
    """
    from personalens.studies.personality.ocean import AdditiveTestResult

    items = [results] if isinstance(results, AdditiveTestResult) else list(results)
    if not items:
        raise ValueError("give at least one AdditiveTestResult")
    fig = go.Figure()
    lo, hi = 0.0, 0.0
    k = 0
    for res in items:
        df = res.to_frame()
        for cond in ("a+b", "a-b"):
            rows = df[df.condition == cond]
            label = res.label(cond)
            lo = min(lo, float(rows.predicted.min()), float(rows.observed.min()))
            hi = max(hi, float(rows.predicted.max()), float(rows.observed.max()))
            fig.add_trace(
                go.Scatter(
                    x=rows.predicted,
                    y=rows.observed,
                    error_y={"type": "data", "array": rows["sem"].fillna(0.0), "visible": True},
                    mode="markers+text",
                    text=rows.dimension,
                    textposition="top center",
                    name=label,
                    marker={"color": _palette(k), "size": 10},
                    hovertemplate=f"{label}<br>%{{text}}<br>predicted %{{x:+.3f}}<br>"
                    "observed %{y:+.3f}<extra></extra>",
                )
            )
            k += 1
    pad = 0.05 * (hi - lo or 1.0)
    fig.add_trace(
        go.Scatter(
            x=[lo - pad, hi + pad],
            y=[lo - pad, hi + pad],
            mode="lines",
            name="observed = predicted",
            line={"color": "grey", "dash": "dash", "width": 1},
            hoverinfo="skip",
        )
    )
    fig.add_hline(y=0.0, line={"color": "lightgrey", "width": 1})
    fig.add_vline(x=0.0, line={"color": "lightgrey", "width": 1})
    first = items[0]
    fig.update_layout(
        title={
            "text": title
            or "Adding and subtracting trait vectors: observed vs predicted change<br>"
            f"<sup>predicted = Δ(a) ± Δ(b); coeff {first.coeff:g} "
            f"({first.settings.get('coeff_scale')}); {first.method} ({first.units})</sup>"
        },
        xaxis={"title": {"text": f"predicted change ({first.units})"}},
        yaxis={"title": {"text": f"observed change ({first.units})"}},
        legend={"title": {"text": "combination"}},
        template="plotly_white",
    )
    return fig

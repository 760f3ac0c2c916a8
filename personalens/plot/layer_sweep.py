"""Figures of a layer sweep (:class:`~personalens.studies.layer_sweep.LayerSweepResult`):
held-out AUC by layer for one or more traits, and separation / Cohen's d by layer.

A sweep of an extraction run shows two curves per trait: dashed, the replies read with their
system prompt in context (confounded: the model's state can tell the two instructions apart
whatever the reply says, an upper bound); solid, the replies read with no system prompt (does
the reply's text carry the trait the vector reads). The star marks the solid curve's best layer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import plotly.graph_objects as go

from personalens.plot.style import (
    LAYER_AXIS_TITLE,
    _ci_band,
    _ci_bounds,
    _finish,
    _palette,
    _two_panels,
)
from personalens.studies.layer_sweep_result import (
    CONTAMINATED_LABEL,
    NEUTRAL_LABEL,
    LayerMetrics,
    LayerSweepResult,
)

__all__ = ["plot_layer_separation", "plot_layer_sweep"]


def _sweep_items(
    results: LayerSweepResult | Sequence[LayerSweepResult] | Mapping[str, LayerSweepResult],
) -> list[tuple[str, LayerSweepResult]]:
    """``(label, result)`` pairs; list labels are the traits (plus model/number when repeated)."""
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

    A sweep of an extraction run has two readings of its replies: the one with the system
    prompt in context is drawn dashed ("<trait>: with the system prompt in context
    (confounded)": band and line), then the one without it solid ("<trait>: reply only, no
    system prompt": band, line and the star on its best layer). A run without the latter
    (made before it existed) shows only the dashed curve, its star, and the sweep's ``note``
    under the title.
    """
    items = _sweep_items(results)
    if not items:
        raise ValueError("plot_layer_sweep needs at least one LayerSweepResult")
    fig = go.Figure()
    lowest = 1.0
    for i, (label, result) in enumerate(items):
        lows = _add_auc_traces(fig, i, label, result, variant, several=len(items) > 1)
        lowest = min([lowest, *lows])
    fig.add_hline(
        y=0.5,
        line={"color": "grey", "width": 1, "dash": "dash"},
        annotation_text="chance",
        annotation_position="bottom right",
    )
    bottom = 0.4 if lowest >= 0.4 else 0.0
    if title is None:
        title = _sweep_title(items, variant)
    return _finish(
        fig,
        title,
        x=LAYER_AXIS_TITLE,
        y="ROC-AUC, pos vs neg projection",
        legend="trait",
        xaxis={"dtick": 1},
        yaxis={"range": [bottom, 1.03]},
        hovermode="closest",
    )


def _sweep_title(items: list[tuple[str, LayerSweepResult]], variant: str) -> str:
    """The default title of :func:`plot_layer_sweep`: the traits, the variant and the model,
    and for one sweep what it was evaluated on and its note."""
    first = items[0][1]
    traits = ", ".join(label for label, _ in items)
    title = f"Layer sweep: {traits} ({variant}, {first.model})"
    if first.evaluated_on and len(items) == 1:
        title += f"<br><sup>evaluated on {first.evaluated_on}</sup>"
    notes = [f"{label}: {r.note}" if len(items) > 1 else r.note for label, r in items if r.note]
    for note in notes:
        title += f"<br><sup>{note}</sup>"
    return title


def _add_auc_traces(
    fig: go.Figure, i: int, label: str, result: LayerSweepResult, variant: str, *, several: bool
) -> list[float]:
    """Add one trait's curves (colour ``i``) to ``fig``: CI band and AUC line of each reading
    (with the system prompt dashed, without it solid) and a star on the best layer of the
    one steering uses (without the system prompt where there is one).

    Returns the values the y range must show: the lower CI ends, or the AUCs without CIs.
    """
    color = _palette(i)
    curves: list[tuple[str, LayerMetrics, str | None]] = []
    if result.neutral is not None:
        curves.append((f"{label}: {CONTAMINATED_LABEL}", result[variant], "dash"))
        curves.append((f"{label}: {NEUTRAL_LABEL}", result.neutral_metrics(variant), None))
    elif result.prompted:
        curves.append((f"{label}: {CONTAMINATED_LABEL}", result[variant], "dash"))
    else:
        curves.append((label, result[variant], None))
    shown: list[float] = []
    for name, m, dash in curves:
        shown += _add_curve(fig, name, label, m, color, dash, result.ci)
    m = curves[-1][1]
    best = m.best_layer()
    _mark_best_layer(fig, i, label, color, best, m.auc[list(m.layers).index(best)], several=several)
    return shown


def _add_curve(
    fig: go.Figure,
    name: str,
    group: str,
    m: LayerMetrics,
    color: str,
    dash: str | None,
    ci: float,
) -> list[float]:
    """One AUC curve: its CI band (when the sweep has CIs) and its line named ``name``."""
    layers = list(m.layers)
    has_ci = m.auc_ci is not None
    if has_ci:
        lo, hi = _ci_bounds(m.auc_ci)
    else:
        lo = hi = [float("nan")] * len(layers)
    ci_text = f"{ci:.0%} CI" if has_ci else "no CI"
    if has_ci:
        fig.add_trace(_ci_band(layers, lo, hi, color, f"{name} {ci_text}", legendgroup=group))
    ci_hover = " [%{customdata[0]:.3f}, %{customdata[1]:.3f}]" if has_ci else ""
    line = {"color": color} if dash is None else {"color": color, "dash": dash}
    fig.add_trace(
        go.Scatter(
            x=layers,
            y=list(m.auc),
            customdata=[[a, b, d] for a, b, d in zip(lo, hi, m.cohens_d)],
            mode="lines+markers",
            name=name,
            legendgroup=group,
            line=line,
            hovertemplate=f"<b>{name}</b><br>layer %{{x}}<br>AUC %{{y:.3f}}{ci_hover}"
            + (f" ({ci_text})" if has_ci else "")
            + "<br>Cohen's d %{customdata[2]:.2f}<extra></extra>",
        )
    )
    return [x for x in (lo if has_ci else m.auc) if x == x]


def _mark_best_layer(
    fig: go.Figure, i: int, label: str, color: str, best: int, auc: float, *, several: bool
) -> None:
    """A star on the best layer of one trait, with an annotation (trait and AUC if ``several``)."""
    fig.add_trace(
        go.Scatter(
            x=[best],
            y=[auc],
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
        y=auc,
        text=f"{label}: L{best}, AUC {auc:.2f}" if several else f"L{best}",
        showarrow=True,
        arrowhead=2,
        ax=0,
        ay=-28 - 18 * i,
        font={"color": color},
    )


def plot_layer_separation(
    result: LayerSweepResult, variant: str = "response_avg", *, title: str | None = None
) -> go.Figure:
    """Separation (mean pos − mean neg projection, with its bootstrap CI band; top) and
    Cohen's d (bottom) against layer, the best layer (by AUC) marked by a dotted line."""
    m = result[variant]
    layers = list(m.layers)
    color = _palette(0)
    fig = _two_panels(("separation (mean pos − mean neg projection)", "Cohen's d"))
    if m.separation_ci is not None:
        lo, hi = _ci_bounds(m.separation_ci)
        fig.add_trace(_ci_band(layers, lo, hi, color, f"{result.ci:.0%} CI"), row=1, col=1)
    panels = (
        (m.separation, "separation", color, ".3g"),
        (m.cohens_d, "Cohen's d", _palette(1), ".2f"),
    )
    for row, (values, name, line_color, fmt) in enumerate(panels, start=1):
        fig.add_trace(
            go.Scatter(
                x=layers,
                y=list(values),
                mode="lines+markers",
                name=name,
                line={"color": line_color},
                hovertemplate=f"layer %{{x}}<br>{name} %{{y:{fmt}}}<extra></extra>",
            ),
            row=row,
            col=1,
        )
    fig.add_vline(x=m.best_layer(), line={"color": "grey", "width": 1, "dash": "dot"})
    fig.update_xaxes(title_text=LAYER_AXIS_TITLE, row=2, col=1)
    return _finish(fig, title or f"Separation by layer: {result.trait} ({variant})", height=620)

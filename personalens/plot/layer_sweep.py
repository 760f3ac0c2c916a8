"""Figures of a layer sweep (:class:`~personalens.studies.layer_sweep.LayerSweepResult`):
held-out AUC by layer for one or more traits, and separation / Cohen's d by layer.

A sweep of an extraction run shows two curves per trait: dashed, the replies read with their
system prompt in context (confounded: the model's state can tell the two instructions apart
whatever the reply says, an upper bound); solid, the replies read with no system prompt (does
the reply's text carry the trait the vector reads). The star marks the solid curve's best layer.

A :class:`~personalens.vectors.vector.PersonaVector` (e.g. ``pl.shipped_vector("evil")``) is
drawn from the sweep its extraction recorded
(:meth:`~personalens.studies.layer_sweep_result.LayerSweepResult.from_vector`): no generation.
"""

from __future__ import annotations

import math
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
from personalens.vectors.vector import PersonaVector

__all__ = ["plot_layer_separation", "plot_layer_sweep"]


Sweeps = (
    LayerSweepResult
    | PersonaVector
    | Sequence[LayerSweepResult | PersonaVector]
    | Mapping[str, LayerSweepResult | PersonaVector]
)


def _as_sweep(item: LayerSweepResult | PersonaVector) -> LayerSweepResult:
    """A sweep, or the one a vector recorded at extraction (an error when it recorded none)."""
    return LayerSweepResult.from_vector(item) if isinstance(item, PersonaVector) else item


def _sweep_items(results: Sweeps) -> list[tuple[str, LayerSweepResult]]:
    """``(label, result)`` pairs; list labels are the traits (plus model/number when repeated);
    vectors become the sweeps they recorded."""
    if isinstance(results, (LayerSweepResult, PersonaVector)):
        result = _as_sweep(results)
        return [(result.trait or "sweep", result)]
    if isinstance(results, Mapping):
        return [(str(k), _as_sweep(v)) for k, v in results.items()]
    items = [_as_sweep(r) for r in results]
    labels = [r.trait or "sweep" for r in items]
    if len(set(labels)) < len(labels):
        labels = [f"{r.trait} ({r.model})" for r in items]
    if len(set(labels)) < len(labels):
        labels = [f"{label} #{i + 1}" for i, label in enumerate(labels)]
    return list(zip(labels, items))


def plot_layer_sweep(
    results: Sweeps,
    variant: str | None = None,
    *,
    title: str | None = None,
) -> go.Figure:
    """ROC-AUC of the projection onto ``v̂_L`` against layer ``L``, one colour per trait.

    ``results`` is one :class:`~personalens.studies.layer_sweep.LayerSweepResult`, a list of them
    (labelled by trait) or a ``{label: result}`` mapping, overlaid. A
    :class:`~personalens.vectors.vector.PersonaVector` in their place (``pl.shipped_vector("evil")``)
    stands for the sweep its extraction recorded in its metadata
    (:meth:`~personalens.studies.layer_sweep_result.LayerSweepResult.from_vector`: the recorded
    curves, with their CIs and n where recorded; no generation); a vector that recorded none is
    a :class:`~personalens.errors.PersonaLensError`. ``variant`` defaults to ``"response_avg"``
    when every sweep has it, else the first sweep's first variant. Per trait, three traces in
    this order: the bootstrap CI as a shaded band (omitted when the sweep has no CIs), the AUC
    line, and a star on the best layer (also annotated ``L<best>: AUC``). The first band of each
    trait has a legend entry ``"<trait> 95% CI"`` (the trait's legend items toggle together).
    A dashed line marks chance (AUC 0.5). The x axis spans exactly the swept layers; the y axis
    runs from 0.4, or just under the lowest interval end when one dips below 0.4, to 1.
    Hovering a point shows the layer, AUC, its CI and Cohen's d. The default title names the
    traits, the model and the variant; its subtitle says how many pos/neg samples were read
    and which, what the dashed and solid curves are, and the CI level and bootstrap count.

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
    if variant is None:
        has_avg = all("response_avg" in r.variants for _, r in items)
        variant = "response_avg" if has_avg else items[0][1].variants[0]
    fig = go.Figure()
    lowest = 1.0
    for i, (label, result) in enumerate(items):
        lows = _add_auc_traces(fig, i, label, result, variant, several=len(items) > 1)
        lowest = min([lowest, *lows])
    fig.add_hline(
        y=0.5,
        line={"color": "grey", "width": 1, "dash": "dash"},
        annotation_text="chance: AUC 0.5",
        annotation_position="bottom right",
    )
    if title is None:
        title = _sweep_title(items, variant)
    layers = sorted({layer for _, r in items for layer in r[variant].layers})
    # one trait: its 2-3 long legend names under the plot, so the curves keep the full width;
    # several: one block per trait on the right
    below = {"orientation": "h", "x": 0.0, "y": -0.2, "yanchor": "top", "traceorder": "normal"}
    fig.update_layout(
        legend=below if len(items) == 1 else {"traceorder": "grouped", "font": {"size": 11}}
    )
    return _finish(
        fig,
        title,
        x=LAYER_AXIS_TITLE,
        y="ROC-AUC, pos vs neg projection",
        xaxis=_layer_axis(layers),
        yaxis={"range": [_auc_bottom(lowest), 1.02]},
        hovermode="closest",
        margin={"t": 140},
    )


def _layer_axis(layers: list[int]) -> dict[str, object]:
    """An x axis over exactly ``layers`` (half a layer of room for the end markers, no tick
    outside them), every layer ticked up to 16 of them, else every 2nd, 3rd, ..."""
    step = max(1, math.ceil(len(layers) / 16))
    return {
        "range": [layers[0] - 0.5, layers[-1] + 0.5],
        "tickmode": "array",
        "tickvals": layers[::step],
        "tickangle": 0,
        "showgrid": False,
    }


def _auc_bottom(lowest: float) -> float:
    """The bottom of the AUC axis: 0.4, or a bit under ``lowest`` (rounded down to 0.05) when
    an interval dips below 0.4, never under 0."""
    if lowest >= 0.4:
        return 0.4
    return max(0.0, math.floor((lowest - 0.01) * 20) / 20)


def _sweep_title(items: list[tuple[str, LayerSweepResult]], variant: str) -> str:
    """The default title of :func:`plot_layer_sweep`: the traits, the model(s) and the variant,
    then one subtitle line on what was measured (pos/neg counts and which samples, the two
    readings, the CI) and one per sweep note."""
    traits = ", ".join(label for label, _ in items)
    models = ", ".join(dict.fromkeys(r.model for _, r in items))
    title = f"Held-out ROC-AUC by layer: {traits} · {models} · {variant}"
    lines = _measured(items, variant)
    lines += [f"{label}: {r.note}" if len(items) > 1 else r.note for label, r in items if r.note]
    return title + "".join(f"<br><sup>{line}</sup>" for line in lines if line)


def _measured(items: list[tuple[str, LayerSweepResult]], variant: str) -> list[str]:
    """Two lines: ``n = 100 pos + 100 neg, all held-out replies · shaded: 95% CI, 200
    bootstrap resamples`` and what the dashed and solid curves are (when there are two)."""
    parts = []
    counts = {(r[variant].n_pos, r[variant].n_neg, r.evaluated_on) for _, r in items}
    if len(counts) == 1:
        ((n_pos, n_neg, where),) = counts
        n_text = "n not recorded" if n_pos is None else f"n = {n_pos} pos + {n_neg} neg"
        parts.append(n_text + (f", {where}" if where else ""))
    else:
        parts.append(
            "n pos + neg: "
            + ", ".join(
                f"{label} {r[variant].n_pos} + {r[variant].n_neg}"
                if r[variant].n_pos is not None
                else f"{label} not recorded"
                for label, r in items
            )
        )
    readings = []
    if any(r.prompted for _, r in items):
        readings.append("dashed: replies read with their system prompt in context, confounded")
    if any(r.neutral is not None for _, r in items):
        readings.append("solid: reply only, no system prompt")
    with_ci = [r for _, r in items if r[variant].auc_ci is not None]
    boot = {(r.ci, r.n_boot) for r in with_ci}
    if len(boot) == 1:
        ((ci, n_boot),) = boot
        parts.append(f"shaded: {ci:.0%} CI, {n_boot} bootstrap resamples")
    elif boot:
        parts.append("shaded: bootstrap CIs")
    return [" · ".join(parts), " · ".join(readings)]


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
    for j, (name, m, dash) in enumerate(curves):
        shown += _add_curve(
            fig, name, label, m, color, dash, result.ci, rank=10 * i + j, band=j == 0
        )
    m = curves[-1][1]
    best = m.best_layer()
    auc = m.auc[list(m.layers).index(best)]
    _mark_best_layer(fig, i, label, color, best, auc, several=several, span=m.layers)
    return shown


def _add_curve(
    fig: go.Figure,
    name: str,
    group: str,
    m: LayerMetrics,
    color: str,
    dash: str | None,
    ci: float,
    *,
    rank: int,
    band: bool,
) -> list[float]:
    """One AUC curve: its CI band (when the sweep has CIs) and its line named ``name``.

    With ``band``, the CI band has a legend entry ``"<group> 95% CI"``, listed after the
    group's lines (``rank`` orders the legend)."""
    layers = list(m.layers)
    has_ci = m.auc_ci is not None
    if has_ci:
        lo, hi = _ci_bounds(m.auc_ci)
    else:
        lo = hi = [float("nan")] * len(layers)
    ci_text = f"{ci:.0%} CI" if has_ci else "no CI"
    if has_ci:
        shaded = _ci_band(layers, lo, hi, color, f"{group} {ci_text}", legendgroup=group)
        shaded.update(showlegend=band, legendrank=1000 + rank + 5)
        fig.add_trace(shaded)
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
            legendrank=1000 + rank,
            line=line,
            hovertemplate=f"<b>{name}</b><br>layer %{{x}}<br>AUC %{{y:.3f}}{ci_hover}"
            + (f" ({ci_text})" if has_ci else "")
            + ("<br>Cohen's d %{customdata[2]:.2f}" if _any_number(m.cohens_d) else "")
            + "<extra></extra>",
        )
    )
    return [x for x in (lo if has_ci else m.auc) if x == x]


def _mark_best_layer(
    fig: go.Figure,
    i: int,
    label: str,
    color: str,
    best: int,
    auc: float,
    *,
    several: bool,
    span: Sequence[int],
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
        bgcolor="rgba(255, 255, 255, 0.75)",
        # near an end of the axis the text runs inwards, not into the margin or the legend
        xanchor=_anchor(best, span),
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


def _any_number(values: Sequence[float]) -> bool:
    """Whether any value is a number (a sweep read from a vector has no Cohen's d)."""
    return any(v == v for v in values)


def _anchor(layer: int, layers: Sequence[int]) -> str:
    """``"left"`` in the first quarter of ``layers``, ``"right"`` in the last, else centred."""
    lo, hi = min(layers), max(layers)
    if hi - lo < 4:
        return "center"
    where = (layer - lo) / (hi - lo)
    return "left" if where < 0.25 else "right" if where > 0.75 else "center"

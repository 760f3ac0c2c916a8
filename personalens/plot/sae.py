"""Figures of SAE decomposition: the top features of a persona vector
(:class:`~personalens.sae.decompose.Decomposition`) and steering along them
(:class:`~personalens.sae.causal.FeatureSteeringResult`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from personalens.plot.style import (
    _add_score_and_coherence,
    _finish,
    _finish_score_and_coherence,
    _score_and_coherence_panels,
)

if TYPE_CHECKING:
    from personalens.sae.causal import FeatureSteeringResult
    from personalens.sae.contexts import FeatureContexts
    from personalens.sae.decompose import Decomposition

__all__ = ["plot_feature_steering", "plot_sae_cosines", "random_max_cosine"]

_ALIGNED, _ANTI = "rgb(214,39,40)", "rgb(31,119,180)"
_BAND = "rgba(120,120,120,0.18)"
# vertical pixels between two panels: the rotated tick labels of the upper one and the title
# of the lower one (more when the ticks carry feature labels)
_GAP_PX, _GAP_LABELLED_PX = 120, 190
_PANEL_PX = 300
_MARGIN = {"t": 160, "b": 40}
_LEGEND_PX = 38  # the legend's row above the first panel's title


def random_max_cosine(d_model: int, n: int, q: float = 0.95) -> float:
    """The ``q`` quantile of ``max |cos|`` between a fixed unit vector and ``n`` independent
    uniformly random unit vectors in ``d_model`` dimensions.

    One random direction's ``cos²`` is Beta(1/2, (d-1)/2) distributed, so
    ``P(|cos| <= t) = F(t)`` with density ∝ ``(1 - t²)^((d-3)/2)`` on [0, 1], and the maximum of
    ``n`` is below ``t`` with probability ``F(t)^n``; the result solves ``F(t)^n = q``
    (numerically, to about 1e-4). ``n = 1`` is the per-feature quantile (≈ 1.96/√d for
    ``q = 0.95``); ``n = d_sae`` is what the best of a random dictionary's features reaches.
    """
    if d_model < 2 or n < 1 or not 0.0 < q < 1.0:
        raise ValueError(f"need d_model >= 2, n >= 1 and 0 < q < 1, got {d_model}, {n}, {q}")
    t = np.linspace(0.0, 1.0, 400_001)
    log_density = 0.5 * (d_model - 3) * np.log1p(-(np.minimum(t, 1 - 1e-15) ** 2))
    density = np.exp(log_density - log_density.max())
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2)])
    cdf /= cdf[-1]
    target = q ** (1.0 / n)
    return float(np.interp(target, cdf, t))


def plot_sae_cosines(
    decomposition: Decomposition,
    *,
    feature_labels: Any = None,
    d_model: int | None = None,
    baseline_q: float = 0.95,
    title: str | None = None,
) -> go.Figure:
    """Signed decoder cosines of a :class:`~personalens.sae.decompose.Decomposition`'s top features.

    One panel per layer (titled with its layer and SAE): the most aligned features (red, best
    first), then the most anti-aligned (blue). Bars are labelled ``f<id>``, followed by a
    label where ``feature_labels`` has one: ``{feature: label}`` (every layer),
    ``{layer: {feature: label}}``, or :class:`~personalens.sae.contexts.FeatureContexts`
    (one or several layers; the label is each feature's most frequent top-activating tokens).
    Hovering shows the layer, feature, cosine, projection and, when the decomposition has
    them, the attributions. Every panel has the same symmetric y range, fitted to the data
    (±1.15 × the largest |cos| or the baseline, at least ±0.1).

    The grey band is the random-direction baseline at each layer: the ``baseline_q`` quantile
    of the largest |cos| between the persona vector and ``d_sae`` random unit directions in
    ``d_model`` dimensions (:func:`random_max_cosine`), i.e. what the best feature of a random
    dictionary of that size would reach; a cosine inside it is no evidence of alignment.
    ``d_model`` defaults to the decomposition's ``settings["d_model"]``; without either the
    band is left out and the subtitle says so.
    """
    df = decomposition.to_frame()
    layers = list(decomposition.layers)
    labels = _feature_labels(feature_labels, layers)
    d_model = d_model if d_model is not None else _settings_d_model(decomposition)
    n = max(len(layers), 1)
    gap = _GAP_LABELLED_PX if any(labels.values()) else _GAP_PX
    height = _MARGIN["t"] + _MARGIN["b"] + n * _PANEL_PX + (n - 1) * gap
    plot_px = height - _MARGIN["t"] - _MARGIN["b"]
    fig = make_subplots(
        rows=n,
        cols=1,
        vertical_spacing=gap / plot_px if n > 1 else 0.0,
        subplot_titles=[f"layer {L}" for L in layers],
    )
    extra = [c for c in ("attribution", "attribution_samples") if c in df.columns]
    baselines = {L: _baseline(decomposition, L, d_model, baseline_q) for L in layers}
    biggest = max([abs(c) for c in df.cosine] + [b for b in baselines.values() if b], default=0)
    limit = max(0.1, 1.15 * biggest)
    for i, layer in enumerate(layers, start=1):
        for direction, color, name in (
            ("aligned", _ALIGNED, "aligned: cos > 0"),
            ("anti", _ANTI, "anti-aligned: cos < 0"),
        ):
            rows = df[(df.layer == layer) & (df.direction == direction)]
            if rows.empty:
                continue
            hover = (
                f"<b>layer {layer}, feature %{{customdata[0]}}</b><br>cosine %{{y:.3f}}"
                "<br>projection %{customdata[1]:.3g}"
            )
            hover += "".join(f"<br>{c} %{{customdata[{j + 2}]:.3g}}" for j, c in enumerate(extra))
            fig.add_trace(
                go.Bar(
                    x=[_bar_label(f, labels.get(layer, {})) for f in rows.feature],
                    y=rows.cosine.tolist(),
                    marker={"color": color},
                    name=name,
                    legendgroup=direction,
                    showlegend=i == 1,
                    customdata=rows[["feature", "projection", *extra]].values.tolist(),
                    hovertemplate=hover + "<extra></extra>",
                ),
                row=i,
                col=1,
            )
        band = baselines[layer]
        if band is not None:
            _add_baseline(fig, i, band, decomposition, layer, d_model, baseline_q, first=i == 1)
        fig.update_yaxes(title_text="cosine", range=[-limit, limit], row=i, col=1)
        ticks = [x for t in fig.data if t.xaxis == ("x" if i == 1 else f"x{i}") for x in t.x]
        fig.update_xaxes(
            type="category",
            tickmode="array",  # every bar labelled: plotly skips crowded category ticks
            tickvals=ticks,
            ticktext=ticks,
            tickangle=-90,
            tickfont={"size": 10},
            row=i,
            col=1,
        )
    if title is None:
        title = f"SAE features of {decomposition.trait}: signed cosine with the decoder directions"
        title += f"<br><sup>{_cosine_subtitle(decomposition, d_model, baseline_q)}</sup>"
    fig.update_layout(  # one row above the first panel: the bars keep the full width
        legend={
            "orientation": "h",
            "x": 0.0,
            "xanchor": "left",
            "y": 1.0 + _LEGEND_PX / plot_px,
            "yanchor": "bottom",
        }
    )
    _finish(fig, title, barmode="relative", height=height, margin=_MARGIN)
    # the title (and its two subtitle lines) at the top, clear of the legend row
    fig.update_layout(title={"y": 1.0 - 30 / height, "yanchor": "top", "yref": "container"})
    return fig


def plot_feature_steering(
    result: FeatureSteeringResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait-score change vs coefficient 0 (top, ± s.e.m.) and mean coherence (bottom) against
    the steering coefficient, one line per feature of a
    :class:`~personalens.sae.causal.FeatureSteeringResult` (and the persona vector if it was run)."""
    table = result.to_frame(coherence_threshold=coherence_threshold)
    fig = _score_and_coherence_panels("trait score change vs coeff 0")
    for i, label in enumerate(dict.fromkeys(table.label)):
        rows = table[table.label == label].sort_values("coeff")
        _add_score_and_coherence(
            fig,
            rows,
            "trait_change",
            name=label,
            legendgroup=label,
            color="black" if label == "persona vector" else i,
            score_hover=f"{label}<br>coeff %{{x}}<br>trait change %{{y:+.1f}}<extra></extra>",
            coherence_hover=f"{label}<br>coeff %{{x}}<br>coherence %{{y:.1f}}<extra></extra>",
        )
    fig.add_hline(y=0.0, line={"color": "grey", "width": 1}, row=1, col=1)
    fig.update_yaxes(title_text="Δ trait (0-100 scale)", row=1, col=1)
    title = title or (
        f"Steering along SAE decoder directions at layer {result.layer}: {result.trait}"
    )
    return _finish_score_and_coherence(
        fig,
        title,
        coherence_threshold=coherence_threshold,
        x=f"steering coefficient ({result.coeff_scale})",
    )


def _settings_d_model(decomposition: Decomposition) -> int | None:
    """``settings["d_model"]`` of a decomposition (an int, or one per layer), else ``None``."""
    value = decomposition.settings.get("d_model")
    if isinstance(value, Mapping):
        value = next(iter(value.values()), None)
    return int(value) if value else None


def _d_sae(decomposition: Decomposition, layer: int) -> int | None:
    value = (decomposition.settings.get("d_sae") or {}).get(str(layer))
    if value is None and layer in decomposition.cosines:
        value = decomposition.cosines[layer].shape[-1]
    return int(value) if value else None


def _baseline(
    decomposition: Decomposition, layer: int, d_model: int | None, q: float
) -> float | None:
    """The random-direction band's half-width at ``layer`` (``None`` without ``d_model``)."""
    d_sae = _d_sae(decomposition, layer)
    if d_model is None or d_sae is None:
        return None
    return random_max_cosine(d_model, d_sae, q)


def _add_baseline(
    fig: go.Figure,
    row: int,
    band: float,
    decomposition: Decomposition,
    layer: int,
    d_model: int | None,
    q: float,
    *,
    first: bool,
) -> None:
    """The grey ±``band`` random-direction band behind panel ``row``, labelled on its right."""
    fig.add_hrect(
        y0=-band,
        y1=band,
        fillcolor=_BAND,
        line_width=0,
        layer="below",
        name=f"random directions: {q:.0%} of the max |cos|",
        legendgroup="baseline",
        showlegend=first,
        row=row,
        col=1,
    )
    fig.add_annotation(
        text=f"random: ±{band:.3f}",
        xref="x domain" if row == 1 else f"x{row} domain",
        yref="y" if row == 1 else f"y{row}",
        x=1.0,
        y=band,
        xanchor="right",
        yanchor="bottom",
        showarrow=False,
        font={"size": 10, "color": "rgb(90,90,90)"},
    )


def _cosine_subtitle(decomposition: Decomposition, d_model: int | None, q: float) -> str:
    """What the grey band is (or why it is missing), for the default title."""
    if d_model is None:
        return "no random-direction baseline: pass d_model= (the model's residual width)"
    sizes = sorted({d for L in decomposition.layers if (d := _d_sae(decomposition, L))})
    n_text = " / ".join(f"{d:,}" for d in sizes) or "?"
    one = random_max_cosine(d_model, 1, q)
    return (
        f"grey band: {q:.0%} quantile of the largest |cos| between the vector and {n_text} random "
        f"unit directions in {d_model} dimensions<br>"
        f"i.e. what the best feature of a random dictionary reaches; one random direction: "
        f"|cos| < {one:.3f} with {q:.0%} probability"
    )


def _bar_label(feature: int, labels: Mapping[int, str]) -> str:
    """``f<id>``, followed by the feature's label (shortened) when it has one."""
    label = labels.get(int(feature))
    if not label:
        return f"f{feature}"
    label = " ".join(str(label).split())
    if len(label) > 18:
        label = label[:17] + "…"
    return f"f{feature} {label}"


def _feature_labels(feature_labels: Any, layers: list[int]) -> dict[int, dict[int, str]]:
    """``{layer: {feature: label}}`` from the forms :func:`plot_sae_cosines` accepts."""
    if feature_labels is None:
        return {}
    contexts = [feature_labels] if hasattr(feature_labels, "examples") else None
    if contexts is None and not isinstance(feature_labels, Mapping):
        contexts = list(feature_labels)
    if contexts is not None:
        return {c.layer: _context_labels(c) for c in contexts if c.layer in layers}
    if feature_labels and all(isinstance(v, Mapping) for v in feature_labels.values()):
        return {int(L): {int(f): str(t) for f, t in m.items()} for L, m in feature_labels.items()}
    flat = {int(f): str(t) for f, t in feature_labels.items()}
    return {L: flat for L in layers}


def _context_labels(contexts: FeatureContexts, top: int = 3) -> dict[int, str]:
    """Each feature's most frequent tokens among its top-activating examples, quoted."""
    out: dict[int, str] = {}
    for f in contexts.features:
        tokens = Counter(
            str(e["token"]).strip() or repr(e["token"])
            for e in contexts.examples
            if e["feature"] == f
        )
        if tokens:
            out[int(f)] = " ".join(f"'{t}'" for t, _ in tokens.most_common(top))
    return out

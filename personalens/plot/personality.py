"""Figures of the Big Five control: questionnaire score against the steering coefficient
(:class:`~personalens.studies.personality.scalar_sweep.ScalarSweepResult`), and the additive test
of summed and subtracted vectors
(:class:`~personalens.studies.personality.additive_test.AdditiveTestResult`)."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from personalens.plot.style import _finish, _palette
from personalens.studies.personality.additive_test import AdditiveTestResult
from personalens.studies.personality.scalar_sweep import ScalarSweepResult, fit_line

__all__ = ["plot_additive_test", "plot_scalar_sweep"]


def plot_scalar_sweep(
    result: ScalarSweepResult, *, value: str = "delta", title: str | None = None
) -> go.Figure:
    """Questionnaire score against the steering coefficient, one line per dimension.

    ``value="delta"`` (default) plots the change from coefficient 0 with its paired s.e.m.;
    ``"score"`` the score itself with its s.e.m. over items. Markers are the measurements, the
    line through them each dimension's least-squares fit (slope and R² in the legend). The
    target dimension of the trait (``result.target``) is drawn thick and opaque, the others thin.
    """
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
    scale = result.settings.get("coeff_scale")
    title = title or (
        f"Steering along {result.trait}: questionnaire {what}<br>"
        f"<sup>{result.method} ({result.units}); {where}, coeff_scale "
        f"{scale}; target dimension: {result.target}</sup>"
    )
    return _finish(
        fig,
        title,
        x=f"steering coefficient ({scale})",
        y=f"{what} ({result.units})",
        legend="dimension",
    )


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
    title = title or (
        "Adding and subtracting trait vectors: observed vs predicted change<br>"
        f"<sup>predicted = Δ(a) ± Δ(b); coeff {first.coeff:g} "
        f"({first.settings.get('coeff_scale')}); {first.method} ({first.units})</sup>"
    )
    return _finish(
        fig,
        title,
        x=f"predicted change ({first.units})",
        y=f"observed change ({first.units})",
        legend="combination",
    )

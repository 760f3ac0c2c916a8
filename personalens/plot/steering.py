"""Figures of a steering sweep (:class:`~personalens.studies.steering_sweep.SteeringSweepResult`):
trait score and coherence against the coefficient, and a layer x coefficient heatmap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from personalens.plot.style import (
    _add_score_and_coherence,
    _finish,
    _finish_score_and_coherence,
    _score_and_coherence_panels,
)

if TYPE_CHECKING:
    import pandas as pd

    from personalens.studies.steering_sweep import SteeringSweepResult

__all__ = ["plot_steering_heatmap", "plot_steering_sweep"]


def plot_steering_sweep(
    result: SteeringSweepResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Trait score (top, ± s.e.m. over prompts) and coherence (bottom) vs coefficient per layer."""
    table = result.summary(coherence_threshold)
    fig = _score_and_coherence_panels(f"trait score ({result.settings.get('judge', 'judge')})")
    for i, layer in enumerate(result.layers):
        rows = table[table.layer == layer].sort_values("coeff")
        _add_score_and_coherence(
            fig,
            rows,
            "trait",
            name=f"layer {layer}",
            legendgroup=str(layer),
            color=i,
            score_hover="layer %{fullData.name}<br>coeff %{x}<br>trait %{y:.1f}<extra></extra>",
            coherence_hover="coeff %{x}<br>coherence %{y:.1f}<extra></extra>",
        )
    fig.update_yaxes(range=[0, 100], row=1, col=1, title_text="trait (0-100)")
    title = title or f"Steering sweep: {result.trait} ({result.settings.get('mode', 'add')})"
    return _finish_score_and_coherence(
        fig, title, coherence_threshold=coherence_threshold, x="steering coefficient"
    )


def plot_steering_heatmap(
    result: SteeringSweepResult, *, coherence_threshold: float = 50.0, title: str | None = None
) -> go.Figure:
    """Layer x coefficient heatmap of the mean trait score; cells show ``trait / coherence``
    and, on a second line, ``n`` (the replies the cell's means are over).

    Cells whose mean coherence is below ``coherence_threshold`` are marked with an asterisk:
    a high trait score there may just be broken text. Steered cells whose 95% CI of the trait
    score overlaps the unsteered cell's (``overlaps_baseline``) are marked with a tilde: at
    this n they are not shown to differ from the unsteered model. Hovering a cell shows its
    trait score with the CI, coherence and n. The title gives n when every cell has the same.
    """
    table = result.summary(coherence_threshold)
    coeffs = sorted(result.coeffs)
    layers = list(result.layers)
    z, text, hover = [], [], []
    for layer in layers:
        zr, tr, hr = [], [], []
        for c in coeffs:
            row = table[(table.layer == layer) & (table.coeff == c)]
            cell = _cell(row)
            zr.append(cell["trait"])
            flag = "*" if cell["coherence"] < coherence_threshold else ""
            flag += "~" if cell["overlaps"] else ""
            tr.append(f"{cell['trait']:.0f} / {cell['coherence']:.0f}{flag}<br>n={cell['n']}")
            hr.append(
                f"layer {layer}, coeff {c:g}<br>trait {cell['trait']:.1f} "
                f"[{cell['ci_low']:.1f}, {cell['ci_high']:.1f}] (95% CI)"
                + ("<br>CI overlaps the unsteered cell's" if cell["overlaps"] else "")
                + f"<br>coherence {cell['coherence']:.1f}<br>n = {cell['n']} replies"
            )
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
    if title is None:
        ns = sorted({int(n) for n in table.n})
        n_text = f"n = {ns[0]} replies per cell" if len(ns) == 1 else "n replies per cell"
        title = (
            f"{result.trait}: trait score / coherence · {n_text}<br><sup>* = coherence < "
            f"{coherence_threshold:g} · ~ = 95% CI of the trait score overlaps the unsteered "
            "cell's (not shown to differ)</sup>"
        )
    return _finish(fig, title, x="steering coefficient", y="layer")


def _cell(row: pd.DataFrame) -> dict[str, Any]:
    """One cell of the heatmap from its summary row (NaNs and n 0 when the cell is missing)."""
    if not len(row):
        nan = float("nan")
        return dict(trait=nan, coherence=nan, ci_low=nan, ci_high=nan, n=0, overlaps=False)
    r = row.iloc[0]
    return {
        "trait": float(r.trait),
        "coherence": float(r.coherence),
        "ci_low": float(r.ci_low),
        "ci_high": float(r.ci_high),
        "n": int(r.n),
        # None (no unsteered cell) or NaN: nothing to flag
        "overlaps": r.overlaps_baseline is not None and bool(r.overlaps_baseline == True),  # noqa: E712
    }

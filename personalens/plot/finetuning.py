"""Figures of the finetuning shift along a persona vector
(:class:`~personalens.studies.finetuning.shift.FinetuningShift`): shift vs trait change, and
shift by layer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from personalens.plot.style import LAYER_AXIS_TITLE, _finish, _palette
from personalens.stats import pearson_r

if TYPE_CHECKING:
    from personalens.studies.finetuning.shift import FinetuningShift

__all__ = ["plot_finetuning_shift", "plot_shift_by_layer"]


def _shift_items(
    results: Mapping[str, FinetuningShift] | Sequence[FinetuningShift],
) -> list[tuple[str, FinetuningShift]]:
    """``(name, shift)`` pairs: a mapping's items, or each result named by its ``.name``."""
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
    title = title or (
        f"Finetuning shift vs trait change (layer {layer}, {variant})<br>"
        f"<sup>Pearson r = {r:.2f} over {len(named)} finetuned models</sup>"
    )
    return _finish(
        fig,
        title,
        x="shift along the unit persona vector (finetuned − base)",
        y="trait score change (finetuned − base)",
        legend="group",
    )


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
    title = title or f"Finetuning shift along the persona vector by layer ({variant})"
    return _finish(fig, title, x=LAYER_AXIS_TITLE, y="shift (finetuned − base) on the unit vector")

"""Figure of dataset screening (:class:`~personalens.studies.screening.ScreeningResult`):
histograms of the projection difference ΔP."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import plotly.graph_objects as go

from personalens.plot.style import _finish, _palette

if TYPE_CHECKING:
    from personalens.studies.screening_result import ScreeningResult

__all__ = ["plot_screening_histogram"]


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
    title = title or (
        f"Projection difference ΔP (layer {', '.join(map(str, layers))}): dataset "
        "response minus the model's own"
    )
    return _finish(
        fig,
        title,
        x="ΔP = proj(dataset response) - proj(model response)",
        y="samples",
        legend="dataset",
        barmode="overlay",
    )

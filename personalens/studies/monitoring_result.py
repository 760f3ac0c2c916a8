"""The result of the monitoring experiment: projections, replies and scores per (condition,
question), and the correlations between last-prompt projection and judged trait score."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from personalens.errors import PersonaLensError
from personalens.results import Result, json_safe
from personalens.stats import pearson_ci, pearson_r

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["MonitoringResult"]


@dataclass(frozen=True)
class MonitoringResult(Result):
    """One record per (condition, question): projections at every measured layer, the reply,
    its judged trait and coherence scores. ``layer`` is the layer the headline numbers use."""

    trait: str
    layer: int
    layers: list[int]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def frame_records(self, layer: int | None = None) -> list[dict[str, Any]]:
        """One row per (condition, question); ``projection`` is at ``layer`` (default the
        headline layer)."""
        j = self._slot(layer)
        return [
            {k: v for k, v in r.items() if k != "projections"} | {"projection": r["projections"][j]}
            for r in self.records
        ]

    def to_frame(self, layer: int | None = None) -> pd.DataFrame:
        """:meth:`frame_records` as a DataFrame."""
        import pandas as pd

        return pd.DataFrame.from_records(self.frame_records(layer))

    def _slot(self, layer: int | None) -> int:
        layer = self.layer if layer is None else layer
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} was not measured (layers {self.layers})")
        return self.layers.index(layer)

    def _points(self, layer: int | None, kind: str | None) -> list[tuple[str, float, float]]:
        j = self._slot(layer)
        return [
            (r["condition"], r["projections"][j], r["trait"])
            for r in self.records
            if kind is None or r["kind"] == kind
        ]

    def correlations(self, layer: int | None = None, kind: str | None = None) -> dict[str, Any]:
        """Pearson r of projection vs trait score: over all points (with a 95% Fisher CI), over
        condition means, and within each condition (plus their mean). ``kind`` restricts to
        ``"system"`` or ``"many_shot"`` conditions."""
        pts = self._points(layer, kind)
        if not pts:
            raise PersonaLensError(f"no records of kind {kind!r}")
        xs = [p[1] for p in pts]
        ys = [p[2] for p in pts]
        n = sum(1 for x, y in zip(xs, ys) if not (math.isnan(x) or math.isnan(y)))
        r = pearson_r(xs, ys)
        conds: dict[str, list[tuple[float, float]]] = {}
        for c, x, y in pts:
            conds.setdefault(c, []).append((x, y))
        within = {c: pearson_r([x for x, _ in v], [y for _, y in v]) for c, v in conds.items()}
        means = {
            c: (_nanmean([x for x, _ in v]), _nanmean([y for _, y in v])) for c, v in conds.items()
        }
        finite = [v for v in within.values() if not math.isnan(v)]
        return {
            "layer": self.layer if layer is None else layer,
            "kind": kind or "all",
            "n": n,
            "r": r,
            "r_ci95": list(pearson_ci(r, n)),
            "n_conditions": len(conds),
            "r_condition_means": pearson_r(
                [m[0] for m in means.values()], [m[1] for m in means.values()]
            ),
            "r_within": within,
            "r_within_mean": sum(finite) / len(finite) if finite else math.nan,
        }

    def r_by_layer(self, kind: str | None = None) -> pd.DataFrame:
        """Overall and condition-mean Pearson r at every measured layer."""
        import pandas as pd

        rows = []
        for L in self.layers:
            c = self.correlations(L, kind)
            rows.append({"layer": L, "r": c["r"], "r_condition_means": c["r_condition_means"]})
        return pd.DataFrame(rows)

    def summary(self, layer: int | None = None) -> pd.DataFrame:
        """Per condition: mean projection, mean trait score (± s.e.m.), coherence, n."""
        df = self.to_frame(layer)
        g = df.groupby(["kind", "level", "condition"], sort=True)
        return g.agg(
            projection=("projection", "mean"),
            trait=("trait", "mean"),
            trait_sem=("trait", "sem"),
            coherence=("coherence", "mean"),
            n=("trait", "size"),
        ).reset_index()

    def to_dict(self) -> dict[str, Any]:
        """Identity, correlations (overall and per kind), r by layer, the per-condition summary
        and every record."""
        kinds = sorted({r["kind"] for r in self.records})
        return json_safe(
            {
                "trait": self.trait,
                "layer": self.layer,
                "layers": self.layers,
                "settings": self.settings,
                "correlations": {
                    "all" if k is None else k: self.correlations(kind=k) for k in [None, *kinds]
                },
                "r_by_layer": self.r_by_layer().to_dict(orient="records"),
                "conditions": self.summary().to_dict(orient="records"),
                "records": self.records,
            }
        )


def _nanmean(xs: Sequence[float]) -> float:
    v = [x for x in xs if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan

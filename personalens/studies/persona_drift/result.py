"""The result of a drift experiment: every turn's reply and projection, drift per kind, its CI.

``to_frame()`` has one row per (condition, conversation, turn) with columns ``kind``,
``conversation``, ``turn``, ``projection``, ``reply``, ``capped`` (then ``user`` and
``coherence``). The drift of a conversation is the least-squares slope of its projections over
turns (``"slope"``, per turn) or its last minus its first projection (``"last_minus_first"``);
the drift of a kind is the mean over its conversations with a 95% Student-t interval across
conversations (n - 1 degrees of freedom).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from personalens.errors import PersonaLensError
from personalens.results import Result

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["DriftResult", "conversation_drift", "mean_ci"]

FRAME_COLUMNS = ("kind", "conversation", "turn", "projection", "reply", "capped", "user")
MEASURES = ("slope", "last_minus_first")
# two-sided 95% Student-t quantiles for 1..30 degrees of freedom (then the normal 1.96)
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


def _finite(values: Sequence[float]) -> np.ndarray:
    return np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)


def mean_ci(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: the mean of the finite ``values`` and its 95% Student-t interval
    (NaN bounds with fewer than two values; all NaN with none)."""
    x = _finite(values)
    if x.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(x.mean())
    if x.size < 2:
        return mean, math.nan, math.nan
    t = _T975[x.size - 2] if x.size - 1 <= len(_T975) else 1.96
    half = t * float(x.std(ddof=1)) / math.sqrt(x.size)
    return mean, mean - half, mean + half


def conversation_drift(projections: Sequence[float], measure: str = "slope") -> float:
    """The drift of one conversation's per-turn projections (NaN turns are skipped)."""
    if measure not in MEASURES:
        raise PersonaLensError(f"unknown drift measure {measure!r}: use one of {MEASURES}")
    pts = [(t, p) for t, p in enumerate(projections) if p is not None and math.isfinite(p)]
    if len(pts) < 2:
        return math.nan
    if measure == "last_minus_first":
        return float(pts[-1][1] - pts[0][1])
    t, p = np.asarray(pts, dtype=float).T
    return float(np.polyfit(t, p, 1)[0])


@dataclass(frozen=True)
class DriftResult(Result):
    """Per-turn records of a drift run (see the module doc) and how it was run."""

    records: list[dict[str, Any]]
    layer: int
    axis: dict[str, Any] = field(default_factory=dict)
    capping: dict[str, Any] | None = None
    user: str = "scripted"
    judge: str | None = None
    capability: dict[str, Any] | None = None

    _frame_field: ClassVar[str | None] = "records"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DriftResult:
        """A result saved with :meth:`save` (a run's ``drift.json``)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def frame_records(self) -> list[dict[str, Any]]:
        rest = [k for r in self.records[:1] for k in r if k not in FRAME_COLUMNS]
        return [{k: r.get(k) for k in (*FRAME_COLUMNS, *rest)} for r in self.records]

    def _series(self) -> dict[tuple[str, bool, str], list[float]]:
        """``{(kind, capped, conversation): projections by turn}``."""
        out: dict[tuple[str, bool, str], dict[int, float]] = {}
        for r in self.records:
            key = (r["kind"], bool(r["capped"]), r["conversation"])
            proj = r["projection"]
            out.setdefault(key, {})[int(r["turn"])] = math.nan if proj is None else float(proj)
        return {k: [v[t] for t in sorted(v)] for k, v in out.items()}

    def drift(self, measure: str = "slope") -> pd.DataFrame:
        """One row per (kind, capped): ``n`` conversations, ``drift`` (mean) and its 95% CI."""
        import pandas as pd

        groups: dict[tuple[str, bool], list[float]] = {}
        for (kind, capped, _), series in self._series().items():
            groups.setdefault((kind, capped), []).append(conversation_drift(series, measure))
        rows = []
        for (kind, capped), values in sorted(groups.items()):
            mean, lo, hi = mean_ci(values)
            n = sum(math.isfinite(v) for v in values)
            rows.append(
                {"kind": kind, "capped": capped, "measure": measure, "n": n, "drift": mean,
                 "ci_lo": lo, "ci_hi": hi}
            )  # fmt: skip
        return pd.DataFrame(rows)

    def drift_removed(self, measure: str = "slope") -> pd.DataFrame:
        """Per kind: uncapped and capped drift, ``removed`` = uncapped - capped (the part of the
        drift capping took away, with the drift's sign) and the
        ``fraction_removed`` of the uncapped drift (needs a run with both conditions)."""
        table = self.drift(measure)
        if table.empty or set(table["capped"]) != {False, True}:
            raise PersonaLensError("drift_removed needs a run with both uncapped and capped turns")
        wide = table.pivot(index="kind", columns="capped", values="drift")
        wide.columns = ["uncapped", "capped"]
        wide["removed"] = wide["uncapped"] - wide["capped"]
        wide["fraction_removed"] = wide["removed"] / wide["uncapped"]
        return wide.reset_index()

    def drift_vs_control(
        self, control: str = "bounded_task", measure: str = "slope"
    ) -> pd.DataFrame:
        """Per (kind, capped): the drift minus the ``control`` kind's drift in the same condition,
        with a conservative 95% CI (Welch standard error, t with min(n) - 1 degrees of freedom).

        The projection of a fixed reply can move with the conversation's length alone; a bounded
        task's conversation of the same number of turns controls for that."""
        import pandas as pd

        per: dict[tuple[str, bool], list[float]] = {}
        for (kind, capped, _), series in self._series().items():
            per.setdefault((kind, capped), []).append(conversation_drift(series, measure))
        rows = []
        for (kind, capped), values in sorted(per.items()):
            base = per.get((control, capped))
            if base is None:
                raise PersonaLensError(f"no {control!r} conversations to compare drift with")
            a, b = _finite(values), _finite(base)
            diff = float(a.mean() - b.mean()) if a.size and b.size else math.nan
            half = math.nan
            if min(a.size, b.size) >= 2:
                se = math.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size)
                half = _T975[min(min(a.size, b.size) - 2, len(_T975) - 1)] * se
            rows.append({"kind": kind, "capped": capped, "control": control, "measure": measure,
                         "drift_minus_control": diff, "ci_lo": diff - half, "ci_hi": diff + half})  # fmt: skip
        return pd.DataFrame(rows)

    def trajectories(self) -> pd.DataFrame:
        """One row per (kind, capped, turn): ``mean`` projection over conversations, 95% CI."""
        import pandas as pd

        cells: dict[tuple[str, bool, int], list[float]] = {}
        for (kind, capped, _), series in self._series().items():
            for t, p in enumerate(series):
                cells.setdefault((kind, capped, t), []).append(p)
        rows = []
        for (kind, capped, turn), values in sorted(cells.items()):
            mean, lo, hi = mean_ci(values)
            rows.append(
                {"kind": kind, "capped": capped, "turn": turn, "mean": mean, "ci_lo": lo,
                 "ci_hi": hi}
            )  # fmt: skip
        return pd.DataFrame(rows)

    def coherence(self) -> pd.DataFrame:
        """Mean judge coherence (0-100) per (kind, capped), with its 95% CI over replies."""
        import pandas as pd

        cells: dict[tuple[str, bool], list[float]] = {}
        for r in self.records:
            c = r.get("coherence")
            cells.setdefault((r["kind"], bool(r["capped"])), []).append(
                math.nan if c is None else float(c)
            )
        rows = [
            dict(zip(("kind", "capped", "coherence", "ci_lo", "ci_hi"), (*k, *mean_ci(v))))
            for k, v in sorted(cells.items())
        ]
        return pd.DataFrame(rows)

    def summary(self, measure: str = "slope") -> dict[str, Any]:
        """Drift per kind and condition, the drift removed, coherence and the capability proxy,
        as plain values (written to ``summary.json`` by the experiment)."""
        out: dict[str, Any] = {
            "layer": self.layer,
            "measure": measure,
            "drift": self.drift(measure).to_dict(orient="records"),
            "coherence": self.coherence().to_dict(orient="records"),
            "capping": self.capping,
            "capability": self.capability,
        }
        if any(r["kind"] == "bounded_task" for r in self.records):
            table = self.drift_vs_control(measure=measure)
            out["drift_vs_bounded_task"] = table.to_dict(orient="records")
        if self.capping is not None:
            out["drift_removed"] = self.drift_removed(measure).to_dict(orient="records")
        return out

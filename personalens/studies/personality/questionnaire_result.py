"""The result of a questionnaire run: per-item scores and per-dimension statistics."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from personalens.results import Result, json_safe

if TYPE_CHECKING:
    import pandas as pd

LOW_MASS = 0.5  # scale tokens below this probability: the model did not answer on the scale
LIKELIHOOD_UNITS = "nats/token"


def _keyed_values(recs: list[dict[str, Any]], key: str) -> dict[str, np.ndarray]:
    """``{"forward": ..., "reverse": ...}``: the non-NaN ``key`` values of each keying."""
    out = {}
    for side, rev in (("forward", False), ("reverse", True)):
        part = np.array([r[key] for r in recs if r["reverse"] is rev], dtype=float)
        out[side] = part[~np.isnan(part)]
    return out


def _std(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan


def _likelihood_row(dim: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    side = _keyed_values(recs, "logprob")
    f, r = side["forward"], side["reverse"]
    mean_f = float(f.mean()) if len(f) else math.nan
    mean_r = float(r.mean()) if len(r) else math.nan
    var = (
        (np.var(f, ddof=1) / len(f) + np.var(r, ddof=1) / len(r))
        if len(f) > 1 and len(r) > 1
        else math.nan
    )
    n = len(f) + len(r)
    return {
        "dimension": dim,
        "contrast": mean_f - mean_r,
        "sem": math.sqrt(var) if not math.isnan(var) else math.nan,
        "mean_forward": mean_f,
        "mean_reverse": mean_r,
        "std_forward": _std(f),
        "std_reverse": _std(r),
        "n_items": len(recs),
        "n_forward": len(f),
        "n_reverse": len(r),
        "n_scored": n,
        "n_nan": len(recs) - n,
        "units": LIKELIHOOD_UNITS,
    }


def _likert_row(dim: str, recs: list[dict[str, Any]]) -> dict[str, Any]:
    scores = np.array([r["score"] for r in recs], dtype=float)
    ok = scores[~np.isnan(scores)]
    n = len(ok)
    std = _std(ok)
    keyed = {
        s: float(v.mean()) if len(v) else math.nan for s, v in _keyed_values(recs, "score").items()
    }
    masses = np.array([r["scale_mass"] for r in recs], dtype=float)
    has_mass = not np.isnan(masses).all()
    return {
        "dimension": dim,
        "mean": float(ok.mean()) if n else math.nan,
        "std": std,
        "sem": std / math.sqrt(n) if n > 1 else math.nan,
        "n_items": len(recs),
        "n_scored": n,
        "n_nan": len(recs) - n,
        "mean_forward": keyed["forward"],
        "mean_reverse": keyed["reverse"],
        "scale_mass": float(np.nanmean(masses)) if has_mass else math.nan,
        "min_scale_mass": float(np.nanmin(masses)) if has_mass else math.nan,
        "n_low_mass": int((masses < LOW_MASS).sum()) if has_mass else 0,
    }


@dataclass(frozen=True)
class QuestionnaireResult(Result):
    """Per-item scores of one questionnaire run (``records``) and how they were made.

    ``raw_score`` is on the scale as answered, ``score`` after reverse keying; NaN where the
    item could not be scored (see ``status``). For ``method="likelihood"`` both are the item's
    ``logprob`` (mean nats/token, not keyed: keying enters through the per-dimension contrast)
    and :attr:`units` says so.

    :meth:`to_frame` has one row per item: id, dimension, reverse, text, raw_score, score,
    scale_mass, ...; for ``method="likelihood"``: ``logprob`` (mean log-probability per
    statement token, nats), ``sum_logprob`` and ``n_tokens`` instead of the scale columns.
    """

    questionnaire: str
    method: str
    dimension_names: tuple[str, ...]
    scale_values: tuple[int, ...]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    _frame_field: ClassVar[str] = "records"

    def __len__(self) -> int:
        return len(self.records)

    @property
    def units(self) -> str:
        """What a dimension score is measured in: ``"likert 1-5"`` or ``"nats/token"``."""
        if self.method == "likelihood":
            return LIKELIHOOD_UNITS
        return f"likert {self.scale_values[0]}-{self.scale_values[-1]}"

    def _dimension_rows(self) -> list[dict[str, Any]]:
        row = _likelihood_row if self.method == "likelihood" else _likert_row
        return [
            row(dim, [r for r in self.records if r["dimension"] == dim])
            for dim in self.dimension_names
        ]

    def dimensions(self) -> pd.DataFrame:
        """One row per dimension: mean, std and sem across items, counts, scale-token mass.

        ``n_nan`` counts items without a score (unparseable replies, judge refusals, mass
        below ``min_mass``). ``mean_forward`` / ``mean_reverse`` are the means of the (keyed)
        scores of the forward- and reverse-keyed items: a real change of the trait moves both
        the same way, a change of response style (saying "agree" to everything) moves them
        apart. ``scale_mass`` is the mean probability the scale tokens got (logprob method
        only) and ``n_low_mass`` the items where it was below :data:`LOW_MASS`.

        For ``method="likelihood"`` the columns differ: ``contrast`` (``mean_forward -
        mean_reverse``, the dimension's score, nats/token), ``sem`` (its standard error,
        ``sqrt(var_f / n_f + var_r / n_r)``), ``mean_forward`` / ``mean_reverse`` (mean item
        ``logprob`` of each keying), their ``std_*``, counts, and ``units``.
        """
        import pandas as pd

        return pd.DataFrame.from_records(self._dimension_rows())

    def summary(self) -> dict[str, float]:
        """``{dimension: score}``: the mean keyed score (Likert methods) or the forward - reverse
        contrast (``"likelihood"``, nats/token); NaN where no item was scored."""
        key = "contrast" if self.method == "likelihood" else "mean"
        return {row["dimension"]: row[key] for row in self._dimension_rows()}

    @property
    def mean_scale_mass(self) -> float:
        """Mean probability of the scale tokens over all items (NaN unless method='logprob')."""
        masses = np.array([r["scale_mass"] for r in self.records], dtype=float)
        return math.nan if np.isnan(masses).all() else float(np.nanmean(masses))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes ``None``): scores, per-dimension stats, items, settings."""
        rows = self._dimension_rows()
        return {
            "questionnaire": self.questionnaire,
            "method": self.method,
            "units": self.units,
            "scores": json_safe(self.summary()),
            "dimensions": {
                row["dimension"]: json_safe({k: v for k, v in row.items() if k != "dimension"})
                for row in rows
            },
            "mean_scale_mass": json_safe(self.mean_scale_mass),
            "settings": self.settings,
            "items": json_safe(self.records),
        }


__all__ = ["LIKELIHOOD_UNITS", "LOW_MASS", "QuestionnaireResult"]

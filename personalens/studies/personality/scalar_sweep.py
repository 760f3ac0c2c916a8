"""Scalar sweep: questionnaire scores of a model steered along one vector at several
coefficients, and the per-dimension line fit of score on coefficient."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from personalens.errors import PersonaLensError
from personalens.results import Result, json_safe
from personalens.steering.plan import plan_steering
from personalens.studies.personality import steered_scores as steered
from personalens.studies.personality.ocean import BIG_FIVE_POLES
from personalens.studies.personality.questionnaire_file import Questionnaire, load_questionnaire
from personalens.studies.personality.questionnaire_result import QuestionnaireResult

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["ScalarSweepResult", "fit_line", "scalar_sweep"]


def fit_line(
    x: Sequence[float | int] | np.ndarray, y: Sequence[float | int] | np.ndarray
) -> tuple[float, float, float]:
    """Ordinary least squares ``y ≈ slope · x + intercept``: ``(slope, intercept, r2)``.

    ``r2 = 1 - SS_res / SS_tot`` (NaN when ``y`` is constant). NaN points are left out; fewer
    than two distinct ``x`` values left is an error.
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.ndim != 1:
        raise PersonaLensError(f"fit_line needs two 1-D sequences of one length, got {xs.shape}")
    ok = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[ok], ys[ok]
    if len(np.unique(xs)) < 2:
        raise PersonaLensError("fit_line needs at least two distinct x values (coefficients)")
    dx = xs - xs.mean()
    slope = float((dx * (ys - ys.mean())).sum() / (dx * dx).sum())
    intercept = float(ys.mean() - slope * xs.mean())
    ss_tot = float(((ys - ys.mean()) ** 2).sum())
    ss_res = float(((ys - (slope * xs + intercept)) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else math.nan
    return slope, intercept, r2


@dataclass(frozen=True)
class ScalarSweepResult(Result):
    """Questionnaire scores of a model steered along one vector at several coefficients.

    ``records`` has one row per (coefficient, dimension): ``score`` (the dimension's score, in
    ``units``), ``sem`` (its standard error over items), ``delta`` (``score`` minus the score
    at coefficient 0) and ``delta_sem`` (from per-item paired differences, so it is much
    smaller than ``sem``). ``target``/``sign`` name the dimension the vector's trait is a pole
    of (``None``/0 for other traits). :meth:`to_frame`: one row per (coeff, dimension): score,
    sem, delta, delta_sem, is_target.
    """

    trait: str
    target: str | None
    sign: int
    coeffs: tuple[float, ...]
    dimensions: tuple[str, ...]
    method: str
    units: str
    records: tuple[dict[str, Any], ...]
    settings: dict[str, Any] = field(default_factory=dict)

    _frame_field: ClassVar[str] = "records"

    def table(self, value: str = "delta") -> pd.DataFrame:
        """Coefficients x dimensions table of ``value`` (``"delta"`` or ``"score"``)."""
        if value not in ("delta", "score", "sem", "delta_sem"):
            raise PersonaLensError(f"value must be delta, score, sem or delta_sem, not {value!r}")
        df = self.to_frame()
        return df.pivot(index="coeff", columns="dimension", values=value)[list(self.dimensions)]

    def fit(self) -> pd.DataFrame:
        """Per dimension, OLS of score on coefficient: ``slope`` (units per unit coefficient),
        ``intercept``, ``r2``, ``n_coeffs``; ``is_target``, ``expected_sign`` (the pole's sign
        for the target dimension, else 0) and ``as_expected`` (the target's slope has the
        pole's sign; NaN for other dimensions)."""
        import pandas as pd

        df = self.to_frame()
        rows = []
        for dim in self.dimensions:
            part = df[df.dimension == dim]
            slope, intercept, r2 = fit_line(part.coeff.tolist(), part.score.tolist())
            is_target = dim == self.target
            rows.append(
                {
                    "trait": self.trait,
                    "dimension": dim,
                    "slope": slope,
                    "intercept": intercept,
                    "r2": r2,
                    "n_coeffs": int(part.score.notna().sum()),
                    "is_target": is_target,
                    "expected_sign": self.sign if is_target else 0,
                    "as_expected": bool(np.sign(slope) == self.sign) if is_target else math.nan,
                    "units": self.units,
                }
            )
        return pd.DataFrame.from_records(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe (NaN becomes None): the fields, with the :meth:`fit` before ``settings``."""
        out = super().to_dict()
        settings = out.pop("settings")
        out["fit"] = json_safe(self.fit().to_dict(orient="records"))
        out["settings"] = settings
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScalarSweepResult:
        """Inverse of :meth:`to_dict` (``None`` back to NaN; the fit is recomputed)."""
        return cls(
            trait=data["trait"],
            target=data["target"],
            sign=int(data["sign"]),
            coeffs=tuple(float(c) for c in data["coeffs"]),
            dimensions=tuple(data["dimensions"]),
            method=data["method"],
            units=data["units"],
            records=tuple(
                {k: steered.nan_for_none(v) for k, v in r.items()} for r in data["records"]
            ),
            settings=dict(data.get("settings", {})),
        )


def _target_and_sign(
    vector: PersonaVector, target: str | None, q: Questionnaire
) -> tuple[str | None, int]:
    """The dimension the trait should move and the sign of that move (see :func:`scalar_sweep`)."""
    sign = 0
    if target is None and vector.trait in BIG_FIVE_POLES:
        target, sign = BIG_FIVE_POLES[vector.trait]
        if target not in q.dimensions:
            target, sign = None, 0
    elif target is not None:
        if target not in q.dimensions:
            raise PersonaLensError(
                f"target {target!r} is not a dimension of questionnaire {q.name!r}: "
                f"{list(q.dimensions)}"
            )
        dim, pole_sign = BIG_FIVE_POLES.get(vector.trait, (None, 1))
        sign = pole_sign if dim == target else 1
    return target, sign


def _sweep_records(
    trait: str,
    dimensions: Sequence[str],
    target: str | None,
    results: Mapping[float, QuestionnaireResult],
) -> list[dict[str, Any]]:
    """One record per (coefficient, dimension), deltas against coefficient 0."""
    base = results[0.0]
    base_summary = base.summary()
    records = []
    for c, res in results.items():
        dims = res.dimensions().set_index("dimension")
        summary = res.summary()
        for dim in dimensions:
            records.append(
                {
                    "trait": trait,
                    "coeff": c,
                    "dimension": dim,
                    "score": summary[dim],
                    "sem": float(dims.loc[dim, "sem"]),
                    "delta": summary[dim] - base_summary[dim],
                    "delta_sem": steered.paired_sem(base, res, dim) if c != 0.0 else 0.0,
                    "is_target": dim == target,
                }
            )
    return records


def scalar_sweep(
    model: HookedTransformer,
    vector: PersonaVector,
    coeffs: Sequence[float | int],
    *,
    layers: int | Sequence[int],
    questionnaire: Questionnaire | str = "big_five",
    method: str = "likelihood",
    coeff_scale: str = "resid",
    positions: str = "all",
    target: str | None = None,
    batch_size: int = 16,
    system: str | None = None,
    resid_norms: Tensor | None = None,
    baseline: QuestionnaireResult | None = None,
) -> ScalarSweepResult:
    """Score ``questionnaire`` with the model steered along ``vector`` at each coefficient.

    Coefficient 0 (the unsteered model, no hook at all) is always scored: it is the reference
    of every ``delta`` (added to the sweep if ``coeffs`` lacks it). Steering is
    ``pl.steer(model, vector, coeff, layers=layers, coeff_scale=coeff_scale,
    positions=positions)``; for the likelihood method ``positions="all"`` (default) steers the
    prompt and the statement, ``"response"`` the last prompt token and the statement (see
    :mod:`personalens.studies.personality.questionnaire`). ``target`` is the dimension the trait
    should move (default: from :data:`~personalens.studies.personality.ocean.BIG_FIVE_POLES`
    when the vector's trait is a pole, else none; a ``target`` you give is expected to rise with
    the coefficient unless the table says the trait is its low pole).
    ``resid_norms``: precomputed :func:`personalens.residual_norms` for ``coeff_scale="resid"``;
    ``baseline``: an unsteered result of the same questionnaire and method to reuse as
    coefficient 0 (sweeping several vectors then scores the unsteered model once).
    """
    vector = steered.check_vector(model, vector, "vector")
    values = steered.check_coeffs(coeffs)
    q = load_questionnaire(questionnaire)
    target, sign = _target_and_sign(vector, target, q)
    norms = steered.scale_norms(model, coeff_scale, resid_norms)
    if 0.0 not in values:
        values.append(0.0)
    values.sort()
    plan = partial(
        plan_steering, model, vector, layers=layers, positions=positions, coeff_scale=coeff_scale
    )
    # every plan is validated before the first forward pass
    plans = {c: plan(c, resid_norms=norms) for c in values if c != 0.0}
    steered.check_baseline(baseline, q, method)
    results = {
        c: baseline
        if c == 0.0 and baseline is not None
        else steered.score_steered(model, q, plans.get(c), method, batch_size, system)
        for c in values
    }
    base = results[0.0]
    any_plan = next(iter(plans.values()), None)
    settings = {
        "model": model.cfg.model_name,
        "questionnaire": q.name,
        "method": method,
        "layers": any_plan.layers if any_plan is not None else layers,
        "coeff_scale": coeff_scale,
        "positions": positions,
        "batch_size": batch_size,
        "system": system,
        "vector": {"trait": vector.trait, "model": vector.model, "method": vector.method},
    }
    if method == "likelihood":
        settings["self_description_prompt"] = base.settings.get("self_description_prompt")
    return ScalarSweepResult(
        trait=vector.trait,
        target=target,
        sign=sign,
        coeffs=tuple(values),
        dimensions=tuple(q.dimensions),
        method=method,
        units=base.units,
        records=tuple(_sweep_records(vector.trait, q.dimensions, target, results)),
        settings=settings,
    )

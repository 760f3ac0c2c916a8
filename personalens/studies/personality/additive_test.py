"""Additive test: do trait effects add? Steer along ``a``, ``b``, ``a + b`` and ``a - b`` and
compare the observed questionnaire changes of the sums with the predicted ``Δ(a) ± Δ(b)``.

**Adding vectors under a coefficient scale.** :func:`~personalens.steering.hooks.steer` with
``coeff_scale="unit"`` or ``"resid"`` rescales whatever vector it is given to a fixed length per
layer, so steering with the raw sum ``a + b`` would add a vector only as long as ``a`` alone
(and its length would depend on the angle between them). :func:`additive_test` therefore adds
the vectors *after* the scale: with ``s_L`` the scale of ``coeff_scale`` at layer ``L`` (1 for
``"raw"``, ``1/|v_L|`` for ``"unit"``, ``r_L/|v_L|`` for ``"resid"``), the combined vector is
``s_a·a ± s_b·b`` (built with :class:`~personalens.vectors.vector.PersonaVector` algebra) and
is steered with ``coeff_scale="raw"``. The edit of ``a + b`` at coefficient ``c`` is then
exactly the sum of the edits of ``a`` and of ``b`` at ``c``, and the test asks whether their
*effects* add. With ``coeff_scale="raw"`` this is the raw sum ``a + b``, as in the PERSONA
paper.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from personalens.errors import PersonaLensError
from personalens.results import Result
from personalens.stats import pearson_r
from personalens.steering.plan import plan_steering
from personalens.studies.personality import steered_scores as steered
from personalens.studies.personality.questionnaire_file import Questionnaire, load_questionnaire
from personalens.studies.personality.questionnaire_result import QuestionnaireResult
from personalens.vectors.algebra import normalize
from personalens.vectors.arithmetic import check_same_space

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["CONDITIONS", "AdditiveTestResult", "additive_test"]

CONDITIONS = ("a", "b", "a+b", "a-b")


def _scaled(v: PersonaVector, coeff_scale: str, norms: Tensor | None) -> PersonaVector:
    """``s_L · v_L`` per layer: the vector whose raw steering equals ``v`` under coeff_scale."""
    if coeff_scale == "raw":
        return v
    unit = normalize(v)
    if coeff_scale == "unit":
        return unit
    return unit * norms.to(dtype=unit.directions.dtype).cpu()


@dataclass(frozen=True)
class AdditiveTestResult(Result):
    """Observed questionnaire changes under ``a``, ``b``, ``a + b``, ``a - b`` vs predicted.

    ``observed[condition][dimension]`` is the score change against the unsteered model (one
    coefficient ``coeff`` for every condition), ``sem`` its paired standard error, and
    ``predicted["a+b"] = Δ(a) + Δ(b)``, ``predicted["a-b"] = Δ(a) - Δ(b)``. ``a``/``b`` are the
    traits' names. How the vectors are added is in the module docstring. :meth:`to_frame`: one
    row per (condition, dimension): observed delta, its sem, predicted delta (NaN for the
    single vectors ``a`` and ``b``) and ``error = observed - predicted``.
    """

    a: str
    b: str
    coeff: float
    dimensions: tuple[str, ...]
    method: str
    units: str
    observed: dict[str, dict[str, float]]
    sem: dict[str, dict[str, float]]
    predicted: dict[str, dict[str, float]]
    settings: dict[str, Any] = field(default_factory=dict)

    def label(self, condition: str) -> str:
        """``"a"``, ``"a+b"``, ... with the trait names, e.g. ``"outgoing + compassionate"``."""
        names = {
            "a": self.a,
            "b": self.b,
            "a+b": f"{self.a} + {self.b}",
            "a-b": f"{self.a} − {self.b}",
        }
        if condition not in names:
            raise PersonaLensError(f"unknown condition {condition!r}: use one of {CONDITIONS}")
        return names[condition]

    def frame_records(self) -> list[dict[str, Any]]:
        rows = []
        for cond in CONDITIONS:
            for dim in self.dimensions:
                obs = self.observed[cond][dim]
                pred = self.predicted.get(cond, {}).get(dim, math.nan)
                rows.append(
                    {
                        "condition": cond,
                        "label": self.label(cond),
                        "dimension": dim,
                        "observed": obs,
                        "sem": self.sem[cond][dim],
                        "predicted": pred,
                        "error": obs - pred,
                    }
                )
        return rows

    def summary(self) -> pd.DataFrame:
        """Per combination (``a+b``, ``a-b``) over the dimensions: Pearson ``r`` of observed on
        predicted, ``mae`` (mean absolute error), ``gain`` (least-squares slope through the
        origin: 1 when the effects add exactly, < 1 when the sum does less than predicted)."""
        import pandas as pd

        rows = []
        for cond in ("a+b", "a-b"):
            obs = np.array([self.observed[cond][d] for d in self.dimensions])
            pred = np.array([self.predicted[cond][d] for d in self.dimensions])
            denom = float((pred * pred).sum())
            rows.append(
                {
                    "condition": cond,
                    "label": self.label(cond),
                    "r": pearson_r(pred.tolist(), obs.tolist()),
                    "mae": float(np.abs(obs - pred).mean()),
                    "gain": float((obs * pred).sum() / denom) if denom > 0 else math.nan,
                    "n_dimensions": len(self.dimensions),
                }
            )
        return pd.DataFrame.from_records(rows)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdditiveTestResult:
        """Inverse of :meth:`to_dict` (``None`` back to NaN)."""

        def load(d: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
            return {
                k: {dim: float(steered.nan_for_none(x)) for dim, x in v.items()}
                for k, v in d.items()
            }

        return cls(
            a=data["a"],
            b=data["b"],
            coeff=float(data["coeff"]),
            dimensions=tuple(data["dimensions"]),
            method=data["method"],
            units=data["units"],
            observed=load(data["observed"]),
            sem=load(data["sem"]),
            predicted=load(data["predicted"]),
            settings=dict(data.get("settings", {})),
        )


def additive_test(
    model: HookedTransformer,
    a: PersonaVector,
    b: PersonaVector,
    coeff: float | int,
    *,
    layers: int | Sequence[int],
    questionnaire: Questionnaire | str = "big_five",
    method: str = "likelihood",
    coeff_scale: str = "resid",
    positions: str = "all",
    batch_size: int = 16,
    system: str | None = None,
    resid_norms: Tensor | None = None,
    baseline: QuestionnaireResult | None = None,
) -> AdditiveTestResult:
    """Do trait effects add? Steer along ``a``, ``b``, ``a + b`` and ``a - b`` at ``coeff``.

    Each condition's questionnaire scores minus the unsteered scores are the observed changes;
    the predictions are ``Δ(a) + Δ(b)`` and ``Δ(a) - Δ(b)``. The sums are taken after the
    ``coeff_scale`` normalisation (module docstring), so the edit of ``a + b`` is exactly the
    sum of the edits of ``a`` and ``b``. ``baseline``: an unsteered result of the same
    questionnaire and method to reuse (e.g. from a
    :func:`~personalens.studies.personality.scalar_sweep.scalar_sweep`); scored when omitted.
    """
    a = steered.check_vector(model, a, "a")
    b = steered.check_vector(model, b, "b")
    try:
        check_same_space(a, b)
    except PersonaLensError as exc:
        raise PersonaLensError(f"additive_test: a and b do not fit together. {exc}") from None
    (c,) = steered.check_coeffs([coeff])
    if c == 0.0:
        raise PersonaLensError("coeff is 0: every condition would be the unsteered model")
    q = load_questionnaire(questionnaire)
    norms = steered.scale_norms(model, coeff_scale, resid_norms)
    sa, sb = _scaled(a, coeff_scale, norms), _scaled(b, coeff_scale, norms)
    vectors = {"a": sa, "b": sb, "a+b": sa + sb, "a-b": sa - sb}
    plans = {
        cond: plan_steering(model, v, c, layers=layers, positions=positions, coeff_scale="raw")
        for cond, v in vectors.items()
    }
    steered.check_baseline(baseline, q, method)
    if baseline is None:
        baseline = steered.score_steered(model, q, None, method, batch_size, system)
    base = baseline.summary()
    observed: dict[str, dict[str, float]] = {}
    sem: dict[str, dict[str, float]] = {}
    for cond, plan in plans.items():
        res = steered.score_steered(model, q, plan, method, batch_size, system)
        summary = res.summary()
        observed[cond] = {d: summary[d] - base[d] for d in q.dimensions}
        sem[cond] = {d: steered.paired_sem(baseline, res, d) for d in q.dimensions}
    predicted = {
        "a+b": {d: observed["a"][d] + observed["b"][d] for d in q.dimensions},
        "a-b": {d: observed["a"][d] - observed["b"][d] for d in q.dimensions},
    }
    settings = {
        "model": model.cfg.model_name,
        "questionnaire": q.name,
        "method": method,
        "layers": plans["a"].layers,
        "coeff_scale": coeff_scale,
        "combined_as": "s_a*a ± s_b*b steered with coeff_scale='raw' (s: the coeff_scale factor)",
        "positions": positions,
        "batch_size": batch_size,
        "system": system,
    }
    return AdditiveTestResult(
        a=a.trait,
        b=b.trait,
        coeff=c,
        dimensions=tuple(q.dimensions),
        method=method,
        units=baseline.units,
        observed=observed,
        sem=sem,
        predicted=predicted,
        settings=settings,
    )

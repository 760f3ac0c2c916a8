"""Questionnaire scores under steering, shared by the scalar sweep and the additive test:
argument checks, one steered scoring run, and the paired standard error of a score change."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from personalens.errors import PersonaLensError
from personalens.steering.calibration import residual_norms
from personalens.steering.plan import COEFF_SCALES
from personalens.studies.personality.questionnaire import score_questionnaire
from personalens.studies.personality.questionnaire_file import Questionnaire
from personalens.studies.personality.questionnaire_result import QuestionnaireResult
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from torch import Tensor
    from transformer_lens import HookedTransformer


def _item_values(result: QuestionnaireResult) -> dict[str, tuple[str, bool, float]]:
    """``{item id: (dimension, reverse, value)}``: ``logprob`` (likelihood) or keyed score."""
    key = "logprob" if result.method == "likelihood" else "score"
    return {r["id"]: (r["dimension"], bool(r["reverse"]), float(r[key])) for r in result.records}


def paired_sem(base: QuestionnaireResult, other: QuestionnaireResult, dim: str) -> float:
    """Standard error of a dimension's change, from per-item paired differences.

    Likelihood: ``sqrt(var_f(Δ) / n_f + var_r(Δ) / n_r)`` of the contrast's change; Likert
    methods: ``std(Δ) / sqrt(n)`` of the mean keyed score's change. NaN with too few items.
    """
    a, b = _item_values(base), _item_values(other)
    diffs: dict[bool, list[float]] = {False: [], True: []}
    for item, (d, rev, value) in b.items():
        if d == dim and item in a:
            delta = value - a[item][2]
            if not math.isnan(delta):
                diffs[rev].append(delta)
    if base.method == "likelihood":
        f, r = np.array(diffs[False]), np.array(diffs[True])
        if len(f) < 2 or len(r) < 2:
            return math.nan
        return float(math.sqrt(np.var(f, ddof=1) / len(f) + np.var(r, ddof=1) / len(r)))
    allv = np.array(diffs[False] + diffs[True])
    return float(np.std(allv, ddof=1) / math.sqrt(len(allv))) if len(allv) > 1 else math.nan


def check_vector(model: HookedTransformer, vector: Any, name: str) -> PersonaVector:
    """``vector`` when it is a :class:`PersonaVector` that fits ``model``."""
    if not isinstance(vector, PersonaVector):
        raise PersonaLensError(
            f"{name} is a {type(vector).__name__}, not a PersonaVector; load one with "
            "pl.shipped_vector(trait) or pl.PersonaVector.load(path)"
        )
    vector.check_compatible(model)
    return vector


def check_coeffs(coeffs: Any) -> list[float]:
    """Distinct finite steering coefficients (one number is a list of one)."""
    if isinstance(coeffs, int | float):
        coeffs = [coeffs]
    values = [float(c) for c in coeffs]
    if not values:
        raise PersonaLensError("coeffs is empty: give the steering coefficients to sweep")
    if any(not math.isfinite(c) for c in values):
        raise PersonaLensError(f"coeffs must be finite numbers, got {values}")
    if len(set(values)) != len(values):
        raise PersonaLensError(f"coeffs {values} repeat a value")
    return values


def scale_norms(
    model: HookedTransformer, coeff_scale: str, resid_norms: Tensor | None
) -> Tensor | None:
    """The residual norms ``coeff_scale="resid"`` needs (``resid_norms`` or measured), else None."""
    if coeff_scale not in COEFF_SCALES:
        raise PersonaLensError(f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}")
    if coeff_scale != "resid":
        return None
    return residual_norms(model) if resid_norms is None else resid_norms


def check_baseline(baseline: QuestionnaireResult | None, q: Questionnaire, method: str) -> None:
    """A reused baseline is the unsteered model's result of this questionnaire and method."""
    if baseline is None:
        return
    if baseline.method != method or baseline.questionnaire != q.name:
        raise PersonaLensError(
            f"baseline was scored with {baseline.questionnaire!r}/{baseline.method!r}, not "
            f"{q.name!r}/{method!r}"
        )
    if baseline.settings.get("steering") is not None:
        raise PersonaLensError("baseline must be the unsteered model (it was scored with steering)")


def nan_for_none(value: Any) -> Any:
    """``None`` (a NaN in saved JSON) back to NaN."""
    return math.nan if value is None else value


def score_steered(
    model: HookedTransformer,
    q: Questionnaire,
    steering: Any,
    method: str,
    batch_size: int,
    system: str | None,
) -> QuestionnaireResult:
    """:func:`score_questionnaire` of ``q`` under ``steering`` (a plan, or None: unsteered)."""
    return score_questionnaire(
        model, q, steering=steering, method=method, batch_size=batch_size, system=system
    )

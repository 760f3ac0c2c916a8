"""Big Five (OCEAN) control: the ten shipped pole traits, shipped vectors, and steering algebra.

The experiments of PERSONA (scalar multiplication, addition and subtraction of trait vectors),
measured with a questionnaire instead of a judge:

* :func:`scalar_sweep` -- steer along one vector at several coefficients and score the Big Five
  questionnaire each time; :meth:`ScalarSweepResult.fit` fits score vs coefficient per dimension
  (ordinary least squares: slope, intercept, R²).
* :func:`additive_test` -- steer along ``a``, ``b``, ``a + b`` and ``a - b`` at one coefficient
  and compare the observed score changes of the sums with the predicted ``Δ(a) ± Δ(b)``.
* orthogonality of the pole vectors: :func:`personalens.vectors.algebra.cosine_matrix` (per layer).

The default score is ``method="likelihood"`` of :func:`personalens.score_questionnaire`:
per dimension, the mean log-probability (nats/token) of the forward-keyed self-descriptions
minus that of the reverse-keyed ones. The Likert ``"logprob"`` method does not read the items
at 135M parameters (every item gets the same answer distribution), so it cannot show a
dimension-specific change there; see :mod:`personalens.studies.personality.questionnaire`.

**Adding vectors under a coefficient scale.** :func:`steer` with ``coeff_scale="unit"`` or
``"resid"`` rescales whatever vector it is given to a fixed length per layer, so steering with
the raw sum ``a + b`` would add a vector only as long as ``a`` alone (and its length would
depend on the angle between them). :func:`additive_test` therefore adds the vectors *after*
the scale: with ``s_L`` the scale of ``coeff_scale`` at layer ``L`` (1 for ``"raw"``,
``1/|v_L|`` for ``"unit"``, ``r_L/|v_L|`` for ``"resid"``), the combined vector is
``s_a·a ± s_b·b`` (built with :class:`PersonaVector` algebra) and is steered with
``coeff_scale="raw"``. The edit of ``a + b`` at coefficient ``c`` is then exactly the sum of the
edits of ``a`` and of ``b`` at ``c``, and the test asks whether their *effects* add. With
``coeff_scale="raw"`` this is the raw sum ``a + b``, as in the PERSONA paper.

The ten pole vectors of the embedded model ship with the package:
:func:`personalens.vectors.shipped.shipped_vector`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    import pandas as pd
    from torch import Tensor
    from transformer_lens import HookedTransformer

    from personalens.studies.personality.questionnaire import Questionnaire, QuestionnaireResult
    from personalens.vectors.vector import PersonaVector

__all__ = [
    "BIG_FIVE_DIMENSIONS",
    "BIG_FIVE_POLES",
    "AdditiveTestResult",
    "ScalarSweepResult",
    "additive_test",
    "fit_line",
    "pole",
    "scalar_sweep",
]

BIG_FIVE_DIMENSIONS = (
    "openness",
    "conscientiousness",
    "extraversion",
    "agreeableness",
    "neuroticism",
)

# The ten shipped pole traits: trait -> (Big Five dimension, +1 high pole / -1 low pole). The trait
# files say this only in prose ("This is the high pole of Big Five extraversion."); a unit test
# checks that this table agrees with them and with the big_five questionnaire's dimensions.
BIG_FIVE_POLES: dict[str, tuple[str, int]] = {
    "inventive": ("openness", 1),
    "consistent": ("openness", -1),
    "dependable": ("conscientiousness", 1),
    "careless": ("conscientiousness", -1),
    "outgoing": ("extraversion", 1),
    "solitary": ("extraversion", -1),
    "compassionate": ("agreeableness", 1),
    "self-interested": ("agreeableness", -1),
    "nervous": ("neuroticism", 1),
    "calm": ("neuroticism", -1),
}


def pole(trait: str) -> tuple[str, int]:
    """``(dimension, sign)`` of a Big Five pole trait, e.g. ``pole("solitary")`` is
    ``("extraversion", -1)``."""
    if trait not in BIG_FIVE_POLES:
        raise PersonaLensError(
            f"{trait!r} is not a Big Five pole trait; the poles are {list(BIG_FIVE_POLES)}"
        )
    return BIG_FIVE_POLES[trait]


# ----------------------------------------------------------------------------- fitting


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


# ----------------------------------------------------------------------------- scoring helpers


def _item_values(result: QuestionnaireResult) -> dict[str, tuple[str, bool, float]]:
    """``{item id: (dimension, reverse, value)}``: ``logprob`` (likelihood) or keyed score."""
    key = "logprob" if result.method == "likelihood" else "score"
    return {r["id"]: (r["dimension"], bool(r["reverse"]), float(r[key])) for r in result.records}


def _paired_sem(base: QuestionnaireResult, other: QuestionnaireResult, dim: str) -> float:
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


def _resolve_questionnaire(questionnaire: Questionnaire | str | Any) -> Questionnaire:
    from personalens.studies.personality.questionnaire import load_questionnaire

    return load_questionnaire(questionnaire)


def _check_vector(model: HookedTransformer, vector: Any, name: str) -> PersonaVector:
    from personalens.vectors.vector import PersonaVector

    if not isinstance(vector, PersonaVector):
        raise PersonaLensError(
            f"{name} is a {type(vector).__name__}, not a PersonaVector; load one with "
            "pl.shipped_vector(trait) or pl.PersonaVector.load(path)"
        )
    vector.check_compatible(model)
    return vector


def _check_coeffs(coeffs: Any) -> list[float]:
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


def _resid_norms(
    model: HookedTransformer, coeff_scale: str, resid_norms: Tensor | None
) -> Tensor | None:
    from personalens.steering.steer import COEFF_SCALES, residual_norms

    if coeff_scale not in COEFF_SCALES:
        raise PersonaLensError(f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}")
    if coeff_scale != "resid":
        return None
    return residual_norms(model) if resid_norms is None else resid_norms


def _check_baseline(baseline: QuestionnaireResult | None, q: Questionnaire, method: str) -> None:
    if baseline is None:
        return
    if baseline.method != method or baseline.questionnaire != q.name:
        raise PersonaLensError(
            f"baseline was scored with {baseline.questionnaire!r}/{baseline.method!r}, not "
            f"{q.name!r}/{method!r}"
        )
    if baseline.settings.get("steering") is not None:
        raise PersonaLensError("baseline must be the unsteered model (it was scored with steering)")


def _nan(value: Any) -> Any:
    return math.nan if value is None else value


def _score(
    model: HookedTransformer,
    q: Questionnaire,
    steering: Any,
    method: str,
    batch_size: int,
    system: str | None,
) -> QuestionnaireResult:
    from personalens.studies.personality.questionnaire import score_questionnaire

    return score_questionnaire(
        model, q, steering=steering, method=method, batch_size=batch_size, system=system
    )


# ----------------------------------------------------------------------------- scalar sweep


@dataclass(frozen=True)
class ScalarSweepResult:
    """Questionnaire scores of a model steered along one vector at several coefficients.

    ``records`` has one row per (coefficient, dimension): ``score`` (the dimension's score, in
    ``units``), ``sem`` (its standard error over items), ``delta`` (``score`` minus the score
    at coefficient 0) and ``delta_sem`` (from per-item paired differences, so it is much
    smaller than ``sem``). ``target``/``sign`` name the dimension the vector's trait is a pole
    of (``None``/0 for other traits).
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

    def to_frame(self) -> pd.DataFrame:
        """One row per (coeff, dimension): score, sem, delta, delta_sem, is_target."""
        import pandas as pd

        return pd.DataFrame.from_records(list(self.records))

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
        """JSON-safe (NaN becomes None)."""
        from personalens.studies.personality.questionnaire import _json_num

        return {
            "trait": self.trait,
            "target": self.target,
            "sign": self.sign,
            "coeffs": list(self.coeffs),
            "dimensions": list(self.dimensions),
            "method": self.method,
            "units": self.units,
            "records": [{k: _json_num(v) for k, v in r.items()} for r in self.records],
            "fit": [
                {k: _json_num(v) for k, v in row.items()}
                for row in self.fit().to_dict(orient="records")
            ],
            "settings": self.settings,
        }

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
            records=tuple({k: _nan(v) for k, v in r.items()} for r in data["records"]),
            settings=dict(data.get("settings", {})),
        )


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
    :mod:`personalens.studies.personality.questionnaire`). ``target`` is the dimension the trait should move
    (default: from :data:`BIG_FIVE_POLES` when the vector's trait is a pole, else none; a
    ``target`` you give is expected to rise with the coefficient unless the table says the trait
    is its low pole).
    ``resid_norms``: precomputed :func:`personalens.residual_norms` for ``coeff_scale="resid"``;
    ``baseline``: an unsteered result of the same questionnaire and method to reuse as
    coefficient 0 (sweeping several vectors then scores the unsteered model once).
    """
    from personalens.steering.steer import plan_steering

    vector = _check_vector(model, vector, "vector")
    values = _check_coeffs(coeffs)
    q = _resolve_questionnaire(questionnaire)
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
    norms = _resid_norms(model, coeff_scale, resid_norms)
    if 0.0 not in values:
        values.append(0.0)
    values.sort()
    plans = {
        c: plan_steering(
            model,
            vector,
            c,
            layers=layers,
            positions=positions,
            coeff_scale=coeff_scale,
            resid_norms=norms,
        )
        for c in values
        if c != 0.0
    }  # validated before the first forward pass
    _check_baseline(baseline, q, method)
    results = {
        c: baseline
        if c == 0.0 and baseline is not None
        else _score(model, q, plans.get(c), method, batch_size, system)
        for c in values
    }
    base = results[0.0]
    base_summary = base.summary()
    records = []
    for c in values:
        res = results[c]
        dims = res.dimensions().set_index("dimension")
        summary = res.summary()
        for dim in q.dimensions:
            records.append(
                {
                    "trait": vector.trait,
                    "coeff": c,
                    "dimension": dim,
                    "score": summary[dim],
                    "sem": float(dims.loc[dim, "sem"]),
                    "delta": summary[dim] - base_summary[dim],
                    "delta_sem": _paired_sem(base, res, dim) if c != 0.0 else 0.0,
                    "is_target": dim == target,
                }
            )
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
        records=tuple(records),
        settings=settings,
    )


# ----------------------------------------------------------------------------- additive test

CONDITIONS = ("a", "b", "a+b", "a-b")


def _scaled(v: PersonaVector, coeff_scale: str, norms: Tensor | None) -> PersonaVector:
    """``s_L · v_L`` per layer: the vector whose raw steering equals ``v`` under coeff_scale."""
    from personalens.vectors.algebra import normalize

    if coeff_scale == "raw":
        return v
    unit = normalize(v)
    if coeff_scale == "unit":
        return unit
    return unit * norms.to(dtype=unit.directions.dtype).cpu()


@dataclass(frozen=True)
class AdditiveTestResult:
    """Observed questionnaire changes under ``a``, ``b``, ``a + b``, ``a - b`` vs predicted.

    ``observed[condition][dimension]`` is the score change against the unsteered model (one
    coefficient ``coeff`` for every condition), ``sem`` its paired standard error, and
    ``predicted["a+b"] = Δ(a) + Δ(b)``, ``predicted["a-b"] = Δ(a) - Δ(b)``. ``a``/``b`` are the
    traits' names. How the vectors are added is in the module docstring.
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

    def to_frame(self) -> pd.DataFrame:
        """One row per (condition, dimension): observed delta, its sem, predicted delta (NaN
        for the single vectors ``a`` and ``b``) and ``error = observed - predicted``."""
        import pandas as pd

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
        return pd.DataFrame.from_records(rows)

    def summary(self) -> pd.DataFrame:
        """Per combination (``a+b``, ``a-b``) over the dimensions: Pearson ``r`` of observed on
        predicted, ``mae`` (mean absolute error), ``gain`` (least-squares slope through the
        origin: 1 when the effects add exactly, < 1 when the sum does less than predicted)."""
        import pandas as pd

        from personalens.stats import pearson_r

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

    def to_dict(self) -> dict[str, Any]:
        from personalens.studies.personality.questionnaire import _json_num

        def clean(d: Mapping[str, Mapping[str, float]]) -> dict:
            return {k: {dim: _json_num(x) for dim, x in v.items()} for k, v in d.items()}

        return {
            "a": self.a,
            "b": self.b,
            "coeff": self.coeff,
            "dimensions": list(self.dimensions),
            "method": self.method,
            "units": self.units,
            "observed": clean(self.observed),
            "sem": clean(self.sem),
            "predicted": clean(self.predicted),
            "settings": self.settings,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdditiveTestResult:
        """Inverse of :meth:`to_dict` (``None`` back to NaN)."""

        def load(d: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
            return {k: {dim: float(_nan(x)) for dim, x in v.items()} for k, v in d.items()}

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
    questionnaire and method to reuse (e.g. from a :func:`scalar_sweep`); scored when omitted.
    """
    from personalens.steering.steer import plan_steering
    from personalens.vectors.vector import check_same_space

    a = _check_vector(model, a, "a")
    b = _check_vector(model, b, "b")
    try:
        check_same_space(a, b)
    except PersonaLensError as exc:
        raise PersonaLensError(f"additive_test: a and b do not fit together. {exc}") from None
    (c,) = _check_coeffs([coeff])
    if c == 0.0:
        raise PersonaLensError("coeff is 0: every condition would be the unsteered model")
    q = _resolve_questionnaire(questionnaire)
    norms = _resid_norms(model, coeff_scale, resid_norms)
    sa, sb = _scaled(a, coeff_scale, norms), _scaled(b, coeff_scale, norms)
    vectors = {"a": sa, "b": sb, "a+b": sa + sb, "a-b": sa - sb}
    plans = {
        cond: plan_steering(model, v, c, layers=layers, positions=positions, coeff_scale="raw")
        for cond, v in vectors.items()
    }
    _check_baseline(baseline, q, method)
    if baseline is None:
        baseline = _score(model, q, None, method, batch_size, system)
    base = baseline.summary()
    observed: dict[str, dict[str, float]] = {}
    sem: dict[str, dict[str, float]] = {}
    for cond, plan in plans.items():
        res = _score(model, q, plan, method, batch_size, system)
        summary = res.summary()
        observed[cond] = {d: summary[d] - base[d] for d in q.dimensions}
        sem[cond] = {d: _paired_sem(baseline, res, d) for d in q.dimensions}
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

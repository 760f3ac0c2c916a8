"""Policies of dynamic steering: each turn, how much to push each trait.

A policy reads a :class:`PolicyContext` (the conversation, the unsteered projections and their
z-scores, the target persona) and returns a :class:`PolicyDecision`: an *adjustment* ``a_t`` in
``[-1, 1]`` per trait (0 = leave the trait alone) and a rationale. The steerer
(:class:`~personalens.steering.dynamic.DynamicSteerer`) turns it into the coefficient
``c_t = a_t * max_coeff_t``.

* ``"projection"`` (:class:`ProjectionPolicy`, offline). With target level ``τ_t`` (e.g.
  ``{"evil": -1.0, "outgoing": 0.5}``; ``τ`` in ``[-1, 1]``) and ``target_sd`` (default 2):
  the desired z-score is ``τ_t · target_sd`` and

  ``a_t = clip((τ_t · target_sd - z_t) / target_sd, -1, 1)``,  ``c_t = a_t · max_coeff_t``

  i.e. the coefficient is proportional to the gap between where the context has put the model
  (``z_t``, in neutral-prompt standard deviations) and where the target wants it, reaching
  ``±max_coeff`` when the gap is ``target_sd`` standard deviations or more. In a neutral context
  (``z ≈ 0``) target ``+1`` steers at ``+max_coeff`` and ``+0.5`` at half of it; when the context
  already sits at the target, the coefficient is 0; a context that pushes the trait up against a
  target of 0 is pushed back. A target is a *level*: a context that overshoots it (z above
  ``τ · target_sd`` for ``τ > 0``) is steered back down; ``one_sided=True`` instead treats
  ``τ > 0`` as "at least" and ``τ < 0`` as "at most" (adjustments against the target's sign
  become 0). Traits without a target are measured but not steered (``c = 0``);
  ``|a| < deadband`` (default 0) is set to 0.
* ``"llm"`` (:class:`LLMPolicy`): an LLM behind an OpenAI-compatible API reads the conversation
  (and the target, when one is set) and answers the adjustments as JSON
  (:func:`personalens.steering.adjustment_prompt.predict_trait_adjustments`; validated,
  malformed replies raise).
* a list of ``{trait: adjustment}`` mappings, one per turn (:class:`SchedulePolicy`), or a
  callable ``f(context) -> {trait: adjustment}`` (:class:`CallablePolicy`), for experiments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from personalens.errors import PersonaLensError
from personalens.extraction.traits import list_traits, load_trait
from personalens.judges.openai_client import APIConfig
from personalens.model.chat import Message
from personalens.steering.adjustment_prompt import predict_trait_adjustments

__all__ = [
    "CallablePolicy",
    "LLMPolicy",
    "Policy",
    "PolicyContext",
    "PolicyDecision",
    "ProjectionPolicy",
    "SchedulePolicy",
    "make_policy",
]

Number = float | int
DEFAULT_TARGET_SD = 2.0


@dataclass(frozen=True)
class PolicyContext:
    """What a policy sees before a turn.

    ``projections`` are the unsteered last-prompt-token projections per trait; ``z`` their
    z-scores against the neutral baseline (NaN when no baseline was calibrated); ``target`` the
    desired levels in ``[-1, 1]`` (traits absent from it have no target); ``turn`` counts user
    messages from 0.
    """

    conversation: list[Message]
    turn: int
    traits: tuple[str, ...]
    layers: dict[str, int]
    projections: dict[str, float]
    z: dict[str, float]
    target: dict[str, float]


@dataclass(frozen=True)
class PolicyDecision:
    """Adjustments in ``[-1, 1]`` per trait (missing traits: 0) and why."""

    adjustments: dict[str, float]
    rationale: str = ""


@runtime_checkable
class Policy(Protocol):
    """Decides the adjustments of a turn. ``needs_baseline``: z-scores must be calibrated."""

    name: str
    needs_baseline: bool

    def decide(self, context: PolicyContext) -> PolicyDecision: ...


class ProjectionPolicy:
    """Offline: coefficients proportional to the gap between target and measured z-score.

    ``a = clip((τ · target_sd - z) / target_sd, -1, 1)`` per trait with a target ``τ`` (see the
    module doc); traits without a target get 0, as do ``|a| < deadband``. With ``one_sided``, an
    adjustment whose sign opposes a non-zero target is 0 (the target is a floor/ceiling).
    """

    name = "projection"
    needs_baseline = True

    def __init__(
        self,
        target_sd: Number = DEFAULT_TARGET_SD,
        deadband: Number = 0.0,
        one_sided: bool = False,
    ) -> None:
        if not math.isfinite(target_sd) or target_sd <= 0:
            raise PersonaLensError(f"target_sd must be a positive number, got {target_sd}")
        if not 0 <= deadband < 1:
            raise PersonaLensError(f"deadband must be in [0, 1), got {deadband}")
        self.target_sd = float(target_sd)
        self.deadband = float(deadband)
        self.one_sided = bool(one_sided)

    def __repr__(self) -> str:
        return (
            f"ProjectionPolicy(target_sd={self.target_sd}, deadband={self.deadband}, "
            f"one_sided={self.one_sided})"
        )

    def adjustment(self, z: float, target: float) -> tuple[float, float]:
        """(adjustment, gap in standard deviations) for one trait."""
        gap = target * self.target_sd - z
        a = max(-1.0, min(1.0, gap / self.target_sd))
        if abs(a) < self.deadband or (self.one_sided and a * target < 0):
            a = 0.0
        return a, gap

    def decide(self, context: PolicyContext) -> PolicyDecision:
        adjustments: dict[str, float] = {}
        notes = []
        for trait in context.traits:
            if trait not in context.target:
                continue
            z = context.z[trait]
            if not math.isfinite(z):
                raise PersonaLensError(
                    f"the projection policy needs a baseline z-score for {trait!r}; calibrate "
                    "the steerer (steerer.calibrate()) or pass baselines="
                )
            tau = context.target[trait]
            a, gap = self.adjustment(z, tau)
            adjustments[trait] = a
            clipped = " (clipped)" if abs(gap / self.target_sd) > 1 else ""
            notes.append(
                f"{trait}: z={z:+.2f}, target {tau:+.2f} (z*={tau * self.target_sd:+.2f}), "
                f"gap {gap:+.2f} sd -> adjustment {a:+.2f}{clipped}"
            )
        rationale = "; ".join(notes) if notes else "no target: nothing steered"
        return PolicyDecision(adjustments, rationale)


class LLMPolicy:
    """An LLM (OpenAI-compatible API) predicts the adjustments from the conversation.

    ``config`` defaults to :meth:`personalens.judges.openai_client.APIConfig.from_env` (with
    ``overrides``); ``descriptions`` are one-line trait descriptions given to the LLM (default:
    the shipped trait files' descriptions, where a trait name matches one). ``use_target``
    passes the steerer's target persona on to the LLM as guidance.
    """

    name = "llm"
    needs_baseline = False

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        descriptions: Mapping[str, str] | None = None,
        use_target: bool = True,
        **overrides: Any,
    ) -> None:
        self.config = config if config is not None else APIConfig.from_env(**overrides)
        self.descriptions = dict(descriptions) if descriptions is not None else None
        self.use_target = use_target

    def __repr__(self) -> str:
        return f"LLMPolicy(model={self.config.model!r}, base_url={self.config.url!r})"

    def _descriptions(self, traits: Sequence[str]) -> dict[str, str]:
        if self.descriptions is not None:
            return self.descriptions
        shipped = set(list_traits())
        return {t: load_trait(t).description for t in traits if t in shipped}

    def decide(self, context: PolicyContext) -> PolicyDecision:
        adjustments, rationale = predict_trait_adjustments(
            context.conversation,
            list(context.traits),
            config=self.config,
            target=context.target if (self.use_target and context.target) else None,
            descriptions=self._descriptions(context.traits),
        )
        return PolicyDecision(adjustments, rationale)


class SchedulePolicy:
    """Fixed adjustments per turn: ``schedule[turn]`` is ``{trait: adjustment}`` (for experiments)."""

    name = "schedule"
    needs_baseline = False

    def __init__(self, schedule: Sequence[Mapping[str, Number]]) -> None:
        if isinstance(schedule, Mapping) or not len(schedule):
            raise PersonaLensError(
                "a schedule is a non-empty list of {trait: adjustment} mappings, one per turn"
            )
        self.schedule = [dict(s) for s in schedule]

    def __repr__(self) -> str:
        return f"SchedulePolicy({len(self.schedule)} turns)"

    def decide(self, context: PolicyContext) -> PolicyDecision:
        if context.turn >= len(self.schedule):
            raise PersonaLensError(
                f"the schedule has {len(self.schedule)} turns but turn {context.turn} was asked; "
                "give one {trait: adjustment} mapping per turn"
            )
        return PolicyDecision(
            {k: float(v) for k, v in self.schedule[context.turn].items()},
            f"schedule turn {context.turn}",
        )


class CallablePolicy:
    """``fn(context)`` returns ``{trait: adjustment}`` or a :class:`PolicyDecision`."""

    name = "callable"

    def __init__(
        self,
        fn: Callable[[PolicyContext], Mapping[str, Number] | PolicyDecision],
        needs_baseline: bool = False,
    ) -> None:
        self.fn = fn
        self.needs_baseline = needs_baseline

    def __repr__(self) -> str:
        return f"CallablePolicy({getattr(self.fn, '__name__', self.fn)!r})"

    def decide(self, context: PolicyContext) -> PolicyDecision:
        out = self.fn(context)
        if isinstance(out, PolicyDecision):
            return out
        if not isinstance(out, Mapping):
            raise PersonaLensError(
                f"a policy callable must return {{trait: adjustment}} or a PolicyDecision, got "
                f"{type(out).__name__}"
            )
        return PolicyDecision({k: float(v) for k, v in out.items()}, "callable policy")


def make_policy(policy: Any, **kwargs: Any) -> Policy:
    """A policy from ``"projection"``, ``"llm"``, a schedule list, a callable or a policy."""
    if isinstance(policy, str):
        if policy == "projection":
            return ProjectionPolicy(**kwargs)
        if policy == "llm":
            return LLMPolicy(**kwargs)
        raise PersonaLensError(
            f"unknown policy {policy!r}: use 'projection', 'llm', a list of "
            "{trait: adjustment} mappings (one per turn), a callable or a policy object"
        )
    if kwargs:
        raise PersonaLensError(
            f"policy options {sorted(kwargs)} only apply to policy='projection' or 'llm'"
        )
    if isinstance(policy, Policy):
        return policy
    if callable(policy):
        return CallablePolicy(policy)
    if isinstance(policy, Sequence):
        return SchedulePolicy(policy)
    raise PersonaLensError(f"cannot make a policy from {type(policy).__name__}")

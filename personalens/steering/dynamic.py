"""Dynamic steering (predict-then-steer): before each assistant turn, decide and steer.

::

    steerer = DynamicSteerer(model, {"evil": evil_vec, "compassionate": comp_vec},
                             policy="projection", target={"evil": -1.0, "compassionate": 0.5})
    turn = steerer.respond([{"role": "user", "content": "My neighbour is so annoying."}])
    turn.reply, turn.coefficients          # {'evil': -4.0, 'compassionate': 1.7}
    chat = steerer.chat(["Hi!", "I failed my exam.", "What should I do now?"])
    chat.to_frame()                        # one row per turn: reply, projection/z/adjustment/coeff per trait

Each turn has three steps:

1. **Measure** (unsteered): the last-prompt-token projection of the conversation onto each
   trait's unit vector at the trait's layer (:func:`personalens.studies.monitoring.last_prompt_projection`,
   the Persona Vectors monitoring signal), and, when baselines are calibrated, its z-score
   ``z = (p - mean) / std`` against the projections of neutral prompts
   (:data:`personalens.steering.steer.REFERENCE_PROMPTS` by default, same layer, same token).
2. **Decide**: the policy returns an *adjustment* ``a_t`` in ``[-1, 1]`` per trait (0 = leave
   the trait alone) and a rationale. The coefficient is ``c_t = a_t * max_coeff_t``, in the units
   of ``coeff_scale`` (``"raw"`` multiples of the vector by default, as in :func:`steer`).
3. **Steer**: one :func:`~personalens.steering.steer.plan_steering` plan per trait with ``c_t != 0``
   (each at its own layer; two traits may share a layer, their additions then sum), all attached
   together with :func:`~personalens.steering.steer.apply_plan` in one ``contextlib.ExitStack`` while
   the reply is generated, and removed afterwards (also on errors). A turn whose coefficients are
   all 0 is generated with no hook at all, so it equals unsteered generation.

Policies (``policy=``):

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
  (:func:`personalens.judges.openai_api.predict_trait_adjustments`; validated, malformed replies raise).
* a list of ``{trait: adjustment}`` mappings, one per turn (:class:`SchedulePolicy`), or a
  callable ``f(context) -> {trait: adjustment}`` (:class:`CallablePolicy`), for experiments.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from personalens.errors import PersonaLensError
from personalens.model.chat import Message, as_conversation

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.judges.openai_api import APIConfig
    from personalens.model.generation import GenerationConfig
    from personalens.vectors.vector import PersonaVector

__all__ = [
    "CallablePolicy",
    "DynamicChat",
    "DynamicSteerer",
    "LLMPolicy",
    "PolicyContext",
    "PolicyDecision",
    "ProjectionPolicy",
    "SchedulePolicy",
    "TurnResult",
    "make_policy",
]

Number = float | int
DEFAULT_MAX_COEFF = 4.0
DEFAULT_TARGET_SD = 2.0


# ----------------------------------------------------------------------------- policies


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

    ``config`` defaults to :meth:`personalens.judges.openai_api.APIConfig.from_env` (with
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
        from personalens.judges.openai_api import APIConfig

        self.config = config if config is not None else APIConfig.from_env(**overrides)
        self.descriptions = dict(descriptions) if descriptions is not None else None
        self.use_target = use_target

    def __repr__(self) -> str:
        return f"LLMPolicy(model={self.config.model!r}, base_url={self.config.url!r})"

    def _descriptions(self, traits: Sequence[str]) -> dict[str, str]:
        if self.descriptions is not None:
            return self.descriptions
        from personalens.extraction.traits import list_traits, load_trait

        shipped = set(list_traits())
        return {t: load_trait(t).description for t in traits if t in shipped}

    def decide(self, context: PolicyContext) -> PolicyDecision:
        from personalens.judges.openai_api import predict_trait_adjustments

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


# ----------------------------------------------------------------------------- results


def _clean(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


@dataclass(frozen=True)
class TurnResult:
    """One dynamically steered turn: the reply, what was measured, decided and applied.

    ``coefficients[t] = adjustments[t] * max_coeff[t]`` in ``coeff_scale`` units, applied at
    ``layers[t]``; ``projections``/``z`` were measured on the unsteered prompt before the turn.
    """

    turn: int
    user: str
    reply: str
    coefficients: dict[str, float]
    adjustments: dict[str, float]
    projections: dict[str, float]
    z: dict[str, float]
    target: dict[str, float]
    layers: dict[str, int]
    rationale: str
    policy: str
    coeff_scale: str
    finish_reason: str
    conversation: list[Message] = field(default_factory=list)

    @property
    def steered(self) -> bool:
        """Whether any trait had a non-zero coefficient."""
        return any(c != 0 for c in self.coefficients.values())

    def to_frame(self) -> pd.DataFrame:
        """One row per trait: layer, projection, z, target, adjustment, coefficient."""
        import pandas as pd

        rows = [
            {
                "turn": self.turn,
                "trait": t,
                "layer": self.layers[t],
                "projection": self.projections[t],
                "z": self.z[t],
                "target": self.target.get(t, math.nan),
                "adjustment": self.adjustments[t],
                "coeff": self.coefficients[t],
            }
            for t in self.layers
        ]
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN as ``None``)."""
        return {
            "turn": self.turn,
            "user": self.user,
            "reply": self.reply,
            "coefficients": self.coefficients,
            "adjustments": self.adjustments,
            "projections": {k: _clean(v) for k, v in self.projections.items()},
            "z": {k: _clean(v) for k, v in self.z.items()},
            "target": self.target,
            "layers": self.layers,
            "rationale": self.rationale,
            "policy": self.policy,
            "coeff_scale": self.coeff_scale,
            "finish_reason": self.finish_reason,
        }


@dataclass(frozen=True)
class DynamicChat:
    """A scripted multi-turn run: the turns and the whole transcript (replies included)."""

    turns: tuple[TurnResult, ...]
    messages: list[Message]

    def __len__(self) -> int:
        return len(self.turns)

    def to_frame(self) -> pd.DataFrame:
        """One row per turn: user, reply, and per trait ``coeff_``/``projection_``/``z_``/``target_``."""
        import pandas as pd

        rows = []
        for t in self.turns:
            row: dict[str, Any] = {
                "turn": t.turn,
                "user": t.user,
                "reply": t.reply,
                "policy": t.policy,
                "rationale": t.rationale,
            }
            for trait in t.layers:
                row[f"coeff_{trait}"] = t.coefficients[trait]
                row[f"adjustment_{trait}"] = t.adjustments[trait]
                row[f"projection_{trait}"] = t.projections[trait]
                row[f"z_{trait}"] = t.z[trait]
                row[f"target_{trait}"] = t.target.get(trait, math.nan)
            rows.append(row)
        return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- the steerer


def _check_target(target: Mapping[str, Any] | None, traits: Sequence[str]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in (target or {}).items():
        if k not in traits:
            raise PersonaLensError(
                f"target names trait {k!r} but the steerer has vectors for {list(traits)}; "
                "add its vector or drop it from the target"
            )
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise PersonaLensError(f"target level for {k!r} must be a number, got {v!r}")
        if not -1.0 <= float(v) <= 1.0:
            raise PersonaLensError(
                f"target level for {k!r} is {v}; levels are in [-1, 1] (-1: suppress the "
                "trait, +1: express it strongly)"
            )
        out[k] = float(v)
    return out


def _per_trait(name: str, value: Any, traits: Sequence[str]) -> dict[str, Any]:
    if isinstance(value, Mapping):
        missing = [t for t in traits if t not in value]
        unknown = [k for k in value if k not in traits]
        if missing or unknown:
            raise PersonaLensError(
                f"{name} must give a value for each trait {list(traits)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
                + " (or give one value for all)"
            )
        return {t: value[t] for t in traits}
    return {t: value for t in traits}


class DynamicSteerer:
    """Predict-then-steer over a multi-turn conversation (see the module doc).

    Args:
        vectors: ``{trait name: PersonaVector}``.
        layers: one layer for all traits, ``{trait: layer}``, or ``None`` for each vector's
            recorded ``best_layer`` (an error if a vector records none).
        policy: ``"projection"`` (default), ``"llm"``, a schedule list, a callable or a policy
            object; ``policy_options`` go to the policy's constructor (``target_sd``,
            ``deadband`` / ``config``, ``descriptions``).
        target: the default target persona ``{trait: level in [-1, 1]}``; ``respond(target=)``
            overrides it per turn.
        max_coeff: the coefficient at adjustment ±1, one number or ``{trait: number}``, in
            ``coeff_scale`` units (``"raw"``, ``"unit"`` or ``"resid"``, as in :func:`steer`).
        positions: steered positions during the reply (default ``"response"``: the last prompt
            token and every generated token).
        generation: the :class:`~personalens.GenerationConfig` of every reply (default greedy,
            128 tokens).
        baselines: ``{trait: (mean, std)}`` of neutral projections; default: calibrated on
            ``reference`` prompts (:data:`~personalens.steering.steer.REFERENCE_PROMPTS`) when a policy
            needs z-scores, or when :meth:`calibrate` is called.
        system: a system prompt put in front of conversations that have none.
    """

    def __init__(
        self,
        model: HookedTransformer,
        vectors: Mapping[str, PersonaVector],
        *,
        layers: int | Mapping[str, int] | None = None,
        policy: Any = "projection",
        target: Mapping[str, Number] | None = None,
        max_coeff: Number | Mapping[str, Number] = DEFAULT_MAX_COEFF,
        coeff_scale: str = "raw",
        positions: str = "response",
        generation: GenerationConfig | None = None,
        baselines: Mapping[str, Sequence[Number]] | None = None,
        reference: Sequence[str] | None = None,
        system: str | None = None,
        policy_options: Mapping[str, Any] | None = None,
    ) -> None:
        from personalens.conventions import check_layer
        from personalens.model.generation import GenerationConfig
        from personalens.steering.steer import COEFF_SCALES, POSITIONS
        from personalens.vectors.vector import PersonaVector

        if not isinstance(vectors, Mapping) or not vectors:
            raise PersonaLensError("give vectors as a non-empty {trait name: PersonaVector} dict")
        for name, vec in vectors.items():
            if not isinstance(name, str) or not name:
                raise PersonaLensError(f"trait names must be non-empty strings, got {name!r}")
            if not isinstance(vec, PersonaVector):
                raise PersonaLensError(
                    f"vector {name!r} is a {type(vec).__name__}; give a PersonaVector "
                    "(PersonaVector.load(...) or personalens.cli.main._load_vector(run_dir, model))"
                )
            vec.check_compatible(model)
        if coeff_scale not in COEFF_SCALES:
            raise PersonaLensError(
                f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}"
            )
        if positions not in POSITIONS:
            raise PersonaLensError(f"unknown positions {positions!r}: use one of {POSITIONS}")
        self.model = model
        self.vectors = dict(vectors)
        self.traits = tuple(self.vectors)
        n_layers = model.cfg.n_layers
        resolved: dict[str, int] = {}
        for t, L in _per_trait("layers", layers, self.traits).items():
            if L is None:
                best = self.vectors[t].metadata.get("best_layer")
                if best is None:
                    raise PersonaLensError(
                        f"vector {t!r} records no best_layer: pass layers=L (one for all) or "
                        "layers={trait: L}"
                    )
                L = best
            resolved[t] = check_layer(int(L), n_layers)
        self.layers = resolved
        self.max_coeff: dict[str, float] = {}
        for t, c in _per_trait("max_coeff", max_coeff, self.traits).items():
            if (
                isinstance(c, bool)
                or not isinstance(c, int | float)
                or not math.isfinite(c)
                or c < 0
            ):
                raise PersonaLensError(f"max_coeff for {t!r} must be a number >= 0, got {c!r}")
            self.max_coeff[t] = float(c)
        self.coeff_scale = coeff_scale
        self.positions = positions
        self.policy = make_policy(policy, **dict(policy_options or {}))
        self.target = _check_target(target, self.traits)
        self.generation = replace(generation or GenerationConfig(), progress=False)
        self.reference = list(reference) if reference is not None else None
        self.system = system
        self.baselines: dict[str, tuple[float, float]] | None = None
        if baselines is not None:
            self.baselines = self._check_baselines(baselines)
        self._resid_norms = None

    def __repr__(self) -> str:
        return (
            f"DynamicSteerer(traits={list(self.traits)}, layers={self.layers}, "
            f"policy={self.policy!r}, max_coeff={self.max_coeff}, coeff_scale={self.coeff_scale!r})"
        )

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (for run provenance)."""
        import hashlib

        return {
            "traits": list(self.traits),
            "layers": self.layers,
            "vectors": {
                t: {
                    "trait": v.trait,
                    "model": v.model,
                    "sha256": hashlib.sha256(
                        v.directions.contiguous().numpy().tobytes()
                    ).hexdigest(),
                }
                for t, v in self.vectors.items()
            },
            "policy": repr(self.policy),
            "target": self.target,
            "max_coeff": self.max_coeff,
            "coeff_scale": self.coeff_scale,
            "positions": self.positions,
            "system": self.system,
            "baselines": self.baselines,
            "generation": {
                k: getattr(self.generation, k)
                for k in ("max_new_tokens", "temperature", "top_p", "seed")
            },
        }

    # ------------------------------------------------------------------ measuring

    def _check_baselines(self, baselines: Mapping[str, Sequence[Number]]) -> dict:
        out = {}
        for t in self.traits:
            if t not in baselines:
                raise PersonaLensError(f"baselines give no (mean, std) for trait {t!r}")
            mean, std = (float(x) for x in baselines[t])
            if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
                raise PersonaLensError(
                    f"baseline for {t!r} must be a finite mean and a std > 0, got {mean}, {std}"
                )
            out[t] = (mean, std)
        return out

    def calibrate(self, reference: Sequence[str] | None = None) -> dict[str, tuple[float, float]]:
        """Mean and std (n-1) of each trait's last-prompt projection over neutral prompts."""
        from personalens.steering.steer import REFERENCE_PROMPTS
        from personalens.studies.monitoring import last_prompt_projection

        prompts = list(reference or self.reference or REFERENCE_PROMPTS)
        if len(prompts) < 2:
            raise PersonaLensError("calibration needs at least 2 neutral prompts")
        out = {}
        for t in self.traits:
            L = self.layers[t]
            conv = [as_conversation(p, self.system) for p in prompts]
            values = last_prompt_projection(self.model, self.vectors[t], conv, layers=[L]).at(L)
            std = float(values.std())
            if not std > 0:
                raise PersonaLensError(
                    f"the neutral projections of {t!r} at layer {L} do not vary; give more "
                    "varied reference prompts"
                )
            out[t] = (float(values.mean()), std)
        self.baselines = out
        return out

    def project(self, conversation: Sequence[Message]) -> dict[str, float]:
        """Unsteered last-prompt-token projection of ``conversation`` per trait at its layer."""
        from personalens.studies.monitoring import last_prompt_projection

        out = {}
        for t in self.traits:
            L = self.layers[t]
            res = last_prompt_projection(self.model, self.vectors[t], [conversation], layers=[L])
            out[t] = float(res.at(L)[0])
        return out

    # ------------------------------------------------------------------ steering

    def _prepare(self, conversation: str | Sequence[Message]) -> list[Message]:
        system = self.system
        if (
            not isinstance(conversation, str)
            and conversation
            and conversation[0].get("role") == "system"
        ):
            system = None
        conv = as_conversation(conversation, system)
        if conv[-1]["role"] != "user":
            raise PersonaLensError(
                "the conversation must end with a user message (the assistant replies next)"
            )
        return conv

    def decide(
        self, conversation: str | Sequence[Message], *, target: Mapping[str, Number] | None = None
    ) -> tuple[PolicyContext, PolicyDecision, dict[str, float]]:
        """Measure and decide without generating: (context, decision, coefficients)."""
        conv = self._prepare(conversation)
        tgt = self.target if target is None else _check_target(target, self.traits)
        if self.baselines is None and self.policy.needs_baseline:
            self.calibrate()
        projections = self.project(conv)
        z = {}
        for t in self.traits:
            if self.baselines is None:
                z[t] = math.nan
            else:
                mean, std = self.baselines[t]
                z[t] = (projections[t] - mean) / std
        context = PolicyContext(
            conversation=conv,
            turn=sum(m["role"] == "user" for m in conv) - 1,
            traits=self.traits,
            layers=dict(self.layers),
            projections=projections,
            z=z,
            target=tgt,
        )
        decision = self.policy.decide(context)
        adjustments = self._check_adjustments(decision.adjustments)
        decision = PolicyDecision(adjustments, decision.rationale)
        coeffs = {t: adjustments[t] * self.max_coeff[t] for t in self.traits}
        return context, decision, coeffs

    def _check_adjustments(self, adjustments: Mapping[str, Any]) -> dict[str, float]:
        unknown = [k for k in adjustments if k not in self.traits]
        if unknown:
            raise PersonaLensError(
                f"the policy adjusted unknown trait(s) {unknown}; the steerer has {list(self.traits)}"
            )
        out = {}
        for t in self.traits:
            a = adjustments.get(t, 0.0)
            if isinstance(a, bool) or not isinstance(a, int | float) or not math.isfinite(a):
                raise PersonaLensError(f"the policy's adjustment for {t!r} is {a!r}, not a number")
            if not -1.0 <= a <= 1.0:
                raise PersonaLensError(
                    f"the policy's adjustment for {t!r} is {a}, outside [-1, 1]; adjustments "
                    "are fractions of max_coeff (raise max_coeff for stronger steering)"
                )
            out[t] = float(a) + 0.0  # -0.0 -> 0.0
        return out

    def plans(self, coefficients: Mapping[str, Number]) -> list:
        """One resolved :class:`~personalens.steering.steer.SteeringPlan` per trait with a non-zero
        coefficient, each at the trait's layer."""
        from personalens.steering.steer import plan_steering, residual_norms

        plans = []
        for t in self.traits:
            c = float(coefficients.get(t, 0.0))
            if c == 0.0:
                continue
            norms = None
            if self.coeff_scale == "resid":
                if self._resid_norms is None:
                    self._resid_norms = residual_norms(self.model, self.reference)
                norms = self._resid_norms
            plans.append(
                plan_steering(
                    self.model,
                    self.vectors[t],
                    c,
                    layers=[self.layers[t]],
                    positions=self.positions,
                    coeff_scale=self.coeff_scale,
                    resid_norms=norms,
                )
            )
        return plans

    @contextlib.contextmanager
    def steering(self, coefficients: Mapping[str, Number]):
        """Attach every non-zero trait's steering for the ``with`` block; all removed after."""
        from personalens.steering.steer import apply_plan

        with contextlib.ExitStack() as stack:
            plans = [
                stack.enter_context(apply_plan(self.model, p)) for p in self.plans(coefficients)
            ]
            yield plans

    def respond(
        self, conversation: str | Sequence[Message], *, target: Mapping[str, Number] | None = None
    ) -> TurnResult:
        """Measure, decide and generate the next assistant turn of ``conversation``.

        ``conversation`` is a user string or a message list ending with a user message;
        ``target`` overrides the steerer's target persona for this turn.
        """
        from personalens.model.generation import generate

        context, decision, coeffs = self.decide(conversation, target=target)
        conv = context.conversation
        with self.steering(coeffs):
            res = generate(self.model, [conv], self.generation)
        return TurnResult(
            turn=context.turn,
            user=conv[-1]["content"],
            reply=res.responses[0],
            coefficients=coeffs,
            adjustments=decision.adjustments,
            projections=context.projections,
            z=context.z,
            target=context.target,
            layers=dict(self.layers),
            rationale=decision.rationale,
            policy=self.policy.name,
            coeff_scale=self.coeff_scale,
            finish_reason=res.finish_reasons[0],
            conversation=conv,
        )

    def chat(
        self,
        turns: Sequence[str | Mapping[str, Any]],
        *,
        targets: Sequence[Mapping[str, Number] | None] | None = None,
        history: Sequence[Message] | None = None,
    ) -> DynamicChat:
        """A scripted multi-turn run: each user turn is answered by :meth:`respond`.

        ``turns`` are user strings or ``{"user": ..., "target": {...}}`` mappings (a per-turn
        target); ``targets`` gives one target (or ``None``: the steerer's) per turn instead.
        ``history`` is a conversation to continue. Each reply joins the history.
        """
        if isinstance(turns, str) or not turns:
            raise PersonaLensError("give a non-empty list of user turns")
        if targets is not None and len(targets) != len(turns):
            raise PersonaLensError(f"{len(targets)} targets for {len(turns)} turns: give one each")
        messages: list[Message] = [dict(m) for m in (history or [])]
        results = []
        for i, turn in enumerate(turns):
            target = targets[i] if targets is not None else None
            if isinstance(turn, Mapping):
                extra = set(turn) - {"user", "target"}
                if "user" not in turn or extra:
                    raise PersonaLensError(
                        f"turn {i} must be a string or {{'user': ..., 'target': {{...}}}}, "
                        f"got keys {sorted(turn)}"
                    )
                if turn.get("target") is not None:
                    target = turn["target"]
                user = turn["user"]
            else:
                user = turn
            if not isinstance(user, str) or not user.strip():
                raise PersonaLensError(f"turn {i}: the user message must be a non-empty string")
            messages.append({"role": "user", "content": user})
            result = self.respond(messages, target=target)
            results.append(result)
            messages = [dict(m) for m in result.conversation]
            messages.append({"role": "assistant", "content": result.reply})
        return DynamicChat(turns=tuple(results), messages=messages)

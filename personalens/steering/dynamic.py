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
   trait's unit vector at the trait's *monitoring* layer (default: the vector's
   ``best_layer``, where the trait is best read;
   :func:`personalens.studies.monitoring.last_prompt_projection`, the Persona Vectors
   monitoring signal), and, when baselines are calibrated, its z-score ``z = (p - mean) / std``
   against the projections of neutral prompts
   (:data:`personalens.steering.calibration.REFERENCE_PROMPTS` by default, same layer, same
   token).
2. **Decide**: the policy (:mod:`personalens.steering.policies`: ``"projection"``, ``"llm"``, a
   schedule or a callable) returns an *adjustment* ``a_t`` in ``[-1, 1]`` per trait (0 = leave
   the trait alone) and a rationale. The coefficient is ``c_t = a_t * max_coeff_t``, in the units
   of ``coeff_scale`` (``"raw"`` multiples of the vector by default, as in
   :func:`~personalens.steering.hooks.steer`).
3. **Steer**: one :func:`~personalens.steering.plan.plan_steering` plan per trait with
   ``c_t != 0``, each at the trait's *steering* layer (default: as :func:`~personalens.steer`
   with no ``layers``, the vector's recorded ``steering_layer``, else the middle layer; two
   traits may share a layer, their additions then sum),
   all attached together with :func:`~personalens.steering.hooks.apply_plan` in one
   ``contextlib.ExitStack`` while the reply is generated, and removed afterwards (also on
   errors). A turn whose coefficients are all 0 is generated with no hook at all, so it equals
   unsteered generation.

The turns are :class:`~personalens.steering.turns.TurnResult` values, a scripted chat a
:class:`~personalens.steering.turns.DynamicChat`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from personalens._io import digest
from personalens.errors import PersonaLensError
from personalens.model.chat import Message, as_conversation
from personalens.model.generation import GenerationConfig, generate
from personalens.steering.calibration import REFERENCE_PROMPTS, residual_norms
from personalens.steering.dynamic_args import (
    check_target,
    check_vectors,
    max_coeffs,
    resolve_monitor_layers,
    resolve_steering_layers,
)
from personalens.steering.edits import POSITIONS
from personalens.steering.hooks import apply_plan
from personalens.steering.plan import COEFF_SCALES, SteeringPlan, plan_steering
from personalens.steering.policies import PolicyContext, PolicyDecision, make_policy
from personalens.steering.turns import DynamicChat, TurnResult
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# personalens.studies.monitoring (the projection a turn is measured by) is imported where it is
# used: the studies package's face imports studies that import this module.

__all__ = ["DynamicSteerer"]

Number = float | int
DEFAULT_MAX_COEFF = 4.0


class DynamicSteerer:
    """Predict-then-steer over a multi-turn conversation (see the module doc).

    Args:
        vectors: ``{trait name: PersonaVector}``.
        layers: the steered layer: one for all traits, ``{trait: layer}``, or ``None`` for the
            default of :func:`~personalens.steer`: each vector's recorded ``steering_layer`` (a
            steering sweep's best cell), else the middle layer (``n_layers // 2``).
        monitor_layers: the layer each trait is measured at (its projection and z-score): one
            for all, ``{trait: layer}``, or ``None`` for each vector's recorded ``best_layer``
            (where the trait is best read, usually late), else its steering layer.
        policy: ``"projection"`` (default), ``"llm"``, a schedule list, a callable or a policy
            object; ``policy_options`` go to the policy's constructor (``target_sd``,
            ``deadband`` / ``config``, ``descriptions``).
        target: the default target persona ``{trait: level in [-1, 1]}``; ``respond(target=)``
            overrides it per turn.
        max_coeff: the coefficient at adjustment ±1, one number or ``{trait: number}``, in
            ``coeff_scale`` units (``"raw"``, ``"unit"`` or ``"resid"``, as in :func:`steer`).
        positions: steered positions while the reply is generated: ``"all"`` (default, as
            :func:`steer`: the conversation and every generated token) or ``"response"`` (the
            Persona Vectors choice: the last prompt token and every generated token).
        generation: the :class:`~personalens.GenerationConfig` of every reply (default greedy,
            128 tokens).
        baselines: ``{trait: (mean, std)}`` of neutral projections; default: calibrated on
            ``reference`` prompts (:data:`~personalens.steering.calibration.REFERENCE_PROMPTS`) when a policy
            needs z-scores, or when :meth:`calibrate` is called.
        system: a system prompt put in front of conversations that have none.
    """

    def __init__(
        self,
        model: HookedTransformer,
        vectors: Mapping[str, PersonaVector],
        *,
        layers: int | Mapping[str, int] | None = None,
        monitor_layers: int | Mapping[str, int] | None = None,
        policy: Any = "projection",
        target: Mapping[str, Number] | None = None,
        max_coeff: Number | Mapping[str, Number] = DEFAULT_MAX_COEFF,
        coeff_scale: str = "raw",
        positions: str = "all",
        generation: GenerationConfig | None = None,
        baselines: Mapping[str, Sequence[Number]] | None = None,
        reference: Sequence[str] | None = None,
        system: str | None = None,
        policy_options: Mapping[str, Any] | None = None,
    ) -> None:
        check_vectors(model, vectors)
        if coeff_scale not in COEFF_SCALES:
            raise PersonaLensError(
                f"unknown coeff_scale {coeff_scale!r}: use one of {COEFF_SCALES}"
            )
        if positions not in POSITIONS:
            raise PersonaLensError(f"unknown positions {positions!r}: use one of {POSITIONS}")
        self.model = model
        self.vectors = dict(vectors)
        self.traits = tuple(self.vectors)
        self.layers = resolve_steering_layers(model, self.vectors, layers)
        self.monitor_layers = resolve_monitor_layers(
            self.vectors, monitor_layers, self.layers, model.cfg.n_layers
        )
        self.max_coeff = max_coeffs(max_coeff, self.traits)
        self.coeff_scale = coeff_scale
        self.positions = positions
        self.policy = make_policy(policy, **dict(policy_options or {}))
        self.target = check_target(target, self.traits)
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
            f"monitor_layers={self.monitor_layers}, "
            f"policy={self.policy!r}, max_coeff={self.max_coeff}, coeff_scale={self.coeff_scale!r})"
        )

    def describe(self) -> dict[str, Any]:
        """The settings as a JSON-able dict (for run provenance)."""
        return {
            "traits": list(self.traits),
            "layers": self.layers,
            "monitor_layers": self.monitor_layers,
            "vectors": {
                t: {
                    "trait": v.trait,
                    "model": v.model,
                    "sha256": digest(v.directions.contiguous().numpy().tobytes()),
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
        """Mean and std (n-1) of each trait's last-prompt projection over neutral prompts, at
        its monitoring layer."""
        from personalens.studies.monitoring import last_prompt_projection

        prompts = list(reference or self.reference or REFERENCE_PROMPTS)
        if len(prompts) < 2:
            raise PersonaLensError("calibration needs at least 2 neutral prompts")
        out = {}
        for t in self.traits:
            L = self.monitor_layers[t]
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
        """Unsteered last-prompt-token projection of ``conversation`` per trait at its
        monitoring layer."""
        from personalens.studies.monitoring import last_prompt_projection

        out = {}
        for t in self.traits:
            L = self.monitor_layers[t]
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
        tgt = self.target if target is None else check_target(target, self.traits)
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

    def plans(self, coefficients: Mapping[str, Number]) -> list[SteeringPlan]:
        """One resolved :class:`~personalens.steering.plan.SteeringPlan` per trait with a non-zero
        coefficient, each at the trait's steering layer."""
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

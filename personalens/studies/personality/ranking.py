"""Multi-turn ranking: dynamically steered vs unsteered replies, compared pairwise by an LLM judge.

The stages, one module each:

* **Scenario files** (:mod:`personalens.studies.personality.scenarios`): user turns with a
  target persona per generated turn (the shipped set is ``"persona_shifts"``).
* **Running** (:func:`run_ranking`, here): each scenario is played twice, turn by turn: the
  *steered* arm answers with a :class:`~personalens.steering.dynamic.DynamicSteerer` (the
  turn's target passed as the steerer's target), the *unsteered* arm with the plain model, same
  generation settings (greedy by default). Each arm keeps its own replies as history (scripted
  turns are shared), so the comparison covers the conversation each arm actually had. Each
  generated turn gives a :class:`~personalens.studies.personality.turn_pairs.TurnPair`.
* **Judging** (:func:`~personalens.studies.personality.pairwise_judge.judge_pairs`): per turn
  pair a verdict A/B/tie per criterion, with a seeded per-comparison A/B order.
* **Statistics** (:class:`~personalens.studies.personality.ranking_result.RankingResult`): win
  rates with Wilson intervals, and the order balance of the judge.

``out=DIR`` makes a run resumable: ``config.json`` (scenarios, steerer, generation),
``responses.jsonl`` (one record per finished scenario), ``judge.json`` and ``verdicts.jsonl``
(one record per judged turn); a rerun skips finished work and refuses a directory made with
other settings.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens.errors import PersonaLensError
from personalens.model.chat import Message
from personalens.model.generation import GenerationConfig, generate
from personalens.runs.resume import run_resumable
from personalens.steering.dynamic import DynamicSteerer
from personalens.studies.personality.pairwise_judge import (
    PairwiseJudge,
    check_ranking_settings,
    judge_pairs,
)
from personalens.studies.personality.ranking_result import RankingResult
from personalens.studies.personality.scenarios import Scenario, ScenarioSet, load_scenarios
from personalens.studies.personality.turn_pairs import CRITERIA, TurnPair

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["run_ranking"]


def _play(model: HookedTransformer, scenario: Scenario, steerer: DynamicSteerer) -> list[TurnPair]:
    """Both arms of one scenario, turn by turn, each with its own history."""
    start: list[Message] = []
    system = scenario.system if scenario.system is not None else steerer.system
    if system is not None:
        start.append({"role": "system", "content": system})
    hist_s, hist_u = [dict(m) for m in start], [dict(m) for m in start]
    pairs = []
    for i, turn in enumerate(scenario.turns):
        user = {"role": "user", "content": turn.user}
        if not turn.generated:
            scripted = {"role": "assistant", "content": turn.assistant}
            hist_s += [user, scripted]
            hist_u += [user, dict(scripted)]
            continue
        result = steerer.respond([*hist_s, user], target=turn.target)
        plain = generate(model, [[*hist_u, user]], steerer.generation).responses[0]
        pairs.append(
            TurnPair(
                scenario=scenario.id,
                turn=i,
                user=turn.user,
                target=dict(turn.target or {}),
                steered=result.reply,
                unsteered=plain,
                history_steered=[dict(m) for m in hist_s],
                history_unsteered=[dict(m) for m in hist_u],
                coefficients=result.coefficients,
                rationale=result.rationale,
            )
        )
        hist_s += [user, {"role": "assistant", "content": result.reply}]
        hist_u += [dict(user), {"role": "assistant", "content": plain}]
    return pairs


def _steerer(
    model: HookedTransformer,
    steerer_or_vectors: DynamicSteerer | Mapping[str, PersonaVector],
    generation: GenerationConfig | None,
    steerer_kwargs: dict[str, Any],
) -> DynamicSteerer:
    """The steerer of the run: the one given (a copy when ``generation`` overrides its
    settings), or one built from vectors."""
    if isinstance(steerer_or_vectors, DynamicSteerer):
        if steerer_kwargs:
            raise PersonaLensError(
                f"steerer options {sorted(steerer_kwargs)} apply only when vectors are given"
            )
        steerer = steerer_or_vectors
        if steerer.model is not model:
            raise PersonaLensError("the steerer was built for another model object")
    else:
        steerer = DynamicSteerer(model, steerer_or_vectors, **steerer_kwargs)
    if generation is not None:
        steerer = copy.copy(steerer)  # the caller's steerer keeps its own settings
        steerer.generation = replace(generation, progress=False)
    return steerer


def run_ranking(
    model: HookedTransformer,
    scenarios: ScenarioSet | str | Path,
    steerer_or_vectors: DynamicSteerer | Mapping[str, PersonaVector],
    judge: PairwiseJudge | None = None,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    criteria: Sequence[str] = CRITERIA,
    generation: GenerationConfig | None = None,
    progress: bool = True,
    **steerer_kwargs: Any,
) -> RankingResult:
    """Play every scenario steered and unsteered, then judge each generated turn pairwise.

    Args:
        scenarios: a :class:`~personalens.studies.personality.scenarios.ScenarioSet`, a
            shipped set's name or a scenario file.
        steerer_or_vectors: a :class:`~personalens.steering.dynamic.DynamicSteerer`, or
            ``{trait: PersonaVector}`` to build one with ``steerer_kwargs`` (policy
            ``"projection"`` by default). Each turn's target is passed to the steerer.
        judge: a :class:`~personalens.studies.personality.pairwise_judge.PairwiseJudge` (e.g.
            :class:`~personalens.studies.personality.pairwise_judge.OpenAIPairwiseJudge`), or
            ``None`` to generate only (the result then has no verdicts; judge later with the
            same ``out``).
        out: run directory; makes the run resumable (see the module doc).
        seed: the A/B order seed.
        generation: generation settings of both arms (default: the steerer's; greedy).

    Every trait a target names must have a vector (``scenarios.restrict(traits)`` keeps the
    scenarios that use only those).
    """
    scenario_set = load_scenarios(scenarios)
    steerer = _steerer(model, steerer_or_vectors, generation, steerer_kwargs)
    missing = sorted(scenario_set.used_traits() - set(steerer.traits))
    if missing:
        raise PersonaLensError(
            f"the scenarios' targets name trait(s) {missing} with no vector in the steerer "
            f"({list(steerer.traits)}); add their vectors, or run "
            f"scenarios.restrict({list(steerer.traits)}) to keep the scenarios that use only "
            "those traits"
        )
    path = None
    if out is not None:
        run = Path(out)
        run.mkdir(parents=True, exist_ok=True)
        check_ranking_settings(
            run / "config.json",
            {
                "scenarios": scenario_set.name,
                "scenarios_sha256": scenario_set.sha256(),
                "model": getattr(model.cfg, "model_name", None),
                # baselines are left out: they follow from the vectors, model and reference
                # prompts, and are calibrated lazily (a float repr must not block a resume)
                "steerer": {k: v for k, v in steerer.describe().items() if k != "baselines"},
            },
            "generation",
        )
        path = run / "responses.jsonl"
    order = [s.id for s in scenario_set]
    done = run_resumable(
        list(scenario_set),
        lambda s: s.id,
        lambda chunk: [
            {"key": s.id, "pairs": [p.to_dict() for p in _play(model, s, steerer)]} for s in chunk
        ],
        path=path,
        chunk_size=1,
        desc="playing scenarios",
        progress=progress,
    )
    pairs = [TurnPair.from_dict(p) for sid in order for p in done[sid]["pairs"]]
    settings = {"scenarios": scenario_set.name, "steerer": steerer.describe()}
    if judge is None:
        return RankingResult(
            pairs=tuple(pairs), judgements=(), criteria=tuple(criteria), settings=settings
        )
    result = judge_pairs(pairs, judge, seed=seed, criteria=criteria, out=out, progress=progress)
    return replace(result, seed=seed, settings=settings)

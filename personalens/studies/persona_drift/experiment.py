"""Persona drift over multi-turn conversations, uncapped and under activation capping.

For every scenario conversation (:mod:`~personalens.studies.persona_drift.scenarios`), turn by
turn: the user's message (scripted, or an LLM playing the user), the model's reply (greedy by
default), the reply's mean projection on the axis at ``layer``
(:func:`~personalens.studies.persona_drift.projection.reply_projections`) and its coherence
(the judge's, 0-100). With ``capping`` the same conversations run again with the capping plan
attached to generation and measurement (the capped run's history holds its own replies), and
the capability proxy (:mod:`~personalens.studies.persona_drift.capability`) is measured with
and without it.

With ``out=DIR`` the run is resumable: ``settings.json``, ``capping.json`` (the calibrated
floors), ``turns.jsonl`` appended one batch of conversations per turn, then ``drift.json``
(the :class:`~personalens.studies.persona_drift.result.DriftResult`) and ``summary.json``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens._io import atomic_write_json, digest
from personalens.conventions import check_layer
from personalens.judges.base import Judge, JudgeItem
from personalens.judges.factory import make_judge
from personalens.model.chat import Message
from personalens.model.generation import GenerationConfig, generate
from personalens.results import json_safe
from personalens.runs.lock import holds_run_dir
from personalens.runs.resume import run_resumable
from personalens.runs.run_dir import open_run_dir
from personalens.steering.calibration import REFERENCE_PROMPTS
from personalens.steering.capping import CappingConfig, cap
from personalens.steering.resolve import default_steering_layer
from personalens.studies.persona_drift.capability import capability_cost
from personalens.studies.persona_drift.projection import reply_projections
from personalens.studies.persona_drift.result import DriftResult
from personalens.studies.persona_drift.scenarios import DriftScenario, load_drift_scenarios
from personalens.studies.persona_drift.simulated_user import User, make_user

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["axis_layer", "calibrate_capping", "persona_drift"]

DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0, batch_size=16)


def axis_layer(axis: PersonaVector, n_layers: int, layer: int | None = None) -> int:
    """``layer``, else the axis's recorded ``best_layer`` or ``layer``, else the middle layer."""
    if layer is None:
        layer = axis.metadata.get("best_layer", axis.metadata.get("layer"))
    return check_layer(
        int(layer if layer is not None else default_steering_layer(n_layers)), n_layers
    )


def calibrate_capping(
    model: HookedTransformer,
    axis: PersonaVector,
    config: CappingConfig | str,
    default_texts: Sequence[Any] | None = None,
    generation: GenerationConfig | None = None,
) -> CappingConfig:
    """``config`` with floors: as given, else calibrated on ``default_texts``, else on the
    plain model's own replies to the neutral reference prompts (the default assistant)."""
    if isinstance(config, str):
        config = CappingConfig.parse(config, model.cfg.n_layers)
    if config.floors is not None:
        return config
    if default_texts is None:
        gen = replace(generation or DEFAULT_GENERATION, progress=False)
        replies = generate(model, list(REFERENCE_PROMPTS), gen)
        default_texts = [(p, r) for p, r in zip(REFERENCE_PROMPTS, replies.responses) if r.strip()]
    return config.calibrate(model, axis, default_texts)


def _key(capped: bool, scenario: DriftScenario, turn: int) -> str:
    return f"{'capped' if capped else 'uncapped'}|{scenario.key}|{turn}"


def _history(records: dict[str, dict], capped: bool, scenario: DriftScenario, turn: int):
    messages: list[Message] = []
    for t in range(turn):
        r = records[_key(capped, scenario, t)]
        messages += [
            {"role": "user", "content": r["user"]},
            {"role": "assistant", "content": r["reply"]},
        ]
    return messages


def _run_turn(model, axis, chunk, turn, capped, ctx) -> list[dict[str, Any]]:
    """One turn of ``chunk`` conversations: user messages, replies, projections, coherence."""
    convs, users = [], []
    for s in chunk:
        history = _history(ctx["records"], capped, s, turn)
        users.append(ctx["user"].message(s, turn, history))
        convs.append([*history, {"role": "user", "content": users[-1]}])
    steering = cap(model, axis, ctx["capping"]) if capped else contextlib.nullcontext()
    with steering:
        gen = generate(model, convs, ctx["generation"])
        proj = reply_projections(model, axis, convs, gen.response_tokens, ctx["layer"])
    items = [JudgeItem(u, r) for u, r in zip(users, gen.responses)]
    coherence = ctx["judge"].score_coherence(items)
    return [
        {
            "key": _key(capped, s, turn),
            "kind": s.kind,
            "conversation": s.name,
            "turn": turn,
            "projection": proj[i],
            "reply": gen.responses[i],
            "capped": capped,
            "user": users[i],
            "coherence": coherence[i],
            "n_reply_tokens": len(gen.response_tokens[i]),
        }
        for i, s in enumerate(chunk)
    ]


def _settings(axis, layer, scenarios, capping, user, judge, gen) -> dict[str, Any]:
    return json_safe(
        {
            "axis": {
                "model": axis.model,
                "trait": axis.trait,
                "digest": digest(axis.directions.numpy().tobytes(), length=16),
            },
            "layer": layer,
            "capping": None
            if capping is None
            else (capping if isinstance(capping, str) else capping.spec()),
            "user": user.name,
            "judge": judge.name,
            "generation": asdict(replace(gen, progress=None)),
            "scenarios": [asdict(s) for s in scenarios],
        }
    )


def _capping(model, axis, capping, default_texts, gen, run: Path | None) -> CappingConfig:
    """The calibrated config, reused from ``capping.json`` of a resumed run."""
    saved = run / "capping.json" if run is not None else None
    if saved is not None and saved.is_file():
        return CappingConfig.from_dict(json.loads(saved.read_text(encoding="utf-8")))
    config = calibrate_capping(model, axis, capping, default_texts, gen)
    if saved is not None:
        atomic_write_json(saved, config.to_dict())
    return config


@holds_run_dir(shard=None)
def persona_drift(
    model: HookedTransformer,
    axis: PersonaVector,
    scenarios: Sequence[DriftScenario] | None = None,
    *,
    layer: int | None = None,
    capping: CappingConfig | str | None = None,
    default_texts: Sequence[Any] | None = None,
    user: str | User = "scripted",
    judge: Judge | str = "offline",
    generation: GenerationConfig | None = None,
    capability: bool = True,
    out: str | Path | None = None,
    progress: bool = True,
) -> DriftResult:
    """Run the drift experiment (see the module doc) and return a :class:`DriftResult`.

    Args:
        axis: the Assistant Axis (or any persona vector) as a ``PersonaVector``.
        scenarios: default: every shipped kind (:func:`load_drift_scenarios`).
        layer: where projections are read; default the axis's recorded layer, else the middle.
        capping: a :class:`CappingConfig` or an upstream id ``"layers_A:B-pP"``; floors not
            given are calibrated on ``default_texts`` (default-assistant replies), else on the
            plain model's replies to neutral prompts. ``None``: only the uncapped run.
        user: ``"scripted"`` (offline), ``"llm"`` (an OpenAI-compatible API) or a ``User``.
        judge: scores each reply's coherence (``"offline"``: distinct-trigram coherence).
        generation: default greedy, 64 new tokens, 16 conversations per batch.
        capability: with capping, also measure the answer log-likelihood cost.
        out: a run directory that makes the run resumable.
    """
    axis.check_compatible(model)
    scenarios = list(scenarios) if scenarios is not None else load_drift_scenarios()
    layer = axis_layer(axis, model.cfg.n_layers, layer)
    gen = replace(generation or DEFAULT_GENERATION, progress=False)
    user_obj = make_user(user)
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge
    settings = _settings(axis, layer, scenarios, capping, user_obj, judge_obj, gen)
    run = open_run_dir(
        out, settings, config_file="settings.json", what="a drift run",
        fix="Use a new out directory or the same settings.",
    )  # fmt: skip
    config = None if capping is None else _capping(model, axis, capping, default_texts, gen, run)
    ctx = {"records": {}, "user": user_obj, "judge": judge_obj, "generation": gen,
           "layer": layer, "capping": config}  # fmt: skip
    path = run / "turns.jsonl" if run is not None else None
    conditions = [False] if config is None else [False, True]  # uncapped, then capped
    for capped in conditions:
        for turn in range(max(len(s.turns) for s in scenarios)):
            items = [s for s in scenarios if turn < len(s.turns)]
            ctx["records"].update(
                run_resumable(
                    items,
                    lambda s, t=turn, c=capped: _key(c, s, t),
                    lambda chunk, t=turn, c=capped: _run_turn(model, axis, chunk, t, c, ctx),
                    path=path,
                    chunk_size=gen.batch_size,
                    desc=f"drift{' capped' if capped else ''} turn {turn + 1}",
                    progress=progress,
                    unit="conversation",
                )
            )
    keys = [_key(c, s, t) for c in conditions for s in scenarios for t in range(len(s.turns))]
    cost = capability_cost(model, axis, config) if config is not None and capability else None
    result = DriftResult(
        records=[{k: v for k, v in ctx["records"][key].items() if k != "key"} for key in keys],
        layer=layer,
        axis=settings["axis"],
        capping=None if config is None else config.to_dict(),
        user=user_obj.name,
        judge=judge_obj.name,
        capability=cost,
    )
    if run is not None:
        result.save(run / "drift.json")
        atomic_write_json(run / "summary.json", json_safe(result.summary()))
    return result

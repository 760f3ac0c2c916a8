"""Does the last-prompt-token projection predict how strongly the reply will show the trait?

The Persona Vectors paper's monitoring experiment, for any trait and model: build prompt
*conditions* that push the model toward or away from the trait --

* a **system-prompt spectrum** (:func:`system_prompt_spectrum`): the trait's suppressing
  instructions, "You are a <opposite> assistant.", no system prompt, "You are a <trait>
  assistant.", and the trait's promoting instructions;
* **many-shot prompts** (:func:`many_shot_conditions`): 0, 5, 10, 15, 20 earlier user/assistant
  turns whose replies display the trait (:func:`trait_examples` takes them from an extraction
  run: the positive side's highest-scored replies to *extraction* questions)

(:mod:`personalens.studies.monitoring_conditions`), then, for every condition and held-out
evaluation question, measure the projection of the last prompt token onto the unit vector
(before any token is generated, at every layer), generate the reply, and judge its trait score.
:func:`monitoring_experiment` returns a
:class:`~personalens.studies.monitoring_result.MonitoringResult` whose ``correlations()`` gives
Pearson r between projection and trait score over all points, between condition means, and
within each condition.

With ``out=DIR`` the run is resumable: ``settings.json``, then ``projections.jsonl``,
``responses.jsonl`` and ``judge_scores.jsonl`` appended chunk by chunk (one record per distinct
prompt, so the 0-shot condition and "no system prompt" share their work), and
``monitoring.json`` last.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from personalens._io import atomic_write_json, digest
from personalens.conventions import select_layers
from personalens.errors import PersonaLensError
from personalens.extraction.traits import Trait
from personalens.judges.base import Judge, judge_records
from personalens.judges.factory import make_judge
from personalens.model.chat import Message, encode_chat
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.results import json_safe
from personalens.runs.lock import holds_run_dir
from personalens.runs.resume import run_resumable
from personalens.runs.run_dir import open_run_dir
from personalens.studies.layer_selection import vector_layer
from personalens.studies.monitoring import last_prompt_projection
from personalens.studies.monitoring_conditions import MonitorCondition
from personalens.studies.monitoring_result import MonitoringResult
from personalens.studies.steering_sweep import resolve_trait

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["monitoring_experiment"]

DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0, batch_size=16)


def _key(conversation: list[Message]) -> str:
    return digest(json.dumps(conversation, sort_keys=True), algo="sha1", length=16)


@holds_run_dir()
def monitoring_experiment(
    model: HookedTransformer,
    vector: PersonaVector,
    conditions: Sequence[MonitorCondition],
    *,
    questions: Sequence[str] | None = None,
    trait: Trait | str | None = None,
    judge: Judge | str = "auto",
    layer: int | None = None,
    layers: Sequence[int] | str | None = None,
    generation: GenerationConfig | None = None,
    max_batch_tokens: int = 16384,
    out: str | Path | None = None,
    progress: bool = True,
) -> MonitoringResult:
    """Project, generate and judge every (condition, question); see the module docstring.

    Args:
        conditions: e.g. ``system_prompt_spectrum(trait) + many_shot_conditions(examples)``.
        questions: default: the trait's held-out evaluation questions.
        layer: the headline layer for :meth:`MonitoringResult.correlations`; default the
            vector's ``best_layer``. ``layers`` (default all) are measured too.
        generation: default greedy, 64 new tokens.
        max_batch_tokens: caps padded tokens per batch (long many-shot prompts).
        out: a run directory that makes the experiment resumable.
    """
    vector.check_compatible(model)
    trait_obj = resolve_trait(trait, vector)
    questions = list(questions if questions is not None else trait_obj.split_questions()[1])
    if not questions:
        raise PersonaLensError("no questions: give questions= or a trait with eval_questions")
    _check_conditions(conditions)
    headline = vector_layer(vector, model.cfg.n_layers, layer)
    layer_ids = list(select_layers(layers, model.cfg.n_layers))
    if headline not in layer_ids:
        layer_ids = sorted({*layer_ids, headline})
    gen = generation or DEFAULT_GENERATION
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge

    cells = [(c, qi, c.conversation(q)) for c in conditions for qi, q in enumerate(questions)]
    prompts: dict[str, list[Message]] = {}
    for _, _, conv in cells:
        prompts.setdefault(_key(conv), conv)
    settings = json_safe(
        {
            "trait": trait_obj.name,
            "vector": {"model": vector.model, "trait": vector.trait, "variant": vector.variant},
            "layers": layer_ids,
            "generation": asdict(replace(gen, progress=None)),
            "judge": judge_obj.name,
            "questions": questions,
            "conditions": [asdict(c) for c in conditions],
        }
    )
    run = open_run_dir(
        out,
        settings,
        config_file="settings.json",
        what="a monitoring run",
        fix="Use a new out directory or the same settings.",
    )
    lengths = {k: len(encode_chat(model.tokenizer, conv)) for k, conv in prompts.items()}
    order = sorted(prompts, key=lambda k: (-lengths[k], k))
    chunks = _length_chunks(order, lengths, gen.batch_size, max_batch_tokens)

    projections, responses = _project_and_generate(
        model, vector, prompts, chunks, layer_ids, gen, run, progress
    )
    judged = judge_records(
        [
            {"key": k, "question": prompts[k][-1]["content"], "response": responses[k]["response"]}
            for k in order
        ],
        trait_obj,
        judge_obj,
        path=run / "judge_scores.jsonl" if run else None,
        progress=progress,
    )
    stages = {"projections": projections, "responses": responses, "judged": judged}
    result = MonitoringResult(
        trait=trait_obj.name,
        layer=headline,
        layers=layer_ids,
        records=[
            _record(c, qi, questions[qi], _key(conv), lengths, stages) for c, qi, conv in cells
        ],
        settings=settings,
    )
    if run is not None:
        atomic_write_json(run / "monitoring.json", result.to_dict())
    return result


def _project_and_generate(
    model: HookedTransformer,
    vector: PersonaVector,
    prompts: dict[str, list[Message]],
    chunks: list[list[str]],
    layer_ids: list[int],
    gen: GenerationConfig,
    run: Path | None,
    progress: bool,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Last-prompt projections at ``layer_ids``, then the replies, of every prompt (by key)."""

    def project(chunk: list[str]) -> list[dict[str, Any]]:
        pp = last_prompt_projection(
            model,
            vector,
            [prompts[k] for k in chunk],
            layers=layer_ids,
            batch_size=len(chunk),
            max_batch_tokens=10**9,
        )
        return [{"key": k, "projections": pp.values[i].tolist()} for i, k in enumerate(chunk)]

    def gen_chunk(chunk: list[str]) -> list[dict[str, Any]]:
        res = generate_samples(
            model,
            [prompts[k] for k in chunk],
            [0] * len(chunk),
            replace(gen, batch_size=len(chunk), progress=False),
        )
        return [
            {"key": k, "response": r, "n_tokens": len(t)}
            for k, r, t in zip(chunk, res.responses, res.response_tokens)
        ]

    projections = _resumable_pass(chunks, project, run, "projections.jsonl", "projecting", progress)
    responses = _resumable_pass(chunks, gen_chunk, run, "responses.jsonl", "generating", progress)
    return projections, responses


def _record(
    c: MonitorCondition,
    qi: int,
    question: str,
    key: str,
    lengths: dict[str, int],
    stages: dict[str, dict[str, dict[str, Any]]],
) -> dict[str, Any]:
    """The record of question ``qi`` under condition ``c`` (prompt ``key``) from every stage."""
    return {
        "condition": c.name,
        "kind": c.kind,
        "level": c.level,
        "question_index": qi,
        "question": question,
        "n_prompt_tokens": lengths[key],
        "projections": stages["projections"][key]["projections"],
        "response": stages["responses"][key]["response"],
        "trait": stages["judged"][key]["trait"],
        "coherence": stages["judged"][key]["coherence"],
    }


def _check_conditions(conditions: Sequence[MonitorCondition]) -> None:
    if not conditions:
        raise PersonaLensError("no conditions: e.g. system_prompt_spectrum(trait)")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise PersonaLensError(f"condition names must be unique, got {names}")


def _length_chunks(
    keys: list[str], lengths: dict[str, int], batch_size: int, max_batch_tokens: int
) -> list[list[str]]:
    """``keys`` (longest prompt first) in batches of at most ``batch_size`` prompts and about
    ``max_batch_tokens`` padded tokens (the first prompt of a batch sets its width)."""
    out_chunks, i = [], 0
    while i < len(keys):
        size = max(1, min(batch_size, max_batch_tokens // max(lengths[keys[i]], 1)))
        out_chunks.append(keys[i : i + size])
        i += size
    return out_chunks


def _resumable_pass(
    chunks: list[list[str]],
    fn: Callable[[list[str]], list[dict[str, Any]]],
    run: Path | None,
    log: str,
    what: str,
    progress: bool,
) -> dict[str, dict[str, Any]]:
    """``fn`` over every chunk, one resumable pass per batch of similar length (each chunk is
    its own ``run_resumable`` call, which skips finished ones), with one progress bar."""
    store: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=sum(len(c) for c in chunks), desc=what, unit="prompt") if progress else None
    try:
        for chunk in chunks:
            store.update(
                run_resumable(
                    chunk,
                    lambda k: k,
                    fn,
                    path=run / log if run else None,
                    chunk_size=len(chunk),
                    desc=what,
                    progress=False,
                )
            )
            if bar is not None:
                bar.update(len(chunk))
    finally:
        if bar is not None:
            bar.close()
    return store

"""The persona space of a model and its Assistant Axis (Lu et al., 2026), resumable.

Stages (each chunked, logged in the run directory and skipped when finished on a rerun):

1. :func:`~personalens.extraction.responses.generate_responses` (extraction's resumable,
   shardable generation stage, sample 0 seeded from its conversation): one reply per (role,
   system prompt, shared question), the default's neutral prompts included
   (``responses.jsonl``);
2. the response-average activation of every reply at every layer (``activations/``, through
   :func:`~personalens.extraction.run_activations.collect_run_activations`, each reply read after
   its own system prompt and question);
3. :func:`~personalens.studies.persona_space.replies.judge_replies`: role adherence 0-3 of
   every role reply (``adherence.jsonl``; :mod:`~personalens.studies.persona_space.adherence`);
4. role vectors (score-3 replies, a documented fallback), the default vector, the axis
   ``default - mean(roles)`` (:mod:`~personalens.studies.persona_space.role_vectors`);
5. PCA of the role vectors at every layer (:mod:`~personalens.studies.persona_space.pca`).

Artifacts (worker 0 of a sharded run writes them): ``axis.safetensors`` + ``axis.json`` (load
``DIR/axis`` with :meth:`PersonaVector.load`), ``axis.pt`` (upstream's file, row L = layer L),
``role_vectors.safetensors``, ``coordinates.csv`` (every role's PC1-PC3 coordinates and axis
projection per layer) and ``summary.json``: ``pc1_axis_cosine``, ``pc1_explained_variance``
and ``default_pc1_rank`` (one value per layer), the roles used, replies per role, the rule
each role vector used, the adherence score counts and timings.

``shard="i/n"``: workers share the directory as in extraction (:mod:`personalens.runs.sharding`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors.torch import save as safetensors_bytes

from personalens._io import (
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    check_run_config,
    digest,
)
from personalens.engines.hf import resolve_backend
from personalens.errors import ArgumentError
from personalens.extraction.responses import generate_responses
from personalens.extraction.run_activations import collect_run_activations
from personalens.runs.lock import holds_run_dir
from personalens.runs.sharding import Shard, is_leader, resolve_shard
from personalens.studies.persona_space.adherence import adherence_judge, check_adherence_judge
from personalens.studies.persona_space.axis_file import AXIS_METHOD, AXIS_TRAIT, save_axis_pt
from personalens.studies.persona_space.config import GENERATION_FIELDS, PersonaSpaceConfig
from personalens.studies.persona_space.pca import persona_pca
from personalens.studies.persona_space.replies import build_jobs, judge_replies
from personalens.studies.persona_space.result import PersonaSpaceResult
from personalens.studies.persona_space.role_vectors import compute_axis, mean_vector, role_vectors
from personalens.studies.persona_space.roles import Role, load_questions, load_roles
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

DEFAULTS = PersonaSpaceConfig()


@holds_run_dir("out")
def persona_space(
    model: HookedTransformer,
    out: str | Path | None = None,
    roles: Any = None,
    max_roles: int | None = DEFAULTS.max_roles,
    max_questions: int = DEFAULTS.max_questions,
    judge: Any = "auto",
    *,
    questions: str | Path | list[str] | None = None,
    progress: bool = True,
    backend: str = "auto",
    shard: Shard | str | None = None,
    **settings: Any,
) -> PersonaSpaceResult:
    """Role vectors, the Assistant Axis and the PCA of the persona space of ``model``.

    ``roles``: ``None`` (the shipped roles), a folder of role files (upstream's
    ``data/roles/instructions`` loads unchanged) or a list of role names/files; ``max_roles``
    of them (``None``: all), spread over the categories. ``max_questions``: shared questions
    per system prompt (``questions``: a question file or list; default the shipped 40).
    ``judge``: ``"auto"``, ``"offline"`` (a documented approximation), ``"openai"``, a
    personalens judge or an adherence scorer. ``settings``: the other
    :class:`~personalens.studies.persona_space.config.PersonaSpaceConfig` fields
    (``n_prompts``, ``min_score``, ``fallback_score``, ``generation`` ...) and the generation
    settings ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``batch_size``. With ``out`` the run is
    resumable and writes its artifacts there; ``shard="i/n"`` makes this process one of n
    workers sharing ``out``.
    """
    config = _config(max_roles, max_questions, settings)
    worker = resolve_shard(shard)
    if worker is not None and out is None:
        raise ArgumentError("shard= needs an out directory shared by the workers")
    default, chosen = load_roles(roles, config.max_roles)
    qs = list(questions) if isinstance(questions, list) else load_questions(questions)
    run = Path(out) if out is not None else None  # made and locked by @holds_run_dir
    backend = resolve_backend(model, backend)
    scorer = adherence_judge(judge, default)
    model_name = model.cfg.model_name
    identity = _run_config(model_name, scorer.name, default, chosen, qs, config)
    if run:  # refuse a directory made with other settings before anything slow
        _bind(run, identity, write=False)
    check_adherence_judge(scorer, chosen[0])
    if run:
        _bind(run, identity, write=True)

    records, response, scores, timings = _stages(
        model, default, chosen, qs, config, scorer, run, progress, backend, worker
    )
    result = _assemble(model_name, scorer.name, config, default, chosen, records, response, scores)
    result.summary["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    result = dataclasses.replace(result, run_dir=run)
    if run and is_leader(worker):
        _write(run, result)
    return result


def _stages(model, default, chosen, qs, config, scorer, run, progress, backend, worker):
    """Generate, read activations, judge: ``(records, {key: [n_layers, d_model]}, scores,
    timings)``."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ext = config.extraction_config()
    jobs = build_jobs(default, chosen, qs, config, model.cfg.model_name)
    records = generate_responses(model, jobs, ext, run, progress, backend=backend, shard=worker)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with_tokens = [r for r in records if r["response_tokens"]]
    acts = collect_run_activations(
        model, with_tokens, ext, run, progress, backend=backend, shard=worker
    )
    response = {k: a.response_avg[0] for k, a in acts.items()}
    timings["activations_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    by_name = {r.name: r for r in chosen}
    scores = judge_replies(records, by_name, scorer, config, run, progress, shard=worker)
    timings["judge_s"] = time.perf_counter() - t0
    return records, response, scores, timings


def _assemble(
    model_name: str,
    judge: str,
    config: PersonaSpaceConfig,
    default: Role,
    chosen: list[Role],
    records: list[dict[str, Any]],
    response: dict[str, Any],
    scores: dict[str, float],
) -> PersonaSpaceResult:
    """Role vectors, the default vector, the axis, the PCA and the summary."""
    keys: dict[str, list[str]] = {r.name: [] for r in [default, *chosen]}
    for r in records:
        keys[r["role"]].append(r["key"])
    rv = role_vectors(
        response,
        {r.name: keys[r.name] for r in chosen},
        scores,
        min_score=config.min_score,
        fallback=config.fallback_score,
    )
    default_vec = mean_vector(response, keys[default.name])
    axis_t = compute_axis(default_vec, rv.vectors)
    n_default = sum(1 for k in keys[default.name] if k in response)
    axis = PersonaVector(
        directions=axis_t,
        model=model_name,
        trait=AXIS_TRAIT,
        method=AXIS_METHOD,
        variant="response_avg",
        n_pos=n_default,
        n_neg=sum(rv.n_replies),
        judge=judge,
        metadata={"roles": list(rv.names), "n_roles": len(rv), **_rule_meta(config)},
    )
    pca = tuple(persona_pca(rv.vectors, default_vec, axis_t))
    norms = axis_t.norm(dim=-1).tolist()
    summary = _summary(model_name, judge, config, rv, pca, records, scores, norms)
    summary["n_default_replies"] = n_default
    parts = (rv.names, rv.vectors, default_vec, pca, summary, records, scores)
    return PersonaSpaceResult(axis, *parts)


def _config(max_roles: int | None, max_questions: int, settings: dict) -> PersonaSpaceConfig:
    """The config of ``persona_space``'s keywords: PersonaSpaceConfig fields, and the
    GenerationConfig fields ``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
    ``batch_size`` (applied to ``generation``)."""
    own = {f.name for f in fields(PersonaSpaceConfig)} - {"max_roles", "max_questions"}
    unknown = sorted(set(settings) - own - set(GENERATION_FIELDS))
    if unknown:
        raise ArgumentError(
            f"persona_space got unknown setting(s) {unknown}; the settings are "
            f"{', '.join(sorted(own | set(GENERATION_FIELDS)))} (see PersonaSpaceConfig)"
        )
    gen = {k: settings.pop(k) for k in GENERATION_FIELDS if k in settings}
    config = PersonaSpaceConfig(max_roles=max_roles, max_questions=max_questions, **settings)
    return replace(config, generation=replace(config.generation, **gen)) if gen else config


def _run_config(
    model_name: str,
    judge: str,
    default: Role,
    roles: list[Role],
    questions: list[str],
    config: PersonaSpaceConfig,
) -> dict[str, Any]:
    """What ``config.json`` binds a run directory to (backend and shard are not in it)."""
    files = {r.name: [list(r.instructions), r.eval_prompt] for r in [default, *roles]}
    return {
        "study": "persona_space",
        "model": model_name,
        "judge": judge,
        "roles": [r.name for r in roles],
        "roles_digest": digest(json.dumps(files, sort_keys=True), length=16),
        "questions": questions[: config.max_questions],
        "config": json.loads(json.dumps(asdict(config))),
    }


def _bind(run: Path, identity: dict[str, Any], *, write: bool) -> None:
    check_run_config(
        run / "config.json",
        identity,
        what="a persona-space run",
        fix="Resume with the same settings, or pass a new --out directory.",
        write=write,
    )


def _rule_meta(config: PersonaSpaceConfig) -> dict[str, Any]:
    return {"min_score": config.min_score, "fallback_score": config.fallback_score}


def _summary(model_name, judge, config, rv, pca, records, scores, axis_norms) -> dict[str, Any]:
    report = len(pca) // 2
    counts = Counter("nan" if math.isnan(s) else str(int(s)) for s in scores.values())
    return {
        "model": model_name,
        "judge": judge,
        "n_roles": len(rv),
        "roles": list(rv.names),
        "roles_dropped": rv.dropped,
        "n_replies": len(records),
        "n_replies_per_role": dict(zip(rv.names, rv.n_replies)),
        "vector_rule": dict(zip(rv.names, rv.rules)),
        "n_roles_fallback": sum(1 for r in rv.rules if not r.startswith("score=")),
        "adherence_counts": {k: counts.get(k, 0) for k in ("0", "1", "2", "3", "nan")},
        "layers": [p.layer for p in pca],
        "pc1_axis_cosine": [round(p.pc1_axis_cosine, 4) for p in pca],
        "pc1_explained_variance": [round(p.explained_variance_ratio[0], 4) for p in pca],
        "default_pc1_rank": [p.default_pc1_rank for p in pca],
        "explained_variance_ratio": [
            [round(v, 4) for v in p.explained_variance_ratio] for p in pca
        ],
        "axis_norm": [round(float(n), 4) for n in axis_norms],
        "report_layer": report,
        "config": json.loads(json.dumps(asdict(config))),
    }


def _write(run: Path, result: PersonaSpaceResult) -> None:
    axis, roles, default_vec = result.axis, result.role_vectors, result.default_vector
    n_default = result.summary["n_default_replies"]
    axis.save(run / "axis")
    save_axis_pt(
        run / "axis.pt",
        axis,
        default_mean=default_vec,
        role_mean=roles.mean(0),
        n_default=n_default,
        n_roles=len(result.role_names),
    )
    meta = {"roles": json.dumps(list(result.role_names)), "layer_convention": "resid_post"}
    tensors = {"role_vectors": roles.contiguous(), "default": default_vec.contiguous()}
    atomic_write_bytes(run / "role_vectors.safetensors", safetensors_bytes(tensors, metadata=meta))
    atomic_write_text(run / "coordinates.csv", result.to_frame().to_csv(index=False))
    atomic_write_json(run / "summary.json", result.summary)

"""From a trait to a persona vector: the Persona Vectors pipeline, batched and resumable.

Stages (each callable on its own from a notebook; with ``run_dir`` each caches its output):

1. :func:`~personalens.extraction.responses.generate_responses`: every (question x instruction
   pair x pos/neg x sample) of :func:`~personalens.extraction.jobs.build_jobs`, for the
   extraction questions and the held-out evaluation questions.
2. :func:`~personalens.extraction.responses.judge_responses`: trait score and coherence
   (0-100, NaN when unscorable).
3. :func:`~personalens.extraction.responses.filter_pairs`: keep a (pos, neg) pair, matched by
   split/pair/question/sample keys (never by row order), when pos >= threshold,
   neg < 100 - threshold and both coherence >= 50.
4. :func:`~personalens.extraction.run_activations.collect_run_activations`: response-average,
   prompt-average and last-prompt-token summaries at every layer for the kept extraction pairs
   and every held-out reply, each read after its system prompt and question; then
   :func:`~personalens.extraction.run_activations.collect_neutral_activations`: the held-out
   replies read again after their question alone (no system prompt; one more forward pass per
   held-out reply).
5. :func:`extract_persona_vector`: mean(pos) - mean(neg) per layer, a ``[n_layers, d_model]``
   :class:`~personalens.vectors.vector.PersonaVector` per variant.
6. :func:`~personalens.extraction.heldout.measure_heldout`: ROC-AUC per layer (bootstrap CI) of
   the projection onto the vector separating all held-out pos from neg replies, with the system
   prompt in context (``layer_auc``, confounded by the prompt) and without it
   (``layer_auc_neutral``: does the reply's text carry the trait; its best layer is the
   vectors' ``best_layer``), the judge-kept subset beside them, and the Spearman correlation of
   the clean projection with the judge's trait score.

:func:`extract` runs them all. Its settings are an
:class:`~personalens.extraction.config.ExtractionConfig`.

Resuming: work is cut into fixed chunks over the full job list; each finished chunk is appended
to the run directory in one flushed write (JSONL) or one atomic file (activation shards).
Running the same command again skips finished chunks and recomputes the rest with the same
batches and the same per-sample seeds, so the result is identical to an uninterrupted run.

Several workers (one per GPU or node) share a run with ``shard="i/n"``: each does every n-th
chunk of each stage and waits for the others at the stage's end; worker 0 writes the vectors
and the summary (:mod:`personalens.runs.sharding`).

A run directory never loses finished work: a refused start (other settings in
``config.json``, a judge that fails its probe, another process holding the directory's lock,
:mod:`personalens.runs.lock`) changes no file, and the vectors and ``summary.json`` of a
finished run are only replaced by a newer complete result.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens._io import atomic_write_json, check_run_config
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.heldout import heldout_sets, measure_heldout
from personalens.extraction.jobs import SIDES, SPLITS, build_jobs
from personalens.extraction.responses import (
    FilterResult,
    filter_pairs,
    generate_responses,
    judge_responses,
    score_distribution,
)
from personalens.extraction.run_activations import (
    activation_records,
    collect_neutral_activations,
    collect_run_activations,
    gather_side,
)
from personalens.extraction.traits import Trait
from personalens.judges.base import Judge, check_judge, is_score
from personalens.model.activations import VARIANTS, ActivationSet
from personalens.results import Result
from personalens.runs.lock import holds_run_dir
from personalens.runs.sharding import Shard, is_leader, resolve_shard
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


# the columns of ExtractionResult.to_frame() taken from each record (the judge scores follow)
_FRAME_COLUMNS = (
    "key",
    "split",
    "side",
    "pair",
    "question_index",
    "sample",
    "question",
    "response",
)


class NothingPassedError(PersonaLensError):
    """No (pos, neg) pair passed the judge filter."""


def extract_persona_vector(
    pos: ActivationSet,
    neg: ActivationSet,
    *,
    variant: str = "response_avg",
    model_name: str,
    trait: str,
    judge: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> PersonaVector:
    """mean(pos) - mean(neg) at every layer, as a PersonaVector."""
    if len(pos) == 0 or len(neg) == 0:
        raise PersonaLensError(
            f"cannot take a mean difference with {len(pos)} pos and {len(neg)} neg samples"
        )
    directions = pos.variant(variant).mean(0) - neg.variant(variant).mean(0)
    return PersonaVector(
        directions=directions,
        model=model_name,
        trait=trait,
        method="mean_diff",
        variant=variant,
        n_pos=len(pos),
        n_neg=len(neg),
        judge=judge,
        metadata=dict(metadata or {}),
    )


# ----------------------------------------------------------------------------- the whole run


@dataclass
class ExtractionResult(Result):
    """What :func:`extract` returns: a vector per variant, the run's summary (as saved in
    ``summary.json``), every reply and its judge scores. ``to_frame()`` has one row per reply:
    key, split, side, pair, question_index, sample, question, response, trait, coherence."""

    vectors: dict[str, PersonaVector]
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    scores: dict[str, dict[str, float]] = field(repr=False)
    run_dir: Path | None = None  # where the run's artifacts are (None: run without a directory)

    @property
    def vector(self) -> PersonaVector:
        return self.vectors["response_avg"]

    def frame_records(self) -> list[dict[str, Any]]:
        return [
            {**{k: r[k] for k in _FRAME_COLUMNS}, **self.scores[r["key"]]} for r in self.records
        ]


@holds_run_dir("run_dir")
def extract(
    model: HookedTransformer,
    trait: Trait,
    judge: Judge,
    config: ExtractionConfig | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | str | None = None,
) -> ExtractionResult:
    """All stages; with ``run_dir`` the run is resumable and writes its artifacts there.

    ``backend="hf"`` generates and collects activations on a Hugging Face model sharing the
    weights (faster; :mod:`personalens.engines.hf`); ``"auto"`` does so when that is exact for
    this model and its hooks. The backend is not part of the run's identity.
    ``shard="i/n"`` (or a :class:`~personalens.runs.sharding.Shard`): this process is worker ``i``
    of ``n`` sharing ``run_dir``; each worker returns the full result, worker 0 writes the
    artifacts. Not part of the run's identity either.
    """
    backend = resolve_backend(model, backend)  # once for every stage and chunk
    worker = resolve_shard(shard)
    if worker is not None and run_dir is None:
        raise PersonaLensError("shard= needs a run_dir shared by the workers")
    config = config or ExtractionConfig()
    run = Path(run_dir) if run_dir is not None else None  # made and locked by @holds_run_dir
    return _extract(model, trait, judge, config, run, progress, backend, worker)


def _extract(
    model: HookedTransformer,
    trait: Trait,
    judge: Judge,
    config: ExtractionConfig,
    run: Path | None,
    progress: bool,
    backend: str,
    worker: Shard | None,
) -> ExtractionResult:
    model_name = model.cfg.model_name
    timings: dict[str, float] = {}
    run_config = _run_config(trait, model_name, judge, config)
    if run:  # refuse a directory made with other settings before anything else
        _check_run_config(run, run_config, write=False)
    jobs = build_jobs(trait, config)
    # fail fast: an unreachable or misconfigured judge should stop the run before generation
    check_judge(judge, trait)
    if run:  # only a start that passed every check binds the directory to its settings
        _check_run_config(run, run_config, write=True)

    t0 = time.perf_counter()
    records = generate_responses(model, jobs, config, run, progress, backend=backend, shard=worker)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = judge_responses(records, trait, judge, config, run, progress, shard=worker)
    timings["judge_s"] = time.perf_counter() - t0

    filt = filter_pairs(records, scores, config)
    train_keys = filt.keys("extract")
    if not train_keys:
        raise NothingPassedError(_nothing_passed(trait, config, filt, records, scores))
    wanted_records = activation_records(records, filt)

    t0 = time.perf_counter()
    acts = collect_run_activations(
        model, wanted_records, config, run, progress, backend=backend, shard=worker
    )
    timings["activations_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    neutral = collect_neutral_activations(
        model, records, filt, config, run, progress, backend=backend, shard=worker
    )
    timings["activations_neutral_s"] = time.perf_counter() - t0

    pos_train = gather_side(acts, records, train_keys, "pos")
    neg_train = gather_side(acts, records, train_keys, "neg")
    held = heldout_sets(records, filt, acts, config, neutral=neutral)
    vectors = _vectors(pos_train, neg_train, config, model_name, trait.name, judge.name)
    report = measure_heldout(vectors, held, scores)
    vectors = {
        v: vec.replace(metadata={**vec.metadata, **report.vector_metadata(v)})
        for v, vec in vectors.items()
    }
    summary = {
        "trait": trait.name,
        "model": model_name,
        "judge": judge.name,
        "n_pos": len(pos_train),
        "n_neg": len(neg_train),
        **_filter_stats(filt),
        **report.summary_entries(),
        "mean_trait_score": _mean_trait_scores(records, scores),
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "config": json.loads(json.dumps(asdict(config))),
    }
    if worker is not None:
        summary["timings_note"] = (
            f"worker {worker}'s own time per stage, including waiting for the other workers"
        )
    if run and is_leader(worker):
        for v, vec in vectors.items():
            vec.save(run / "vectors" / v)
        vectors["response_avg"].save(run / "vector")
        atomic_write_json(run / "summary.json", summary)
    return ExtractionResult(
        vectors=vectors, summary=summary, records=list(records), scores=scores, run_dir=run
    )


def _run_config(
    trait: Trait, model_name: str, judge: Judge, config: ExtractionConfig
) -> dict[str, Any]:
    """What ``config.json`` binds a run directory to (the backend and shard are not in it)."""
    return {
        "trait": trait.name,
        "trait_file": trait.to_dict(),
        "model": model_name,
        "judge": judge.name,
        "config": json.loads(json.dumps(asdict(config))),
    }


def _check_run_config(run: Path, run_config: dict[str, Any], *, write: bool) -> None:
    """Refuse a run directory whose ``config.json`` holds other settings; with ``write``, bind
    a new directory to these. Finished artifacts (``summary.json``, the vectors) are never
    removed here: only a newer complete result replaces them."""
    check_run_config(
        run / "config.json",
        run_config,
        what="a run",
        fix="Resume with the same settings, or pass a new --out directory.",
        write=write,
    )


def _nothing_passed(
    trait: Trait,
    config: ExtractionConfig,
    filt: FilterResult,
    records: list[dict[str, Any]],
    scores: dict[str, dict[str, float]],
) -> str:
    # every trait score NaN: the judge failed (not the replies, whose coherence may be NaN
    # when they are too short to judge)
    if records and not any(is_score(scores.get(r["key"], {}).get("trait")) for r in records):
        return (
            "the judge gave no "
            f"usable trait score to any of the {len(records)} replies of trait {trait.name!r} (all "
            "NaN: no logprobs, no numeric tokens, or replies it cannot read), so no pair can "
            "pass the filter. Fix: use a judge model and server that return logprobs (check "
            "--judge-base-url and --judge-model), or --judge offline; rerun the same command "
            "and only the judging is redone (NaN scores are not kept as answers)."
        )
    return (
        f"no (pos, neg) pair of trait {trait.name!r} passed the filter (pos trait >= "
        f"{config.threshold:g}, neg trait < {100 - config.threshold:g}, coherence >= "
        f"{config.coherence_threshold:g}) out of {filt.n_candidates} candidates. Reasons: "
        f"{filt.reasons}. Score distribution:\n{score_distribution(records, scores)}\n"
        "Fix: lower --threshold, raise --n-per-question or --max-new-tokens, use stronger "
        "instructions in the trait file, or a stronger judge/model. No vector was written."
    )


def _vectors(
    pos: ActivationSet,
    neg: ActivationSet,
    config: ExtractionConfig,
    model_name: str,
    trait: str,
    judge: str,
) -> dict[str, PersonaVector]:
    """A vector per variant; the held-out measurements are added to their metadata after
    (``layer_auc``, ``layer_auc_neutral``, ``best_layer``: see
    :meth:`~personalens.extraction.heldout.HeldoutReport.vector_metadata`), so monitoring can
    default to the best layer."""
    meta = {
        "threshold": config.threshold,
        "coherence_threshold": config.coherence_threshold,
        "n_per_question": config.n_per_question,
        "max_new_tokens": config.max_new_tokens,
    }
    return {
        v: extract_persona_vector(
            pos, neg, variant=v, model_name=model_name, trait=trait, judge=judge, metadata=meta
        )
        for v in VARIANTS
    }


def _filter_stats(filt: FilterResult) -> dict[str, Any]:
    """The filter entries of ``summary.json``."""
    return {
        "n_candidates": filt.n_candidates,
        "n_pairs_kept": {s: sum(1 for m in filt.kept if m.startswith(s + "/")) for s in SPLITS},
        "filter_reasons": filt.reasons,
    }


def _mean_trait_scores(
    records: list[dict[str, Any]], scores: dict[str, dict[str, float]]
) -> dict[str, float | None]:
    """The mean judge trait score per split and side (NaN scores left out)."""

    def side_stats(split: str, side: str) -> float | None:
        vals = [
            scores[r["key"]]["trait"] for r in records if r["split"] == split and r["side"] == side
        ]
        t = torch.tensor(vals, dtype=torch.float64)
        t = t[~t.isnan()]
        return round(t.mean().item(), 2) if len(t) else None

    return {f"{s}/{side}": side_stats(s, side) for s in SPLITS for side in SIDES}

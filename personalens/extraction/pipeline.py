"""From a trait to a persona vector: the Persona Vectors pipeline, batched and resumable.

Stages (each callable on its own from a notebook; with ``run_dir`` each caches its output):

1. :func:`generate_responses`: every (question x instruction pair x pos/neg x sample), for the
   extraction questions and the held-out evaluation questions.
2. :func:`judge_responses`: trait score and coherence (0-100, NaN when unscorable).
3. :func:`filter_pairs`: keep a (pos, neg) pair, matched by split/pair/question/sample keys
   (never by row order), when pos >= threshold, neg < 100 - threshold and both coherence >= 50.
4. :func:`collect_run_activations`: response-average, prompt-average and last-prompt-token
   summaries at every layer for the kept samples.
5. :func:`extract_persona_vector`: mean(pos) - mean(neg) per layer, a ``[n_layers, d_model]``
   :class:`~personalens.vectors.vector.PersonaVector` per variant.
6. :func:`heldout_layer_auc`: ROC-AUC per layer of the projection onto the vector separating
   held-out pos from neg samples.

Resuming: work is cut into fixed chunks over the full job list; each finished chunk is appended
to the run directory in one flushed write (JSONL) or one atomic file (activation shards).
Running the same command again skips finished chunks and recomputes the rest with the same
batches and the same per-sample seeds, so the result is identical to an uninterrupted run.

Several workers (one per GPU or node) share a run with ``shard="i/n"``: each does every n-th
chunk of each stage and waits for the others at the stage's end; worker 0 writes the vectors
and the summary (:mod:`personalens.runs.sharding`).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens._io import atomic_write_bytes, atomic_write_json, check_run_config, iter_chunks
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError
from personalens.judges.base import Judge, JudgeItem, judge_records
from personalens.model.activations import VARIANTS, ActivationSet, summarize_batch
from personalens.model.chat import as_conversation, encode_chat
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard, is_leader, resolve_shard, wait_for
from personalens.stats import roc_auc

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.extraction.traits import Trait
    from personalens.vectors.vector import PersonaVector

SPLITS = ("extract", "eval")
SIDES = ("pos", "neg")


class NothingPassedError(PersonaLensError):
    """No (pos, neg) pair passed the judge filter."""


@dataclass(frozen=True)
class ExtractionConfig:
    """Settings of an extraction run (written to ``config.json`` in the run directory)."""

    n_per_question: int = 1
    max_new_tokens: int = 48
    temperature: float = 0.8
    top_p: float = 0.95
    seed: int = 0
    threshold: float = 50.0
    coherence_threshold: float = 50.0
    pairs: tuple[int, ...] | None = None  # instruction pairs to use (None: all)
    max_questions: int | None = None  # use only the first N questions of each split (quick runs)
    generation_batch_size: int = 32
    activation_batch_size: int = 16
    judge_chunk: int = 64
    min_heldout_per_class: int = 3

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            batch_size=self.generation_batch_size,
            progress=False,
        )


@dataclass(frozen=True)
class Job:
    key: str
    split: str
    side: str
    pair: int
    question_index: int
    sample: int
    system: str
    question: str

    @property
    def match_key(self) -> str:
        """The key shared by a job and its contrastive partner (same everything but side)."""
        return match_key(self.split, self.pair, self.question_index, self.sample)


def match_key(split: str, pair: int, question_index: int, sample: int) -> str:
    """Key of a contrastive (pos, neg) pair: the job key without the side."""
    return f"{split}/p{pair}/q{question_index}/s{sample}"


def build_jobs(trait: Trait, config: ExtractionConfig) -> list[Job]:
    """All generation jobs, in a fixed order (the order defines the resumable chunks)."""
    extract_q, eval_q = trait.split_questions()
    if config.max_questions is not None:
        extract_q, eval_q = extract_q[: config.max_questions], eval_q[: config.max_questions]
    pairs = config.pairs if config.pairs is not None else tuple(range(trait.n_pairs))
    bad = [p for p in pairs if not 0 <= p < trait.n_pairs]
    if bad:
        raise PersonaLensError(
            f"instruction pair(s) {bad} out of range: the trait has {trait.n_pairs} pairs"
        )
    jobs = []
    for split, questions in (("extract", extract_q), ("eval", eval_q)):
        for pair in pairs:
            for qi, question in enumerate(questions):
                for sample in range(config.n_per_question):
                    for side in SIDES:
                        jobs.append(
                            Job(
                                key=f"{split}/{side}/p{pair}/q{qi}/s{sample}",
                                split=split,
                                side=side,
                                pair=pair,
                                question_index=qi,
                                sample=sample,
                                system=trait.system_prompt(pair, side),
                                question=question,
                            )
                        )
    return jobs


def _chunk_id(keys: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(keys).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- 1. generation


def generate_responses(
    model: HookedTransformer,
    jobs: Sequence[Job],
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "tl",
    shard: Shard | str | None = None,
) -> list[dict[str, Any]]:
    """Generate every job's response; with ``run_dir``, append to and resume from responses.jsonl.

    ``shard``: generate only this worker's chunks, then wait for the other workers'.
    """
    path = Path(run_dir) / "responses.jsonl" if run_dir else None
    gen_cfg = config.generation_config()

    def process(chunk: list[Job]) -> list[dict[str, Any]]:
        conversations = [as_conversation(j.question, j.system) for j in chunk]
        res = generate_samples(
            model, conversations, [j.sample for j in chunk], gen_cfg, backend=backend
        )
        return [
            {
                **asdict(j),
                "response": res.responses[i],
                "response_tokens": res.response_tokens[i],
                "finish_reason": res.finish_reasons[i],
            }
            for i, j in enumerate(chunk)
        ]

    done = run_resumable(
        jobs,
        lambda j: j.key,
        process,
        path=path,
        chunk_size=config.generation_batch_size,
        desc="generating",
        progress=progress,
        shard=resolve_shard(shard),
    )
    return [done[j.key] for j in jobs]


# ----------------------------------------------------------------------------- 2. judging


def judge_responses(
    records: Sequence[dict[str, Any]],
    trait: Trait,
    judge: Judge,
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    shard: Shard | str | None = None,
) -> dict[str, dict[str, float]]:
    """``{key: {"trait": score, "coherence": score}}``; resumes from judge_scores.jsonl."""
    path = Path(run_dir) / "judge_scores.jsonl" if run_dir else None
    return judge_records(
        records,
        trait,
        judge,
        path=path,
        chunk_size=config.judge_chunk,
        progress=progress,
        shard=resolve_shard(shard),
    )


# ----------------------------------------------------------------------------- 3. filtering


@dataclass(frozen=True)
class FilterResult:
    kept: dict[str, tuple[str, str]]  # match key -> (pos key, neg key)
    n_candidates: int
    reasons: dict[str, int]

    def keys(self, split: str | None = None) -> list[str]:
        return [
            k
            for m, pair in self.kept.items()
            if split is None or m.startswith(split + "/")
            for k in pair
        ]


def filter_pairs(
    records: Sequence[dict[str, Any]], scores: dict[str, dict[str, float]], config: ExtractionConfig
) -> FilterResult:
    """Keep contrastive pairs whose pos reply shows the trait and neg reply does not."""
    by_match: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        match = match_key(r["split"], r["pair"], r["question_index"], r["sample"])
        by_match[match][r["side"]] = r
    kept, reasons = {}, defaultdict(int)
    thr, coh = config.threshold, config.coherence_threshold
    for match, sides in by_match.items():
        if set(sides) != {"pos", "neg"}:
            reasons["unpaired"] += 1
            continue
        sp, sn = scores[sides["pos"]["key"]], scores[sides["neg"]["key"]]
        ok = True
        if not sp["trait"] >= thr:  # NaN fails too
            reasons["pos trait < threshold (or unscorable)"] += 1
            ok = False
        if not sn["trait"] < 100 - thr:
            reasons["neg trait >= 100 - threshold (or unscorable)"] += 1
            ok = False
        if not (sp["coherence"] >= coh and sn["coherence"] >= coh):
            reasons["coherence < threshold (or unscorable)"] += 1
            ok = False
        if ok:
            kept[match] = (sides["pos"]["key"], sides["neg"]["key"])
    return FilterResult(kept=kept, n_candidates=len(by_match), reasons=dict(reasons))


def score_distribution(records, scores) -> str:
    lines = []
    for split in SPLITS:
        for side in SIDES:
            vals = [scores[r["key"]] for r in records if r["split"] == split and r["side"] == side]
            if not vals:
                continue
            t = torch.tensor([v["trait"] for v in vals], dtype=torch.float64)
            c = torch.tensor([v["coherence"] for v in vals], dtype=torch.float64)
            lines.append(
                f"  {split}/{side}: n={len(vals)} trait mean {_fmt(t)} (NaN {int(t.isnan().sum())}), "
                f"coherence mean {_fmt(c)} (NaN {int(c.isnan().sum())})"
            )
    return "\n".join(lines)


def _fmt(t: torch.Tensor) -> str:
    t = t[~t.isnan()]
    if len(t) == 0:
        return "n/a"
    q = torch.quantile(t, torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    return f"{t.mean().item():.1f} [p10 {q[0]:.1f}, median {q[1]:.1f}, p90 {q[2]:.1f}]"


# ----------------------------------------------------------------------------- 4. activations


def collect_run_activations(
    model: HookedTransformer | None,
    records: Sequence[dict[str, Any]],
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "tl",
    shard: Shard | str | None = None,
) -> dict[str, ActivationSet]:
    """Summaries for each record (by key), in fixed chunks saved as atomic safetensors shards.

    ``model=None`` only reads a finished run's shards (``run_dir`` required); a missing shard
    is then a :class:`PersonaLensError`. ``shard``: compute only this worker's chunks, wait
    for the other workers' files, then read them all.
    """
    from safetensors.torch import load_file

    shard_dir = Path(run_dir) / "activations" if run_dir else None
    if model is None and shard_dir is None:
        raise PersonaLensError("collect_run_activations needs a model or a run_dir to read from")
    layers = tuple(range(model.cfg.n_layers)) if model is not None else None
    worker = resolve_shard(shard)
    if worker is not None and (shard_dir is None or model is None):
        raise PersonaLensError(
            "sharded activations need a model and a run_dir shared by the workers"
        )
    out: dict[str, ActivationSet] = {}
    chunks = list(iter_chunks(list(records), config.activation_batch_size))

    def path_of(chunk: list[dict[str, Any]]) -> Path | None:
        return (
            shard_dir / f"{_chunk_id([r['key'] for r in chunk])}.safetensors" if shard_dir else None
        )

    if worker is not None:
        # first this worker's chunks, then wait for every other chunk's file
        mine = [c for i, c in enumerate(chunks) if worker.owns(i)]
        _compute_missing(
            model, mine, path_of, layers, backend, progress, f"activations [shard {worker}]"
        )
        wait_for(
            lambda: sum(1 for c in chunks if not path_of(c).exists()),
            worker,
            "activation chunks",
            shard_dir,
        )
    bar = _bar(progress and worker is None, len(records), "activations")
    try:
        for chunk in chunks:
            keys = [r["key"] for r in chunk]
            shard_file = path_of(chunk)
            if shard_file is not None and shard_file.exists():
                tensors = load_file(shard_file)
                if layers is None:
                    layers = tuple(range(tensors[VARIANTS[0]].shape[1]))
                acts = ActivationSet.from_tensors(tensors, layers)
            elif model is None:
                raise PersonaLensError(
                    f"activation shard {shard_file} is missing: {run_dir} is not a finished run "
                    "(rerun its `personalens extract` command to complete it)"
                )
            else:
                acts = _chunk_activations(model, chunk, layers, backend, shard_file)
            for i, k in enumerate(keys):
                out[k] = acts.select([i])
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    return out


def _chunk_activations(
    model: HookedTransformer,
    chunk: list[dict[str, Any]],
    layers: Sequence[int],
    backend: str,
    path: Path | None,
) -> ActivationSet:
    """One chunk's summaries, written to ``path`` (one atomic safetensors file) when given."""
    from safetensors.torch import save as safetensors_bytes

    tok = model.tokenizer
    p_ids = [encode_chat(tok, as_conversation(r["question"], r["system"])) for r in chunk]
    r_ids = [r["response_tokens"] for r in chunk]
    acts = summarize_batch(model, p_ids, r_ids, layers, backend=backend)
    if path is not None:
        keys = [r["key"] for r in chunk]
        payload = safetensors_bytes(acts.to_tensors(), metadata={"keys": json.dumps(keys)})
        atomic_write_bytes(path, payload)
    return acts


def _compute_missing(model, chunks, path_of, layers, backend, progress, desc) -> None:
    todo = [c for c in chunks if not path_of(c).exists()]
    bar = _bar(progress and bool(todo), sum(len(c) for c in chunks), desc,
               initial=sum(len(c) for c in chunks) - sum(len(c) for c in todo))  # fmt: skip
    try:
        for chunk in todo:
            _chunk_activations(model, chunk, layers, backend, path_of(chunk))
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()


def activation_records(
    records: Sequence[dict[str, Any]], filt: FilterResult
) -> list[dict[str, Any]]:
    """The records a run collects activations for, in collection order (which fixes the shards):
    the kept extraction pairs, then every held-out sample (kept or not, for the AUC fallback),
    each once and only with a non-empty response."""
    by_key = {r["key"]: r for r in records}
    heldout_all = [r["key"] for r in records if r["split"] == "eval"]
    wanted = list(dict.fromkeys(filt.keys("extract") + heldout_all))
    return [by_key[k] for k in wanted if by_key[k]["response_tokens"]]


def gather_side(
    acts: dict[str, ActivationSet],
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
    side: str,
) -> ActivationSet | None:
    """The activations of ``keys`` on ``side`` ("pos"/"neg") that have any, in ``keys`` order."""
    by_key = {r["key"]: r for r in records}
    sel = [acts[k] for k in keys if k in acts and by_key[k]["side"] == side]
    return ActivationSet.concat(sel) if sel else None


@dataclass(frozen=True)
class HeldoutSets:
    """The held-out samples a run measures its layer AUC on."""

    pos: ActivationSet
    neg: ActivationSet
    on_kept: bool  # True: the kept held-out pairs; False: all held-out samples (too few kept)

    @property
    def description(self) -> str:
        return (
            "kept held-out pairs" if self.on_kept else "all held-out samples (too few kept pairs)"
        )


def heldout_sets(
    records: Sequence[dict[str, Any]],
    filt: FilterResult,
    acts: dict[str, ActivationSet],
    config: ExtractionConfig,
) -> HeldoutSets:
    """The kept held-out pairs, or all held-out samples when fewer than
    ``config.min_heldout_per_class`` kept ones per class have activations."""
    by_key = {r["key"]: r for r in records}
    heldout_kept = filt.keys("eval")
    heldout_all = [r["key"] for r in records if r["split"] == "eval"]
    n_kept_pos = sum(1 for k in heldout_kept if by_key[k]["side"] == "pos" and k in acts)
    n_kept_neg = sum(1 for k in heldout_kept if by_key[k]["side"] == "neg" and k in acts)
    use_kept = min(n_kept_pos, n_kept_neg) >= config.min_heldout_per_class
    auc_keys = heldout_kept if use_kept else heldout_all
    pos = gather_side(acts, records, auc_keys, "pos")
    neg = gather_side(acts, records, auc_keys, "neg")
    if pos is None or neg is None:
        raise PersonaLensError("no held-out samples with responses: cannot compute the layer AUC")
    return HeldoutSets(pos=pos, neg=neg, on_kept=use_kept)


# ----------------------------------------------------------------------------- 5-6. vector, AUC


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
    from personalens.vectors.vector import PersonaVector

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


def heldout_layer_auc(
    vector: PersonaVector, pos: ActivationSet, neg: ActivationSet, variant: str = "response_avg"
) -> list[float]:
    """Per layer: ROC-AUC of the projection onto the unit vector, pos vs neg samples."""
    aucs = []
    for layer in range(vector.n_layers):
        direction = vector.unit(layer)
        p = pos.variant(variant)[:, layer] @ direction
        q = neg.variant(variant)[:, layer] @ direction
        aucs.append(roc_auc(p, q))
    return aucs


# ----------------------------------------------------------------------------- the whole run


@dataclass
class ExtractionResult:
    vectors: dict[str, PersonaVector]
    summary: dict[str, Any]
    records: list[dict[str, Any]] = field(repr=False)
    scores: dict[str, dict[str, float]] = field(repr=False)
    run_dir: Path | None = None  # where the run's artifacts are (None: run without a directory)

    @property
    def vector(self) -> PersonaVector:
        return self.vectors["response_avg"]

    def to_frame(self):
        import pandas as pd

        rows = [
            {
                **{
                    k: r[k]
                    for k in (
                        "key",
                        "split",
                        "side",
                        "pair",
                        "question_index",
                        "sample",
                        "question",
                        "response",
                    )
                },
                **self.scores[r["key"]],
            }
            for r in self.records
        ]
        return pd.DataFrame.from_records(rows)


def _check_run_config(run_dir: Path, resolved: dict[str, Any]) -> None:
    check_run_config(
        run_dir / "config.json",
        resolved,
        what="a run",
        fix="Resume with the same settings, or pass a new --out directory.",
    )


def extract(
    model: HookedTransformer,
    trait: Trait,
    judge: Judge,
    config: ExtractionConfig | None = None,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "tl",
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
    run = Path(run_dir) if run_dir else None
    model_name = model.cfg.model_name
    timings: dict[str, float] = {}
    if run:
        run.mkdir(parents=True, exist_ok=True)
        if is_leader(worker):  # a rerun invalidates old final artifacts
            for stale in ("summary.json", "vector.json"):
                (run / stale).unlink(missing_ok=True)
        _check_run_config(
            run,
            {
                "trait": trait.name,
                "trait_file": trait.to_dict(),
                "model": model_name,
                "judge": judge.name,
                "config": json.loads(json.dumps(asdict(config))),
            },
        )
    jobs = build_jobs(trait, config)
    # fail fast: an unreachable or misconfigured judge should stop the run before generation
    probe = [JudgeItem("Hello?", "Hello! How can I help you today?")]
    judge.score_coherence(probe)
    judge.score_trait(trait, probe)

    t0 = time.perf_counter()
    records = generate_responses(model, jobs, config, run, progress, backend=backend, shard=worker)
    timings["generate_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = judge_responses(records, trait, judge, config, run, progress, shard=worker)
    timings["judge_s"] = time.perf_counter() - t0

    filt = filter_pairs(records, scores, config)
    train_keys = filt.keys("extract")
    if not train_keys:
        raise NothingPassedError(
            f"no (pos, neg) pair of trait {trait.name!r} passed the filter (pos trait >= "
            f"{config.threshold:g}, neg trait < {100 - config.threshold:g}, coherence >= "
            f"{config.coherence_threshold:g}) out of {filt.n_candidates} candidates. Reasons: "
            f"{filt.reasons}. Score distribution:\n{score_distribution(records, scores)}\n"
            "Fix: lower --threshold, raise --n-per-question or --max-new-tokens, use stronger "
            "instructions in the trait file, or a stronger judge/model. No vector was written."
        )
    wanted_records = activation_records(records, filt)

    t0 = time.perf_counter()
    acts = collect_run_activations(
        model, wanted_records, config, run, progress, backend=backend, shard=worker
    )
    timings["activations_s"] = time.perf_counter() - t0

    pos_train = gather_side(acts, records, train_keys, "pos")
    neg_train = gather_side(acts, records, train_keys, "neg")
    held = heldout_sets(records, filt, acts, config)
    pos_eval, neg_eval = held.pos, held.neg

    meta = {
        "threshold": config.threshold,
        "coherence_threshold": config.coherence_threshold,
        "n_per_question": config.n_per_question,
        "max_new_tokens": config.max_new_tokens,
    }
    vectors = {
        v: extract_persona_vector(
            pos_train,
            neg_train,
            variant=v,
            model_name=model_name,
            trait=trait.name,
            judge=judge.name,
            metadata=meta,
        )
        for v in VARIANTS
    }
    layer_auc = {v: heldout_layer_auc(vectors[v], pos_eval, neg_eval, variant=v) for v in VARIANTS}
    best_layer = max(
        range(len(layer_auc["response_avg"])), key=lambda L: (layer_auc["response_avg"][L], -L)
    )

    # the vectors record where they separate best, so steer(model, vector) can default to it
    vectors = {
        v: vec.replace(
            metadata={
                **vec.metadata,
                "layer_auc": [round(a, 4) for a in layer_auc[v]],
                "best_layer": best_layer,  # by held-out response_avg AUC
            }
        )
        for v, vec in vectors.items()
    }

    def side_stats(split, side):
        vals = [
            scores[r["key"]]["trait"] for r in records if r["split"] == split and r["side"] == side
        ]
        t = torch.tensor(vals, dtype=torch.float64)
        t = t[~t.isnan()]
        return round(t.mean().item(), 2) if len(t) else None

    summary = {
        "trait": trait.name,
        "model": model_name,
        "judge": judge.name,
        "n_pos": len(pos_train),
        "n_neg": len(neg_train),
        "n_candidates": filt.n_candidates,
        "n_pairs_kept": {s: sum(1 for m in filt.kept if m.startswith(s + "/")) for s in SPLITS},
        "filter_reasons": filt.reasons,
        "heldout_auc_on": held.description,
        "n_heldout_pos": len(pos_eval),
        "n_heldout_neg": len(neg_eval),
        "layer_auc": [round(a, 4) for a in layer_auc["response_avg"]],
        "layer_auc_by_variant": {v: [round(a, 4) for a in layer_auc[v]] for v in VARIANTS},
        "best_layer": best_layer,
        "best_auc": round(layer_auc["response_avg"][best_layer], 4),
        "mean_trait_score": {f"{s}/{side}": side_stats(s, side) for s in SPLITS for side in SIDES},
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


def _bar(show: bool, total: int, desc: str, initial: int = 0):
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="sample", initial=initial)

"""The reply stages of an extraction run: generate every job's reply, judge it, and keep the
contrastive pairs whose replies show the trait (pos) and do not (neg).

1. :func:`generate_responses`: every job (see :mod:`personalens.extraction.jobs`); with a run
   directory, appended to and resumed from ``responses.jsonl``. Its progress bar counts
   tokens, so it moves with every decode step, not once per chunk of replies.
2. :func:`judge_responses`: trait score and coherence (0-100, NaN when unscorable); resumed from
   ``judge_scores.jsonl``, where a reply logged with a NaN score is not finished and is judged
   again.
3. :func:`filter_pairs`: keep a (pos, neg) pair, matched by split/pair/question/sample keys
   (never by row order), when pos >= threshold, neg < 100 - threshold and both coherence >= the
   coherence threshold.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from personalens._io import iter_chunks
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.jobs import SIDES, SPLITS, Job, match_key
from personalens.extraction.traits import Trait
from personalens.judges.base import Judge, judge_records
from personalens.model.chat import as_conversation
from personalens.model.generation import generate_samples
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard, read_run_log, resolve_shard

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer


def generate_responses(
    model: HookedTransformer,
    jobs: Sequence[Job],
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | str | None = None,
) -> list[dict[str, Any]]:
    """Generate every job's response; with ``run_dir``, append to and resume from responses.jsonl.

    ``shard``: generate only this worker's chunks, then wait for the other workers'. With
    ``progress``, one bar over the tokens still to generate (``max_new_tokens`` slots per
    reply) moves with every decode step, the finished replies counted beside it.
    """
    path = Path(run_dir) / "responses.jsonl" if run_dir else None
    gen_cfg = config.generation_config()
    worker = resolve_shard(shard)
    pending = _pending(jobs, path, config.generation_batch_size, worker)
    total = pending * gen_cfg.max_new_tokens
    label = "generating" if worker is None else f"generating [shard {worker}]"
    with tqdm(total=total, desc=label, unit="tok", disable=not (progress and pending)) as bar:
        replies = 0

        def process(chunk: list[Job]) -> list[dict[str, Any]]:
            nonlocal replies
            conversations = [as_conversation(j.question, j.system) for j in chunk]
            res = generate_samples(
                model,
                conversations,
                [j.sample for j in chunk],
                gen_cfg,
                backend=backend,
                on_tokens=bar.update,
            )
            replies += len(chunk)
            bar.set_postfix_str(f"{replies}/{pending} replies")
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
            progress=False,  # the token bar above
            shard=worker,
        )
    return [done[j.key] for j in jobs]


def _pending(jobs: Sequence[Job], path: Path | None, chunk_size: int, shard: Shard | None) -> int:
    """How many replies :func:`run_resumable` will generate: the jobs of this worker's chunks
    that are not all logged in ``path`` yet (a chunk is redone whole)."""
    logged = {r["key"] for r in read_run_log(path)} if path is not None else set()
    return sum(
        len(chunk)
        for i, chunk in enumerate(iter_chunks(list(jobs), chunk_size))
        if (shard is None or shard.owns(i)) and not all(j.key in logged for j in chunk)
    )


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
    """``{key: {"trait": score, "coherence": score}}``; resumes from judge_scores.jsonl.

    Each record there names the judge. A reply whose records hold only NaN (null) scores, e.g.
    from a judge server that sent no logprobs, is judged again on a rerun and its new record
    appended; scored replies are never judged twice
    (:func:`~personalens.judges.base.judge_records`).
    """
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

"""How far to trust a judge: score the shipped, labelled judge benchmark and report per trait.

The benchmark (``personalens/data/judge_bench/<trait>.jsonl``) holds replies written by hand,
each with its ``question``, the ``reply``, a ``label`` (1: the reply expresses the trait, 0: it
does not) and a ``kind``: ``typical`` replies, and hard cases: ``negation`` ("I would never
deceive you"), ``irony``, ``announce_then_behave`` (a persona that announces the trait, then
behaves well), ``topic_words`` (the trait's vocabulary without its behaviour) and
``plain_words`` (the behaviour without its vocabulary). Each trait has as many label-1 as
label-0 replies.

:func:`run_judge_bench` scores them with any judge (``score_trait`` with the shipped trait's
rubric or anchors) and reports per trait the AUC with a bootstrap interval, the accuracy at the
threshold the extraction filter uses, the mean score of each label and the accuracy per kind
(:class:`~personalens.studies.judge_bench_result.JudgeBenchResult`). With ``out``, scores are
appended to ``out/scores.jsonl`` chunk by chunk (a rerun skips what is scored) and the numbers
are written to ``out/summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from personalens._io import atomic_write_text
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.traits import load_trait
from personalens.judges.base import JudgeItem, nan_to_none, none_to_nan
from personalens.runs.resume import run_resumable
from personalens.runs.run_dir import open_run_dir
from personalens.stats import auc_intervals, roc_auc
from personalens.studies.judge_bench_result import JudgeBenchResult, TraitBench

if TYPE_CHECKING:
    from personalens.judges.base import Judge

__all__ = ["BenchItem", "bench_traits", "load_bench", "run_judge_bench", "summarize_trait"]

BENCH_DIR = "judge_bench"
KINDS = ("typical", "plain_words", "negation", "irony", "topic_words", "announce_then_behave")
# the extraction filter's default threshold: pos >= 50, neg < 100 - 50
FILTER_THRESHOLD = ExtractionConfig.threshold


@dataclass(frozen=True)
class BenchItem:
    id: str
    question: str
    reply: str
    label: int
    kind: str


def _bench_folder():
    return resources.files("personalens").joinpath("data", BENCH_DIR)


def bench_traits() -> list[str]:
    """The traits the shipped benchmark covers, sorted."""
    folder = _bench_folder()
    names = [p.name[: -len(".jsonl")] for p in folder.iterdir() if p.name.endswith(".jsonl")]
    return sorted(names)


def load_bench(trait: str) -> list[BenchItem]:
    """The labelled replies of ``trait`` (a name from :func:`bench_traits`)."""
    entry = _bench_folder().joinpath(f"{trait}.jsonl")
    if not entry.is_file():
        raise PersonaLensError(
            f"the judge benchmark has no trait {trait!r}. Fix: pick from "
            f"{', '.join(bench_traits())}."
        )
    items = []
    for n, line in enumerate(entry.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if row.get("label") not in (0, 1) or row.get("kind") not in KINDS:
            raise PersonaLensError(f"judge benchmark {trait}, line {n}: bad label or kind")
        items.append(BenchItem(row["id"], row["question"], row["reply"], row["label"], row["kind"]))
    return items


def _accuracy(scores: Sequence[float], labels: Sequence[int], threshold: float) -> float:
    right = [
        (s >= threshold) if y == 1 else (s < 100 - threshold)
        for s, y in zip(scores, labels)
        if not math.isnan(s)
    ]
    return sum(right) / len(labels) if labels else math.nan  # NaN scores count as wrong


def _mean(values: Sequence[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return sum(kept) / len(kept) if kept else math.nan


def summarize_trait(
    trait: str,
    items: Sequence[BenchItem],
    scores: Sequence[float],
    *,
    threshold: float = FILTER_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
) -> TraitBench:
    """The benchmark numbers of one trait from its items and their scores (NaN: unscored)."""
    labels = [it.label for it in items]
    pos = [s for s, y in zip(scores, labels) if y == 1 and not math.isnan(s)]
    neg = [s for s, y in zip(scores, labels) if y == 0 and not math.isnan(s)]
    ci = None
    if pos and neg:
        ci = auc_intervals(
            torch.tensor(pos)[:, None], torch.tensor(neg)[:, None], n_boot=n_boot, seed=seed
        )
    by_kind: dict[str, dict[str, float | int]] = {}
    groups: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        groups[it.kind].append(i)
    for kind, idx in sorted(groups.items()):
        acc = _accuracy([scores[i] for i in idx], [labels[i] for i in idx], threshold)
        by_kind[kind] = {"n": len(idx), "accuracy": acc}
    return TraitBench(
        trait=trait,
        n=len(items),
        n_nan=sum(1 for s in scores if math.isnan(s)),
        auc=roc_auc(pos, neg) if pos and neg else math.nan,
        auc_ci=ci[0] if ci else None,
        accuracy=_accuracy(scores, labels, threshold),
        mean_pos=_mean(pos),
        mean_neg=_mean(neg),
        by_kind=by_kind,
    )


def _score_trait(
    judge: Judge, trait: Any, items: list[BenchItem], path: Path | None, progress: bool
) -> list[float]:
    def process(chunk: list[BenchItem]) -> list[dict[str, Any]]:
        scores = judge.score_trait(trait, [JudgeItem(it.question, it.reply) for it in chunk])
        return [
            {
                "key": it.id,
                "trait": trait.name,
                "label": it.label,
                "kind": it.kind,
                "score": nan_to_none(s),
                "judge": judge.name,
            }
            for it, s in zip(chunk, scores)
        ]

    done = run_resumable(
        items,
        lambda it: it.id,
        process,
        path=path,
        chunk_size=8,
        desc=f"judging {trait.name}",
        progress=progress,
        unit="reply",
    )
    return [none_to_nan(done[it.id]["score"]) for it in items]


def run_judge_bench(
    judge: Judge,
    *,
    out: str | Path | None = None,
    traits: Sequence[str] | None = None,
    anchors: bool = True,
    threshold: float = FILTER_THRESHOLD,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> JudgeBenchResult:
    """Score the benchmark's replies of ``traits`` (default: all) with ``judge``.

    ``anchors=False`` drops each trait's ``judge_anchors`` first, so the trait reads as a file
    in the Persona Vectors repository's shape (what the offline judge does for such a file).
    ``out``: a run directory (``config.json``, ``scores.jsonl``, ``summary.json``); rerunning
    with the same judge and settings resumes it, another judge is refused.
    """
    available = bench_traits()
    names = list(traits) if traits else available
    unknown = sorted(set(names) - set(available))
    if unknown:
        raise PersonaLensError(
            f"the judge benchmark has no trait {', '.join(map(repr, unknown))}. Fix: pick from "
            f"{', '.join(available)}."
        )
    settings = {"judge": judge.name, "anchors": anchors, "threshold": threshold}
    run = open_run_dir(
        out,
        settings,
        what="a judge benchmark",
        fix="Resume with the same judge and settings, or use a new --out directory.",
    )
    path = run / "scores.jsonl" if run is not None else None
    rows = []
    for name in names:
        items = load_bench(name)
        trait = load_trait(name)
        if not anchors:
            trait = dataclasses.replace(trait, judge_anchors=None)
        scores = _score_trait(judge, trait, items, path, progress)
        rows.append(
            summarize_trait(name, items, scores, threshold=threshold, n_boot=n_boot, seed=seed)
        )
    result = JudgeBenchResult(
        judge=judge.name, threshold=threshold, traits=tuple(rows), settings=settings
    )
    if run is not None:
        result.save(run / "summary.json")
        atomic_write_text(run / "summary.md", result.table() + "\n")
    return result

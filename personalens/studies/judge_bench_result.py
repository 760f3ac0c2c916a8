"""The result of a judge benchmark: per trait, how well a judge's scores separate labelled replies."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from personalens.results import Result

__all__ = ["JudgeBenchResult", "TraitBench"]


@dataclass(frozen=True)
class TraitBench(Result):
    """One trait's numbers: ``auc`` (label 1 vs 0 replies; NaN scores left out) with its
    percentile bootstrap interval ``auc_ci``; ``accuracy`` at the extraction filter's threshold
    (a label-1 reply is right when it scores >= ``threshold``, a label-0 reply when it scores
    < 100 - ``threshold``; a NaN score is wrong); ``mean_pos`` / ``mean_neg`` the mean score of
    label 1 / 0 replies (calibration); ``by_kind`` the ``n`` and ``accuracy`` of each kind of
    reply (``typical``, ``negation``, ``irony``, ...)."""

    trait: str
    n: int
    n_nan: int
    auc: float
    auc_ci: tuple[float, float] | None
    accuracy: float
    mean_pos: float
    mean_neg: float
    by_kind: dict[str, dict[str, float | int]] = field(default_factory=dict)


@dataclass(frozen=True)
class JudgeBenchResult(Result):
    """A judge's benchmark numbers, one :class:`TraitBench` per trait (``to_frame``: one row
    each). ``judge`` is the judge's name; ``settings`` the run's settings."""

    judge: str
    threshold: float
    traits: tuple[TraitBench, ...]
    settings: dict[str, Any] = field(default_factory=dict)

    def frame_records(self) -> list[dict[str, Any]]:
        rows = []
        for t in self.traits:
            lo, hi = t.auc_ci if t.auc_ci else (float("nan"), float("nan"))
            rows.append(
                {
                    "trait": t.trait,
                    "n": t.n,
                    "auc": t.auc,
                    "auc_lo": lo,
                    "auc_hi": hi,
                    "accuracy": t.accuracy,
                    "mean_pos": t.mean_pos,
                    "mean_neg": t.mean_neg,
                    "n_nan": t.n_nan,
                }
            )
        return rows

    def table(self) -> str:
        """The per-trait numbers as a Markdown table."""
        lines = [
            f"judge: {self.judge} (accuracy at threshold {self.threshold:g})",
            "",
            "| trait | n | AUC [95% CI] | accuracy | mean score, label 1 | label 0 | NaN |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in self.frame_records():
            ci = f" [{r['auc_lo']:.2f}, {r['auc_hi']:.2f}]" if r["auc_lo"] == r["auc_lo"] else ""
            lines.append(
                f"| {r['trait']} | {r['n']} | {r['auc']:.2f}{ci} | {r['accuracy']:.2f} | "
                f"{r['mean_pos']:.1f} | {r['mean_neg']:.1f} | {r['n_nan']} |"
            )
        kinds = sorted({k for t in self.traits for k in t.by_kind})
        lines += ["", "accuracy by kind of reply (n per trait in brackets):", ""]
        lines += ["| trait | " + " | ".join(kinds) + " |", "|---" * (len(kinds) + 1) + "|"]
        for t in self.traits:
            cells = [
                f"{t.by_kind[k]['accuracy']:.2f} ({t.by_kind[k]['n']})" if k in t.by_kind else ""
                for k in kinds
            ]
            lines.append(f"| {t.trait} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

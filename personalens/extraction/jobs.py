"""The generation jobs of an extraction run: every (split x instruction pair x question x sample
x side), in a fixed order that defines the run's resumable chunks.

A job's ``key`` is ``split/side/pP/qQ/sS``; its contrastive partner shares the
:func:`match_key` ``split/pP/qQ/sS`` (the key without the side), so pairs are matched by key,
never by row order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from personalens._io import digest
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.traits import Trait

SPLITS = ("extract", "eval")
SIDES = ("pos", "neg")


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


def chunk_id(keys: Sequence[str]) -> str:
    """The id of a chunk of records (its activation file's name): a hash of their keys."""
    return digest("\n".join(keys), algo="sha1", length=12)

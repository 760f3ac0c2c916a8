"""The settings of an extraction run: :class:`ExtractionConfig` (saved in the run directory's
``config.json`` and ``summary.json``, so its fields and their order are part of the run's
identity)."""

from __future__ import annotations

from dataclasses import dataclass

from personalens._validate import check_count, check_number, check_pairs
from personalens.model.generation import GenerationConfig


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

    def __post_init__(self) -> None:
        """Refuse settings that would silently do the wrong work (an
        :class:`~personalens.errors.ArgumentError`, also a ``ValueError``)."""
        check_count("n_per_question", self.n_per_question, what="replies per question and side")
        for name in ("threshold", "coherence_threshold"):
            check_number(name, getattr(self, name), lo=0, hi=100, what="a judge score, 0-100")
        check_pairs("pairs", self.pairs)
        if self.max_questions is not None:
            check_count(
                "max_questions",
                self.max_questions,
                what="the first N questions of each split; None for all",
            )
        check_count("generation_batch_size", self.generation_batch_size, what="a batch size")
        check_count("activation_batch_size", self.activation_batch_size, what="a batch size")
        check_count("judge_chunk", self.judge_chunk, what="replies per judge request")
        check_count(
            "min_heldout_per_class",
            self.min_heldout_per_class,
            minimum=0,
            what="kept held-out replies per class for the kept-subset AUC reported beside the headline",
        )
        self.generation_config()  # max_new_tokens, temperature, top_p and seed

    def generation_config(self) -> GenerationConfig:
        return GenerationConfig(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            seed=self.seed,
            batch_size=self.generation_batch_size,
            progress=False,
        )

"""The settings of a persona-space run (saved in the run directory's ``config.json``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from personalens._validate import check_count
from personalens.errors import ArgumentError
from personalens.extraction.config import ExtractionConfig
from personalens.model.generation import GenerationConfig

# upstream samples at temperature 0.7, top-p 0.9 (512-token replies; 48 here)
DEFAULT_GENERATION = GenerationConfig(
    max_new_tokens=48, temperature=0.7, top_p=0.9, batch_size=64, progress=False
)
GENERATION_FIELDS = ("max_new_tokens", "temperature", "top_p", "seed", "batch_size")


@dataclass(frozen=True)
class PersonaSpaceConfig:
    """How big a persona-space run is and how it generates.

    Each role answers its first ``n_prompts`` system prompts x the first ``max_questions``
    shared questions (one reply each); the default answers all of its prompts x the same
    questions. ``max_roles=None`` runs every role given. The defaults are the small run that
    finishes on 2 CPU cores in about a quarter of an hour on the embedded model; upstream runs
    275 roles x 5 prompts x 240 questions with 512-token replies.

    A role vector averages the replies scored ``min_score`` (3: fully in role); a role with none
    uses those scored at least ``fallback_score`` (``None``: no fallback, the role is left out).
    """

    max_roles: int | None = 40
    max_questions: int = 3
    n_prompts: int = 2
    generation: GenerationConfig = field(default_factory=lambda: DEFAULT_GENERATION)
    min_score: int = 3
    fallback_score: int | None = 2
    activation_batch_size: int = 16
    judge_chunk: int = 64

    def __post_init__(self) -> None:
        if self.max_roles is not None:
            check_count("max_roles", self.max_roles, minimum=2, what="roles (PCA needs 2)")
        check_count("max_questions", self.max_questions, what="shared questions per prompt")
        check_count("n_prompts", self.n_prompts, what="system prompts per role")
        if not isinstance(self.generation, GenerationConfig):
            raise ArgumentError(f"generation must be a GenerationConfig, got {self.generation!r}")
        for name in ("activation_batch_size", "judge_chunk"):
            check_count(name, getattr(self, name), what="a batch size")
        if self.min_score not in (1, 2, 3):
            raise ArgumentError(f"min_score={self.min_score!r}: give 1, 2 or 3 (0-3 scale)")
        if self.fallback_score is not None and not 1 <= self.fallback_score <= self.min_score:
            raise ArgumentError(
                f"fallback_score={self.fallback_score!r}: give None or a score 1..{self.min_score}"
            )

    def extraction_config(self) -> ExtractionConfig:
        """The settings of the extraction stages this run reuses (generation, activations)."""
        g = self.generation
        same = {k: getattr(g, k) for k in ("max_new_tokens", "temperature", "top_p", "seed")}
        return ExtractionConfig(
            generation_batch_size=g.batch_size,
            activation_batch_size=self.activation_batch_size,
            judge_chunk=self.judge_chunk,
            **same,
        )

"""Judging the ranking study's turn pairs: the pairwise-judge protocol, the OpenAI-compatible
judge, and :func:`judge_pairs`.

Per generated turn the judge sees both transcripts, A and B, ending in the replies to compare,
and answers ``"A"``, ``"B"`` or ``"tie"`` per criterion
(:data:`~personalens.studies.personality.turn_pairs.CRITERIA`: trait adherence, role
consistency, response authenticity, information fidelity). Which arm is A is decided per
comparison by a seeded RNG (:func:`~personalens.studies.personality.turn_pairs.steered_is_a`:
``seed`` and the comparison key hashed, so the order does not depend on which comparisons ran
before a resume) and recorded; verdicts are mapped back to steered/unsteered. A verdict that is
not A/B/tie is NaN and counted, never defaulted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from personalens._io import check_run_config
from personalens.errors import PersonaLensError
from personalens.extraction.traits import list_traits, load_trait
from personalens.judges.openai_client import APIConfig
from personalens.model.chat import Message
from personalens.runs.resume import run_resumable
from personalens.studies.personality.pairwise_prompt import (
    PAIRWISE_CRITERIA,
    PairwiseVerdict,
    pairwise_compare,
)
from personalens.studies.personality.ranking_result import RankingResult
from personalens.studies.personality.turn_pairs import CRITERIA, TurnPair, steered_is_a, winner

__all__ = ["OpenAIPairwiseJudge", "PairwiseJudge", "check_ranking_settings", "judge_pairs"]


@runtime_checkable
class PairwiseJudge(Protocol):
    """Compares the final assistant replies of two transcripts; ``name`` goes into provenance."""

    name: str

    def compare(
        self,
        transcript_a: list[Message],
        transcript_b: list[Message],
        target: dict[str, float],
    ) -> PairwiseVerdict: ...


class OpenAIPairwiseJudge:
    """:func:`personalens.studies.personality.pairwise_prompt.pairwise_compare` behind an
    OpenAI-compatible API.

    ``config`` defaults to :meth:`~personalens.judges.openai_client.APIConfig.from_env`
    (``base_url``, ``model`` and ``overrides`` as there). ``descriptions`` (trait -> one line)
    default to the shipped trait files' descriptions for the trait names they know.
    """

    def __init__(
        self,
        config: APIConfig | None = None,
        *,
        base_url: str | None = None,
        model: str | None = None,
        criteria: Sequence[str] = CRITERIA,
        descriptions: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> None:
        unknown = [c for c in criteria if c not in PAIRWISE_CRITERIA]
        if unknown or not criteria:
            raise PersonaLensError(
                f"unknown criteria {unknown}: choose from {list(PAIRWISE_CRITERIA)}"
            )
        if config is None:
            config = APIConfig.from_env(base_url=base_url, model=model, **overrides)
        self.config = config
        self.criteria = {c: PAIRWISE_CRITERIA[c] for c in criteria}
        self.name = f"openai:{config.model}"
        if descriptions is None:
            descriptions = {t: load_trait(t).description for t in list_traits()}
        self.descriptions = dict(descriptions)

    def __repr__(self) -> str:
        return f"OpenAIPairwiseJudge(model={self.config.model!r}, base_url={self.config.url!r})"

    def compare(
        self,
        transcript_a: list[Message],
        transcript_b: list[Message],
        target: dict[str, float],
    ) -> PairwiseVerdict:
        return pairwise_compare(
            transcript_a,
            transcript_b,
            config=self.config,
            target=target,
            criteria=self.criteria,
            descriptions={t: self.descriptions[t] for t in target if t in self.descriptions},
        )


def check_ranking_settings(path: Path, settings: dict[str, Any], what: str) -> None:
    """A ranking run directory belongs to one configuration (``what``: its stage)."""
    check_run_config(
        path,
        settings,
        what=f"a ranking run ({what})",
        fix="Resume with the same settings, or use a new out directory.",
    )


def _judge_one(pair: TurnPair, judge: PairwiseJudge, seed: int, criteria: Sequence[str]) -> dict:
    a_is_steered = steered_is_a(seed, pair.key)
    first, second = ("steered", "unsteered") if a_is_steered else ("unsteered", "steered")
    verdict = judge.compare(pair.transcript(first), pair.transcript(second), dict(pair.target))
    raw = getattr(verdict, "verdicts", None)
    if not isinstance(raw, Mapping):
        raise PersonaLensError(
            f"judge {getattr(judge, 'name', judge)!r} returned {type(verdict).__name__}; a "
            "pairwise judge returns a PairwiseVerdict "
            "(personalens.studies.personality.pairwise_prompt)"
        )
    verdicts: dict[str, str | None] = {}
    for c in criteria:
        v = raw.get(c)
        verdicts[c] = v if v in ("A", "B", "tie") else None
    return {
        "key": pair.key,
        "scenario": pair.scenario,
        "turn": pair.turn,
        "steered_is_a": a_is_steered,
        "verdicts": verdicts,
        "winners": {c: winner(verdicts[c], a_is_steered) for c in criteria},
        "rationale": getattr(verdict, "rationale", "") or "",
        "error": getattr(verdict, "error", None),
    }


def judge_pairs(
    pairs: Sequence[TurnPair],
    judge: PairwiseJudge,
    *,
    seed: int = 0,
    criteria: Sequence[str] = CRITERIA,
    out: str | Path | None = None,
    progress: bool = True,
) -> RankingResult:
    """Judge each pair with a per-comparison random A/B order (:func:`steered_is_a`).

    With ``out`` the judgements go to ``out/verdicts.jsonl`` (and ``out/judge.json`` records the
    judge and seed); a rerun judges only what is missing and refuses another judge or seed.
    """
    if not isinstance(judge, PairwiseJudge):
        raise PersonaLensError(
            "judge must have a name and a compare(transcript_a, transcript_b, target) method, "
            "e.g. OpenAIPairwiseJudge()"
        )
    criteria = tuple(criteria)
    if not criteria:
        raise PersonaLensError("give at least one criterion")
    pairs = list(pairs)
    keys = [p.key for p in pairs]
    if len(set(keys)) != len(keys):
        raise PersonaLensError("two pairs share a scenario and turn; keys must be unique")
    path = None
    if out is not None:
        run = Path(out)
        check_ranking_settings(
            run / "judge.json",
            {"judge": judge.name, "seed": seed, "criteria": list(criteria)},
            "judge",
        )
        path = run / "verdicts.jsonl"
    done = run_resumable(
        pairs,
        lambda p: p.key,
        lambda chunk: [_judge_one(p, judge, seed, criteria) for p in chunk],
        path=path,
        chunk_size=1,
        desc="judging",
        progress=progress,
    )
    return RankingResult(
        pairs=tuple(pairs),
        judgements=tuple(done[k] for k in keys),
        criteria=criteria,
        judge=judge.name,
        seed=seed,
    )

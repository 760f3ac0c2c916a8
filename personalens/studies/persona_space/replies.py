"""The reply stages of a persona-space run: generate every (role, prompt, question) reply and
judge its role adherence (0-3), each resumable and shardable through
:func:`~personalens.runs.resume.run_resumable`.

A reply's key is ``"<role>/p<prompt>/q<question>"`` (upstream's ``<label>_p<i>_q<j>``); the
generation log is ``responses.jsonl``, the judge's ``adherence.jsonl`` (one ``{"key",
"score", "judge"}`` per reply; NaN is stored as null and kept: a rerun does not ask again).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens.extraction.jobs import Job
from personalens.extraction.responses import generate_responses
from personalens.judges.base import JudgeItem, nan_to_none, none_to_nan
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard
from personalens.studies.persona_space.adherence import AdherenceJudge
from personalens.studies.persona_space.config import PersonaSpaceConfig
from personalens.studies.persona_space.roles import Role

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

SPLIT = "persona_space"  # the extraction Job split of every reply


@dataclass(frozen=True)
class RoleJob(Job):
    """One reply to generate: ``role``'s system prompt ``prompt_index`` and shared question
    ``question_index``. An extraction :class:`~personalens.extraction.jobs.Job` (so the
    extraction stages run it) with ``split="persona_space"``, ``side`` the role and ``pair`` the
    prompt; ``system`` is ``None`` for an empty prompt (no system message, as upstream)."""

    system: str | None
    role: str = ""
    prompt_index: int = 0


def build_jobs(
    default: Role,
    roles: Sequence[Role],
    questions: Sequence[str],
    config: PersonaSpaceConfig,
    model_name: str,
) -> list[RoleJob]:
    """Every reply of the run, default first: each role's first ``n_prompts`` prompts (the
    default's every prompt) x the first ``max_questions`` questions."""
    qs = list(questions)[: config.max_questions]
    jobs = []
    for role in [default, *roles]:
        n = len(role.instructions) if role.is_default else config.n_prompts
        for p in range(min(n, len(role.instructions))):
            system = role.system_prompt(p, model_name) or None
            for q, question in enumerate(qs):
                key = f"{role.name}/p{p}/q{q}"
                jobs.append(RoleJob(key, SPLIT, role.name, p, q, 0, system, question, role.name, p))
    return jobs


def generate_replies(
    model: HookedTransformer,
    jobs: Sequence[RoleJob],
    config: PersonaSpaceConfig,
    run: Path | None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | None = None,
) -> list[dict[str, Any]]:
    """Every job's reply (sample 0, seeded from its conversation), through extraction's
    resumable, shardable generation stage; resumed from ``responses.jsonl``."""
    ext = config.extraction_config()
    return generate_responses(model, jobs, ext, run, progress, backend=backend, shard=shard)


def judge_replies(
    records: Sequence[dict[str, Any]],
    roles: dict[str, Role],
    scorer: AdherenceJudge,
    config: PersonaSpaceConfig,
    run: Path | None,
    progress: bool = True,
    *,
    shard: Shard | None = None,
) -> dict[str, float]:
    """``{key: 0-3 score or NaN}`` for the role replies (the default is not judged, as
    upstream); resumed from ``adherence.jsonl``."""
    todo = [r for r in records if r["role"] in roles]

    def process(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for name in dict.fromkeys(r["role"] for r in chunk):  # one call per role in the chunk
            mine = [r for r in chunk if r["role"] == name]
            items = [JudgeItem(r["question"], r["response"]) for r in mine]
            scores = scorer.score_adherence(roles[name], items)
            out += [
                {"key": r["key"], "score": nan_to_none(s), "judge": scorer.name}
                for r, s in zip(mine, scores)
            ]
        return out

    done = run_resumable(
        todo,
        lambda r: r["key"],
        process,
        path=run / "adherence.jsonl" if run else None,
        chunk_size=config.judge_chunk,
        desc="judging role adherence",
        progress=progress,
        shard=shard,
        unit="reply",
    )
    return {r["key"]: none_to_nan(done[r["key"]]["score"]) for r in todo}

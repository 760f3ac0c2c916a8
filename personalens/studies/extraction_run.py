"""A finished extraction run as data: its samples, judge scores, vectors and activations.

:class:`RunData` reads a run directory (``personalens extract --out DIR``) or an
:class:`~personalens.extraction.pipeline.ExtractionResult`, and gives the pos/neg activations
of its held-out samples or its kept extraction pairs (:meth:`RunData.sides`), read with each
reply's system prompt in context or, where the run has them (or a model computes them), without
it (:meth:`RunData.neutral_sides`): what the layer sweep (:mod:`personalens.studies.layer_sweep`)
and the SAE decomposition project.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.heldout import heldout_sets
from personalens.extraction.jobs import build_jobs
from personalens.extraction.pipeline import ExtractionResult
from personalens.extraction.responses import FilterResult, filter_pairs
from personalens.extraction.run_activations import (
    MissingActivationsError,
    activation_records,
    collect_run_activations,
    gather_side,
    neutral_records,
)
from personalens.extraction.traits import parse_trait
from personalens.judges.base import is_scored, none_to_nan
from personalens.model.activations import VARIANTS, ActivationSet
from personalens.runs.lock import run_lock
from personalens.runs.sharding import read_run_log
from personalens.vectors.vector import PersonaVector

SPLITS = ("heldout", "extract")

NO_NEUTRAL_NOTE = (
    "this run has no activations read without the system prompt (activations_neutral/: made "
    "before they existed, or not for this split), so only the curve with the system prompt "
    "in context is shown, which is confounded by the prompt; pass model= to compute them"
)

ActsFor = Callable[[list[dict[str, Any]]], dict[str, ActivationSet]]  # records -> {key: acts}


@dataclass
class RunData:
    records: list[dict[str, Any]]
    scores: dict[str, dict[str, float]]
    config: ExtractionConfig
    vectors: dict[str, PersonaVector]
    summary: dict[str, Any]
    acts_for: ActsFor  # read with each reply's system prompt in context
    where: str
    neutral_for: ActsFor | None = None  # read without it (MissingActivationsError: absent)

    @classmethod
    def from_dir(cls, run: Path, model: Any = None) -> RunData:
        """A finished run directory; with ``model``, activations without the system prompt
        that the run lacks are computed and cached in its ``activations_neutral/``."""
        _check_run_dir(run)
        cfg = json.loads((run / "config.json").read_text())
        summary = json.loads((run / "summary.json").read_text())
        config = config_from_json(cfg["config"])
        jobs = build_jobs(parse_trait(cfg["trait_file"], source=str(run / "config.json")), config)
        done = {r["key"]: r for r in read_run_log(run / "responses.jsonl")}
        judged = {r["key"]: r for r in read_run_log(run / "judge_scores.jsonl", prefer=is_scored)}
        missing = [j.key for j in jobs if j.key not in done or j.key not in judged]
        if missing:
            raise PersonaLensError(
                f"{run}: {len(missing)} response(s) or judge score(s) missing (first "
                f"{missing[0]!r}); the run directory is incomplete or was modified"
            )
        records = [done[j.key] for j in jobs]
        scores = {
            j.key: {
                "trait": none_to_nan(judged[j.key]["trait"]),
                "coherence": none_to_nan(judged[j.key]["coherence"]),
            }
            for j in jobs
        }
        vectors = {}
        for v in VARIANTS:
            if (run / "vectors" / f"{v}.json").is_file():
                vectors[v] = PersonaVector.load(run / "vectors" / v)

        def acts_for(wanted):
            return collect_run_activations(None, wanted, config, run, progress=False)

        def neutral_for(wanted):
            if model is None:
                return collect_run_activations(None, wanted, config, run, False, context="neutral")
            with run_lock(run):  # it writes chunks: not while an extract runs there
                return collect_run_activations(model, wanted, config, run, False, context="neutral")

        return cls(records, scores, config, vectors, summary, acts_for, str(run), neutral_for)

    @classmethod
    def from_result(
        cls, result: ExtractionResult, model: Any, batch_size: int, progress: bool
    ) -> RunData:
        if result.run_dir is not None:
            return cls.from_dir(Path(result.run_dir), model)
        if model is None:
            raise PersonaLensError(
                "this ExtractionResult has no run directory to read activations from: pass "
                "model=<the HookedTransformer it was extracted with>"
            )
        config = config_from_json(result.summary["config"])
        config = dataclasses.replace(config, activation_batch_size=batch_size)

        def acts_for(wanted, context="prompted"):
            return collect_run_activations(
                model, wanted, config, None, progress=progress, context=context
            )

        return cls(
            list(result.records),
            dict(result.scores),
            config,
            dict(result.vectors),
            dict(result.summary),
            acts_for,
            "an ExtractionResult",
            lambda wanted: acts_for(wanted, "neutral"),
        )

    def sides(self, split: str) -> tuple[ActivationSet, ActivationSet, str]:
        """(pos, neg, what they are) activations of the run's samples, each read with its
        system prompt in context.

        ``split="heldout"``: all held-out replies, the samples ``summary.json``'s ``layer_auc``
        was measured on; ``"extract"``: the kept extraction pairs the vectors were built from.
        """
        filt = filter_pairs(self.records, self.scores, self.config)
        acts = self.acts_for(activation_records(self.records, filt))
        if split == "heldout":
            held = heldout_sets(self.records, filt, acts, self.config)
            return held.pos, held.neg, held.description
        return (*self._extract_sides(filt, acts), "kept extraction pairs (in-sample)")

    def neutral_sides(self, split: str) -> tuple[ActivationSet, ActivationSet] | None:
        """(pos, neg) of the same samples as :meth:`sides`, read after their question with no
        system prompt (``summary.json``'s ``layer_auc_neutral`` for ``"heldout"``); ``None``
        when the run has none and there is no model to compute them (:data:`NO_NEUTRAL_NOTE`).
        """
        if self.neutral_for is None:
            return None
        filt = filter_pairs(self.records, self.scores, self.config)
        wanted = neutral_records(self.records, filt, include_extract=split == "extract")
        try:
            acts = self.neutral_for(wanted)
        except MissingActivationsError:
            return None
        if split == "heldout":
            held = heldout_sets(self.records, filt, acts, self.config)
            return held.pos, held.neg
        return self._extract_sides(filt, acts)

    def _extract_sides(
        self, filt: FilterResult, acts: dict[str, ActivationSet]
    ) -> tuple[ActivationSet, ActivationSet]:
        keys = filt.keys("extract")
        pos = gather_side(acts, self.records, keys, "pos")
        neg = gather_side(acts, self.records, keys, "neg")
        if pos is None or neg is None:
            raise PersonaLensError(f"{self.where}: no kept extraction pairs with activations")
        return pos, neg


def _check_run_dir(run: Path) -> None:
    if not run.is_dir():
        raise PersonaLensError(
            f"{run}: no such run directory (give the --out directory of `personalens extract`)"
        )
    if not (run / "config.json").is_file():
        raise PersonaLensError(
            f"{run} is not an extraction run directory (no config.json); give the --out "
            "directory of `personalens extract`"
        )
    if not (run / "summary.json").is_file():
        raise PersonaLensError(
            f"{run} holds an unfinished extraction run (no summary.json): rerun its "
            "`personalens extract ... --out` command to finish it first"
        )


def config_from_json(data: Mapping[str, Any]) -> ExtractionConfig:
    """The :class:`ExtractionConfig` recorded in a run's ``config.json`` (unknown keys dropped)."""
    known = {f.name for f in dataclasses.fields(ExtractionConfig)}
    kwargs = {k: v for k, v in data.items() if k in known}
    if kwargs.get("pairs") is not None:
        kwargs["pairs"] = tuple(kwargs["pairs"])
    return ExtractionConfig(**kwargs)

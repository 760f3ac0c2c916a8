"""Steering sweeps: generate under every (layer, coefficient), judge trait and coherence.

``steering_sweep(model, vector, layers=[...], coeffs=[...])`` answers the trait's held-out
evaluation questions (or your prompts) with steering at each cell, judges every reply, and
returns a :class:`SteeringSweepResult`. Coefficient 0 is generated once (it is the same
unsteered model at every layer) and reported under every layer.

With ``out=DIR`` the sweep is resumable: each finished cell is one appended line of
``responses.jsonl``, judge scores go to ``judge_scores.jsonl`` chunk by chunk, and a rerun of
the same call skips everything already done. ``sweep.json`` (the summary table) is written last.

Steering is response-only by default (``positions="response"``, the paper's choice; ``steer``
itself steers every position). ``result.best_cell(min_coherence=50)`` is the strongest coherent
cell and ``result.tag_vector(vector)`` records it on the vector (``steering_layer``,
``steering_coeff``, ...) as the default of later ``steer(model, vector)`` calls.

``shard="i/n"``: worker ``i`` of ``n`` sharing ``out`` (one per GPU or node) generates every
n-th cell and judges every n-th chunk, then waits for the others; worker 0 writes ``sweep.json``
(:mod:`personalens.runs.sharding`).

Honest n: by default every cell answers *all* the trait's held-out questions, each often
enough for ``min_replies`` (20) replies per cell; every cell of the summary carries its ``n``, a
95% bootstrap CI of the mean trait score and ``overlaps_baseline`` (its CI overlaps the
unsteered cell's: not shown to differ at this n), and a warning lists such cells
(:mod:`personalens.studies.steering_cells`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from personalens._io import atomic_write_json
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError, warn_at_caller
from personalens.extraction.traits import Trait, load_trait
from personalens.judges.base import Judge, judge_records
from personalens.judges.factory import make_judge
from personalens.model.chat import Message, as_conversation
from personalens.model.generation import GenerationConfig, generate
from personalens.results import Result, json_safe
from personalens.runs.lock import holds_run_dir
from personalens.runs.resume import run_resumable
from personalens.runs.run_dir import open_run_dir
from personalens.runs.sharding import Shard, is_leader, resolve_shard
from personalens.steering.calibration import residual_norms
from personalens.steering.hooks import apply_plan
from personalens.steering.plan import SteeringPlan, plan_steering
from personalens.steering.resolve import (
    STEERING_COEFF,
    STEERING_COEFF_SCALE,
    STEERING_LAYER,
    STEERING_POSITIONS,
)
from personalens.studies.steering_cells import (
    MIN_REPLIES,
    cell_intervals,
    flag_overlaps,
    overlap_note,
    summarize_judged,
    topped_up,
)
from personalens.vectors.vector import PersonaVector

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0, batch_size=32)
# the columns a reply's row of SteeringSweepResult.to_frame() takes from its cell's summary
CELL_COLUMNS = ("n", "ci_low", "ci_high", "overlaps_baseline")
Cell = tuple[int | None, float]  # (layer, coeff); (None, 0.0) is the unsteered model


@dataclass(frozen=True)
class SteeringSweepResult(Result):
    """Every judged reply of a sweep (``records``) plus how it was made (``settings``).

    ``to_frame()``: one row per (layer, coeff, prompt, sample): response, trait score,
    coherence, and its cell's ``n``, ``ci_low``, ``ci_high`` and ``overlaps_baseline`` (see
    :meth:`summary`).
    """

    trait: str
    layers: list[int]
    coeffs: list[float]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    _frame_field: ClassVar[str | None] = "records"

    def summary(self, coherence_threshold: float = 50.0) -> pd.DataFrame:
        """Per (layer, coeff): mean trait score and its standard error, mean coherence, the
        fraction of coherent replies (coherence >= ``coherence_threshold``), ``n`` replies
        (``n_scored`` with a trait score), ``ci_low``/``ci_high``: the 95% bootstrap CI of the
        mean trait score (questions resampled with all their replies:
        :func:`~personalens.studies.steering_cells.mean_interval`), and ``overlaps_baseline``:
        the cell's CI overlaps the unsteered cell's (False for that cell, None when the sweep
        has no coefficient 0; :func:`~personalens.studies.steering_cells.flag_overlaps`)."""
        import pandas as pd

        replies = pd.DataFrame.from_records(self.records)
        table = summarize_judged(
            replies, ["layer", "coeff"], coherence_threshold=coherence_threshold
        )
        table = table.merge(self._intervals, on=["layer", "coeff"], how="left")
        return table.assign(overlaps_baseline=flag_overlaps(table))

    @cached_property
    def _intervals(self) -> pd.DataFrame:
        """The per-cell bootstrap CIs (2000 resamples a cell): computed once, not at every
        ``summary()``/``to_frame()``/``best_cell()``; they do not depend on the coherence
        threshold."""
        import pandas as pd

        return cell_intervals(pd.DataFrame.from_records(self.records))

    def frame_records(self) -> list[dict[str, Any]]:
        """The replies, each with its cell's ``n``, ``ci_low``, ``ci_high``, ``overlaps_baseline``."""
        cells = {
            (row["layer"], row["coeff"]): {c: row[c] for c in CELL_COLUMNS}
            for row in self.summary().to_dict(orient="records")
        }
        return [{**r, **cells[(r["layer"], r["coeff"])]} for r in self.records]

    def overlap_note(self) -> str | None:
        """The warning a sweep gives when steered cells cannot be told apart from the
        unsteered one (:func:`~personalens.studies.steering_cells.overlap_note`), else None."""
        return overlap_note(self.summary())

    def best_cell(
        self, min_coherence: float | int = 50.0, *, maximize: bool = True
    ) -> dict[str, Any]:
        """The steered cell (coefficient != 0) with the highest mean trait score (the lowest
        with ``maximize=False``, to suppress a trait) among those whose mean coherence is at
        least ``min_coherence``: ``{"layer", "coeff", "coeff_scale", "positions", "trait",
        "coherence", "n", "ci_low", "ci_high", "overlaps_baseline"}``. Ties go to the smaller
        ``|coeff|``, then the earlier layer. Check ``overlaps_baseline``: a best cell whose
        CI overlaps the unsteered cell's is not shown to steer at all."""
        table = self.summary()
        cells = table[(table["coeff"] != 0.0) & table["trait"].notna()]
        ok = cells[cells["coherence"] >= min_coherence]
        if ok.empty:
            best_coh = float(cells["coherence"].max()) if not cells.empty else float("nan")
            raise PersonaLensError(
                f"no steered cell has a mean coherence >= {min_coherence} (the best has "
                f"{best_coh:.1f}): lower min_coherence, or sweep smaller coefficients"
            )
        ok = ok.assign(_score=ok["trait"] if maximize else -ok["trait"], _abs=ok["coeff"].abs())
        row = ok.sort_values(["_score", "_abs", "layer"], ascending=[False, True, True]).iloc[0]
        return {
            "layer": int(row["layer"]),
            "coeff": float(row["coeff"]),
            "coeff_scale": self.settings.get("coeff_scale", "raw"),
            "positions": self.settings.get("positions", "response"),
            "trait": float(row["trait"]),
            "coherence": float(row["coherence"]),
            "n": int(row["n"]),
            "ci_low": float(row["ci_low"]),
            "ci_high": float(row["ci_high"]),
            "overlaps_baseline": (
                None if row["overlaps_baseline"] is None else bool(row["overlaps_baseline"])
            ),
        }

    def tag_vector(
        self, vector: PersonaVector, min_coherence: float | int = 50.0, *, maximize: bool = True
    ) -> PersonaVector:
        """``vector`` with the :meth:`best_cell` recorded in its metadata
        (``steering_layer``, ``steering_coeff``, ``steering_coeff_scale``,
        ``steering_positions``), so that ``steer(model, tagged)`` with no layers and no
        coefficient steers as that cell did (see :mod:`personalens.steering.plan`); save it
        to keep the choice."""
        if self.settings.get("mode", "add") != "add":
            raise PersonaLensError("only an add sweep (mode='add') chooses a coefficient")
        cell = self.best_cell(min_coherence, maximize=maximize)
        return vector.replace(
            metadata={
                **vector.metadata,
                STEERING_LAYER: cell["layer"],
                STEERING_COEFF: cell["coeff"],
                STEERING_COEFF_SCALE: cell["coeff_scale"],
                STEERING_POSITIONS: cell["positions"],
                "steering_sweep": {
                    "trait": self.trait,
                    "trait_score": cell["trait"],
                    "trait_ci": json_safe([cell["ci_low"], cell["ci_high"]]),
                    "n": cell["n"],
                    "overlaps_baseline": cell["overlaps_baseline"],
                    "coherence": cell["coherence"],
                    "min_coherence": min_coherence,
                },
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """The sweep's identity and its :meth:`summary` table (the replies are in the run's
        ``responses.jsonl``)."""
        return {
            "trait": self.trait,
            "layers": self.layers,
            "coeffs": self.coeffs,
            "settings": self.settings,
            "summary": json_safe(self.summary().to_dict(orient="records")),
        }


def _cell_key(layer: int | None, coeff: float) -> str:
    return "base" if layer is None else f"L{layer}/c{coeff:g}"


@holds_run_dir()
def steering_sweep(
    model: HookedTransformer,
    vector: PersonaVector,
    prompts: Sequence[Any] | None = None,
    *,
    layers: Sequence[int],
    coeffs: Sequence[float | int],
    trait: Trait | str | None = None,
    judge: Judge | str = "auto",
    system: str | None = None,
    generation: GenerationConfig | None = None,
    mode: str = "add",
    positions: str = "response",
    coeff_scale: str = "raw",
    reference: Sequence[Any] | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    backend: str = "auto",
    shard: Shard | str | None = None,
    min_replies: int = MIN_REPLIES,
) -> SteeringSweepResult:
    """Generate and judge under every (layer, coeff); see the module docstring.

    Args:
        prompts: user strings or conversations; default: all the trait's held-out evaluation
            questions (never used to extract the vector), each answered often enough that
            every cell holds ``min_replies`` replies (see ``min_replies``).
        trait: the trait to judge (a :class:`Trait` or a name); default: ``vector.trait``.
        judge: a :class:`Judge` or ``"auto"``/``"offline"``/``"openai"``.
        generation: a :class:`GenerationConfig`; default greedy, 64 new tokens.
        mode, positions, coeff_scale, reference: passed to :func:`personalens.steer`.
            ``positions`` defaults to ``"response"`` here, unlike ``steer``'s ``"all"``: the
            sweep reproduces the Persona Vectors steering figure, whose ``ActivationSteerer``
            steers the last prompt token and every generated token (see
            :mod:`personalens.steering.edits`); pass ``positions="all"`` for TransformerLens-style
            steering. :meth:`SteeringSweepResult.tag_vector` records the positions with the
            chosen coefficient.
        out: a run directory that makes the sweep resumable (see the module docstring).
        backend: ``"tl"``, ``"hf"`` or ``"auto"``, as in :func:`personalens.generate`; not
            part of the sweep's identity.
        shard: ``"i/n"`` or a :class:`~personalens.runs.sharding.Shard`: this process is worker
            ``i`` of ``n`` sharing ``out``; all return the full result.
        min_replies: with the default prompts, each held-out question gets ``max(generation.n,
            ceil(min_replies / n_questions))`` samples (20 questions: 1; 5: 4), at temperature
            1.0 when more than one and the generation is greedy (0: exactly ``generation.n``).
            Explicit ``prompts`` get exactly ``generation.n`` samples each.
    """
    backend = resolve_backend(model, backend)  # once for every cell
    worker = resolve_shard(shard)
    if worker is not None and out is None:
        raise PersonaLensError("shard= needs an out directory shared by the workers")
    trait_obj = resolve_trait(trait, vector)
    conversations = _conversations(prompts, trait_obj, system)
    layers = [int(L) for L in layers]
    coeffs = [float(c) for c in coeffs]
    if not layers or not coeffs:
        raise PersonaLensError("give at least one layer and one coefficient")
    gen = topped_up(generation or DEFAULT_GENERATION, len(conversations), min_replies, prompts)
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge
    how = {"mode": mode, "positions": positions, "coeff_scale": coeff_scale}
    plans = _plan_cells(model, vector, layers, coeffs, how, reference)
    settings = {
        "trait": trait_obj.name,
        "vector": {"model": vector.model, "trait": vector.trait, "variant": vector.variant},
        **how,
        "system": system,
        "generation": asdict(replace(gen, progress=None)),
        "judge": judge_obj.name,
        "n_prompts": len(conversations),
    }
    # a run directory belongs to one sweep; more cells may be added, settings may not change
    run = open_run_dir(
        out,
        settings,
        config_file="settings.json",
        what="a sweep",
        fix="Use a new --out directory or the same settings.",
    )
    cells: list[Cell] = [(None, 0.0)] if 0.0 in coeffs else []
    cells += [(L, c) for L in layers for c in coeffs if c != 0.0]
    replies = _generate_cells(
        model,
        conversations,
        cells,
        plans,
        replace(gen, progress=False),
        backend,
        run,
        progress,
        worker,
    )
    scores = judge_records(
        replies,
        trait_obj,
        judge_obj,
        path=run / "judge_scores.jsonl" if run else None,
        progress=progress,
        shard=worker,
    )
    result = SteeringSweepResult(
        trait=trait_obj.name,
        layers=layers,
        coeffs=coeffs,
        records=_records(layers, coeffs, replies, scores),
        settings=settings,
    )
    if run and is_leader(worker):
        atomic_write_json(run / "sweep.json", result.to_dict())
    note = result.overlap_note()
    if note:
        warn_at_caller(note)
    return result


def _conversations(
    prompts: Sequence[Any] | None, trait: Trait, system: str | None
) -> list[list[Message]]:
    """The prompts as conversations; default: the trait's held-out evaluation questions."""
    prompts = list(trait.split_questions()[1] if prompts is None else prompts)
    if not prompts:
        raise PersonaLensError("no prompts to steer: give prompts or a trait with questions")
    return [as_conversation(p, system) for p in prompts]


def _plan_cells(
    model: HookedTransformer,
    vector: PersonaVector,
    layers: list[int],
    coeffs: list[float],
    how: dict[str, str],
    reference: Sequence[Any] | None,
) -> dict[tuple[int, float], SteeringPlan]:
    """The steering of every cell with a nonzero coefficient, resolved up front: a bad layer or
    coefficient fails before any generation."""
    norms = residual_norms(model, reference) if how["coeff_scale"] == "resid" else None
    return {
        (L, c): plan_steering(
            model, vector, c, layers=[L], reference=reference, resid_norms=norms, **how
        )
        for L in layers
        for c in coeffs
        if c != 0.0
    }


def _generate_cells(
    model: HookedTransformer,
    conversations: list[list[Message]],
    cells: list[Cell],
    plans: dict[tuple[int, float], SteeringPlan],
    gen: GenerationConfig,
    backend: str,
    run: Path | None,
    progress: bool,
    worker: Shard | None,
) -> list[dict[str, Any]]:
    """Every reply of every cell, one resumable record per cell in ``responses.jsonl``; returned
    flat, one record per reply (``key``, ``cell``, ``question``, ``response``, indices)."""

    def run_cell(chunk: list[Cell]) -> list[dict[str, Any]]:
        ((L, c),) = chunk
        if L is None:
            res = generate(model, conversations, gen, backend=backend)
        else:
            with apply_plan(model, plans[(L, c)]):
                res = generate(model, conversations, gen, backend=backend)
        samples = zip(res.prompt_index, res.sample_index, res.responses)
        return [
            {
                "cell": _cell_key(L, c),
                "layer": L,
                "coeff": c,
                "samples": [
                    {"prompt_index": p, "sample_index": s, "response": r} for p, s, r in samples
                ],
            }
        ]

    done = run_resumable(
        cells,
        lambda cell: _cell_key(*cell),
        run_cell,
        path=run / "responses.jsonl" if run else None,
        chunk_size=1,
        desc="sweep cells",
        progress=progress,
        shard=worker,
        record_key="cell",
        unit="cell",
    )
    return [
        {
            "key": f"{key}/{s['prompt_index']}/{s['sample_index']}",
            "cell": key,
            "question": _question(conversations[s["prompt_index"]]),
            "response": s["response"],
            "prompt_index": s["prompt_index"],
            "sample_index": s["sample_index"],
        }
        for key in (_cell_key(L, c) for L, c in cells)
        for s in done[key]["samples"]
    ]


def _records(
    layers: list[int],
    coeffs: list[float],
    replies: list[dict[str, Any]],
    scores: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    """One record per (layer, coeff, reply) with its scores; coefficient 0 (generated once)
    under every layer."""
    records = []
    for L in layers:
        for c in coeffs:
            key = _cell_key(None if c == 0.0 else L, c)
            for r in replies:
                if r["cell"] != key:
                    continue
                records.append(
                    {
                        "layer": L,
                        "coeff": c,
                        "prompt_index": r["prompt_index"],
                        "sample_index": r["sample_index"],
                        "question": r["question"],
                        "response": r["response"],
                        "trait": scores[r["key"]]["trait"],
                        "coherence": scores[r["key"]]["coherence"],
                    }
                )
    return records


def _question(conversation: list[Message]) -> str:
    return next(m["content"] for m in reversed(conversation) if m["role"] == "user")


def resolve_trait(trait: Trait | str | None, vector: PersonaVector) -> Trait:
    """``trait`` as a :class:`Trait` (a name is loaded); default: the vector's trait."""
    if isinstance(trait, Trait):
        return trait
    name = trait or vector.trait
    if not name:
        raise PersonaLensError("the vector names no trait: pass trait=NAME or a Trait to judge")
    return load_trait(name)

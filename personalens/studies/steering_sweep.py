"""Steering sweeps: generate under every (layer, coefficient), judge trait and coherence.

``steering_sweep(model, vector, layers=[...], coeffs=[...])`` answers the trait's held-out
evaluation questions (or your prompts) with steering at each cell, judges every reply, and
returns a :class:`SteeringSweepResult`. Coefficient 0 is generated once (it is the same
unsteered model at every layer) and reported under every layer.

With ``out=DIR`` the sweep is resumable: each finished cell is one appended line of
``responses.jsonl``, judge scores go to ``judge_scores.jsonl`` chunk by chunk, and a rerun of
the same call skips everything already done. ``sweep.json`` (the summary table) is written last.

``shard="i/n"``: worker ``i`` of ``n`` sharing ``out`` (one per GPU or node) generates every
n-th cell and judges every n-th chunk, then waits for the others; worker 0 writes ``sweep.json``
(:mod:`personalens.runs.sharding`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens._io import atomic_write_json, check_run_config
from personalens.errors import PersonaLensError
from personalens.judges.base import Judge, judge_records
from personalens.judges.factory import make_judge
from personalens.model.chat import as_conversation
from personalens.model.generation import GenerationConfig, generate
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard, is_leader, resolve_shard

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.extraction.traits import Trait
    from personalens.vectors.vector import PersonaVector

DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0, batch_size=32)


@dataclass(frozen=True)
class SteeringSweepResult:
    """Every judged reply of a sweep (``records``) plus how it was made (``settings``)."""

    trait: str
    layers: list[int]
    coeffs: list[float]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, coeff, prompt, sample): response, trait score, coherence."""
        import pandas as pd

        return pd.DataFrame.from_records(self.records)

    def summary(self, coherence_threshold: float = 50.0) -> pd.DataFrame:
        """Per (layer, coeff): mean trait score and its standard error, mean coherence, and
        the fraction of coherent replies (coherence >= ``coherence_threshold``)."""
        df = self.to_frame()
        df["coherent"] = df["coherence"] >= coherence_threshold
        g = df.groupby(["layer", "coeff"], sort=True)
        out = g.agg(
            trait=("trait", "mean"),
            trait_sem=("trait", "sem"),
            coherence=("coherence", "mean"),
            frac_coherent=("coherent", "mean"),
            n=("trait", "size"),
            n_scored=("trait", "count"),
        )
        return out.reset_index()

    def to_dict(self) -> dict[str, Any]:
        table = self.summary().to_dict(orient="records")
        return {
            "trait": self.trait,
            "layers": self.layers,
            "coeffs": self.coeffs,
            "settings": self.settings,
            "summary": [{k: _json_num(v) for k, v in row.items()} for row in table],
        }


def _json_num(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    return v.item() if hasattr(v, "item") else v


def _cell_key(layer: int | None, coeff: float) -> str:
    return "base" if layer is None else f"L{layer}/c{coeff:g}"


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
    backend: str = "tl",
    shard: Shard | str | None = None,
) -> SteeringSweepResult:
    """Generate and judge under every (layer, coeff); see the module docstring.

    Args:
        prompts: user strings or conversations; default: the trait's held-out evaluation
            questions (never used to extract the vector).
        trait: the trait to judge (a :class:`Trait` or a name); default: ``vector.trait``.
        judge: a :class:`Judge` or ``"auto"``/``"offline"``/``"openai"``.
        generation: a :class:`GenerationConfig`; default greedy, 64 new tokens.
        mode, positions, coeff_scale, reference: passed to :func:`personalens.steer`.
        out: a run directory that makes the sweep resumable (see the module docstring).
        backend: ``"tl"``, ``"hf"`` or ``"auto"``, as in :func:`personalens.generate`; not
            part of the sweep's identity.
        shard: ``"i/n"`` or a :class:`~personalens.runs.sharding.Shard`: this process is worker
            ``i`` of ``n`` sharing ``out``; all return the full result.
    """
    from personalens.engines.hf import resolve_backend
    from personalens.steering.steer import plan_steering, residual_norms

    backend = resolve_backend(model, backend)  # once for every cell
    worker = resolve_shard(shard)
    if worker is not None and out is None:
        raise PersonaLensError("shard= needs an out directory shared by the workers")
    trait_obj = resolve_trait(trait, vector)
    if prompts is None:
        prompts = list(trait_obj.split_questions()[1])
    prompts = list(prompts)
    if not prompts:
        raise PersonaLensError("no prompts to steer: give prompts or a trait with questions")
    conversations = [as_conversation(p, system) for p in prompts]
    layers = [int(L) for L in layers]
    coeffs = [float(c) for c in coeffs]
    if not layers or not coeffs:
        raise PersonaLensError("give at least one layer and one coefficient")
    gen = generation or DEFAULT_GENERATION
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge
    # resolve every cell up front: a bad layer/coeff fails before any generation
    norms = residual_norms(model, reference) if coeff_scale == "resid" else None
    plans = {}
    for L in layers:
        for c in coeffs:
            if c != 0.0:
                plans[(L, c)] = plan_steering(
                    model,
                    vector,
                    c,
                    layers=[L],
                    positions=positions,
                    mode=mode,
                    coeff_scale=coeff_scale,
                    reference=reference,
                    resid_norms=norms,
                )
    settings = {
        "trait": trait_obj.name,
        "vector": {"model": vector.model, "trait": vector.trait, "variant": vector.variant},
        "mode": mode,
        "positions": positions,
        "coeff_scale": coeff_scale,
        "system": system,
        "generation": asdict(replace(gen, progress=None)),
        "judge": judge_obj.name,
        "n_prompts": len(prompts),
    }
    run = Path(out) if out is not None else None
    if run is not None:
        _check_settings(run, settings, layers, coeffs)

    cells: list[tuple[int | None, float]] = [(None, 0.0)] if 0.0 in coeffs else []
    cells += [(L, c) for L in layers for c in coeffs if c != 0.0]

    def run_cell(chunk: list[tuple[int | None, float]]) -> list[dict[str, Any]]:
        from personalens.steering.steer import apply_plan

        ((L, c),) = chunk
        cfg = replace(gen, progress=False)
        if L is None:
            res = generate(model, conversations, cfg, backend=backend)
        else:
            with apply_plan(model, plans[(L, c)]):
                res = generate(model, conversations, cfg, backend=backend)
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

    flat = [
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
    scores = judge_records(
        flat,
        trait_obj,
        judge_obj,
        path=run / "judge_scores.jsonl" if run else None,
        progress=progress,
        shard=worker,
    )
    records = []
    for L in layers:
        for c in coeffs:
            key = _cell_key(None if c == 0.0 else L, c)
            for r in flat:
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
    result = SteeringSweepResult(
        trait=trait_obj.name, layers=layers, coeffs=coeffs, records=records, settings=settings
    )
    if run and is_leader(worker):
        atomic_write_json(run / "sweep.json", result.to_dict())
    return result


def _question(conversation: list[dict[str, str]]) -> str:
    return next(m["content"] for m in reversed(conversation) if m["role"] == "user")


def resolve_trait(trait: Trait | str | None, vector: PersonaVector) -> Trait:
    from personalens.extraction.traits import Trait, load_trait

    if isinstance(trait, Trait):
        return trait
    name = trait or vector.trait
    if not name:
        raise PersonaLensError("the vector names no trait: pass trait=NAME or a Trait to judge")
    return load_trait(name)


def _check_settings(run: Path, settings: dict[str, Any], layers: list, coeffs: list) -> None:
    """A run directory belongs to one sweep; more cells may be added, settings may not change."""
    run.mkdir(parents=True, exist_ok=True)
    check_run_config(
        run / "settings.json",
        settings,
        what="a sweep",
        fix="Use a new --out directory or the same settings.",
    )

"""Does the last-prompt-token projection predict how strongly the reply will show the trait?

The Persona Vectors paper's monitoring experiment, for any trait and model: build prompt
*conditions* that push the model toward or away from the trait --

* a **system-prompt spectrum** (:func:`system_prompt_spectrum`): the trait's suppressing
  instructions, "You are a <opposite> assistant.", no system prompt, "You are a <trait>
  assistant.", and the trait's promoting instructions;
* **many-shot prompts** (:func:`many_shot_conditions`): 0, 5, 10, 15, 20 earlier user/assistant
  turns whose replies display the trait (:func:`trait_examples` takes them from an extraction
  run: the positive side's highest-scored replies to *extraction* questions),

then, for every condition and held-out evaluation question, measure the projection of the last
prompt token onto the unit vector (before any token is generated, at every layer), generate the
reply, and judge its trait score. :func:`monitoring_experiment` returns a
:class:`MonitoringResult` whose :meth:`~MonitoringResult.correlations` gives Pearson r between
projection and trait score over all points, between condition means, and within each condition.

With ``out=DIR`` the run is resumable: ``settings.json``, then ``projections.jsonl``,
``responses.jsonl`` and ``judge_scores.jsonl`` appended chunk by chunk (one record per distinct
prompt, so the 0-shot condition and "no system prompt" share their work), and
``monitoring.json`` last.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from personalens._io import atomic_write_json, check_run_config
from personalens.errors import PersonaLensError
from personalens.judges.base import Judge, judge_records
from personalens.judges.factory import make_judge
from personalens.model.chat import Message, as_conversation
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import read_run_log
from personalens.stats import pearson_ci, pearson_r
from personalens.studies.monitoring import last_prompt_projection

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.extraction.traits import Trait
    from personalens.vectors.vector import PersonaVector

__all__ = [
    "MonitorCondition",
    "MonitoringResult",
    "many_shot_conditions",
    "monitoring_experiment",
    "system_prompt_spectrum",
    "trait_examples",
]

DEFAULT_GENERATION = GenerationConfig(max_new_tokens=64, temperature=0.0, batch_size=16)


@dataclass(frozen=True)
class MonitorCondition:
    """A way of prompting: ``system`` (or none) and earlier ``history`` turns before the question.

    ``kind`` groups conditions (``"system"``, ``"many_shot"``); ``level`` orders them from
    trait-suppressing (negative) to trait-promoting (positive; the shot count for many-shot).
    """

    name: str
    kind: str
    level: float
    system: str | None = None
    history: tuple[Message, ...] = ()

    def conversation(self, question: str) -> list[Message]:
        messages: list[Message] = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system})
        messages.extend(dict(m) for m in self.history)
        messages.append({"role": "user", "content": question})
        return as_conversation(messages)


def system_prompt_spectrum(trait: Trait, pairs: int = 2) -> list[MonitorCondition]:
    """Conditions from trait-suppressing to trait-promoting system prompts.

    Levels: -2 the trait's negative instructions (first ``pairs`` pairs), -1 "You are a <neg>
    assistant.", 0 no system prompt (the chat template's default), +1 "You are a <pos>
    assistant.", +2 the positive instructions. Without ``assistant_names`` the ±1 levels are
    left out.
    """
    if pairs < 1:
        raise PersonaLensError("pairs must be >= 1")
    k = min(pairs, trait.n_pairs)
    names = trait.assistant_names or {}
    out = [
        MonitorCondition(f"neg instruction {i}", "system", -2.0, trait.system_prompt(i, "neg"))
        for i in range(k)
    ]

    def role(side: str) -> str:
        name = names[side]
        article = "an" if name[:1].lower() in "aeiou" else "a"
        return f"You are {article} {name} assistant."

    if names.get("neg"):
        out.append(MonitorCondition(f"{names['neg']} assistant", "system", -1.0, role("neg")))
    out.append(MonitorCondition("no system prompt", "system", 0.0, None))
    if names.get("pos"):
        out.append(MonitorCondition(f"{names['pos']} assistant", "system", 1.0, role("pos")))
    out += [
        MonitorCondition(f"pos instruction {i}", "system", 2.0, trait.system_prompt(i, "pos"))
        for i in range(k)
    ]
    return out


def trait_examples(
    run_dir: str | Path, n: int = 20, *, min_coherence: float = 50.0
) -> list[tuple[str, str]]:
    """(question, reply) pairs that display the trait, from an extraction run directory.

    The positive side's replies to extraction questions (never the held-out evaluation
    questions), coherent ones only, highest trait score first, one per question while enough
    distinct questions exist.
    """
    run = Path(run_dir)
    responses = read_run_log(run / "responses.jsonl")
    scores = {r["key"]: r for r in read_run_log(run / "judge_scores.jsonl")}
    if not responses or not scores:
        raise PersonaLensError(
            f"{run} has no responses.jsonl/judge_scores.jsonl: give an extraction run directory "
            "(personalens extract --out DIR)"
        )
    cands = []
    for r in responses:
        s = scores.get(r["key"])
        if r.get("side") != "pos" or r.get("split", "extract") != "extract" or s is None:
            continue
        if s.get("trait") is None or (s.get("coherence") or 0.0) < min_coherence:
            continue
        if not r.get("response", "").strip():
            continue
        cands.append((float(s["trait"]), r["key"], r["question"], r["response"]))
    cands.sort(key=lambda c: (-c[0], c[1]))
    picked, seen = [], set()
    for _, _, q, a in cands:  # distinct questions first
        if q not in seen:
            picked.append((q, a))
            seen.add(q)
    for _, _, q, a in cands:  # then more replies to the same questions
        if len(picked) >= n:
            break
        if (q, a) not in picked:
            picked.append((q, a))
    if len(picked) < n:
        raise PersonaLensError(
            f"{run} has only {len(picked)} coherent positive-side replies, fewer than the {n} "
            "examples asked for: lower n or min_coherence, or extract with more samples"
        )
    return picked[:n]


def many_shot_conditions(
    examples: Sequence[tuple[str, str]], counts: Sequence[int] = (0, 5, 10, 15, 20)
) -> list[MonitorCondition]:
    """One condition per shot count: the first ``k`` examples as earlier user/assistant turns."""
    out = []
    for k in counts:
        if k < 0 or k > len(examples):
            raise PersonaLensError(f"{k} shots asked for but {len(examples)} examples given")
        history = tuple(
            m
            for q, a in examples[:k]
            for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})
        )
        out.append(MonitorCondition(f"{k}-shot", "many_shot", float(k), None, history))
    return out


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class MonitoringResult:
    """One record per (condition, question): projections at every measured layer, the reply,
    its judged trait and coherence scores. ``layer`` is the layer the headline numbers use."""

    trait: str
    layer: int
    layers: list[int]
    records: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_frame(self, layer: int | None = None) -> pd.DataFrame:
        """One row per (condition, question); ``projection`` is at ``layer`` (default the
        headline layer)."""
        import pandas as pd

        j = self._slot(layer)
        rows = [
            {k: v for k, v in r.items() if k != "projections"} | {"projection": r["projections"][j]}
            for r in self.records
        ]
        return pd.DataFrame(rows)

    def _slot(self, layer: int | None) -> int:
        layer = self.layer if layer is None else layer
        if layer not in self.layers:
            raise PersonaLensError(f"layer {layer} was not measured (layers {self.layers})")
        return self.layers.index(layer)

    def _points(self, layer: int | None, kind: str | None) -> list[tuple[str, float, float]]:
        j = self._slot(layer)
        return [
            (r["condition"], r["projections"][j], r["trait"])
            for r in self.records
            if kind is None or r["kind"] == kind
        ]

    def correlations(self, layer: int | None = None, kind: str | None = None) -> dict[str, Any]:
        """Pearson r of projection vs trait score: over all points (with a 95% Fisher CI), over
        condition means, and within each condition (plus their mean). ``kind`` restricts to
        ``"system"`` or ``"many_shot"`` conditions."""
        pts = self._points(layer, kind)
        if not pts:
            raise PersonaLensError(f"no records of kind {kind!r}")
        xs = [p[1] for p in pts]
        ys = [p[2] for p in pts]
        n = sum(1 for x, y in zip(xs, ys) if not (math.isnan(x) or math.isnan(y)))
        r = pearson_r(xs, ys)
        conds: dict[str, list[tuple[float, float]]] = {}
        for c, x, y in pts:
            conds.setdefault(c, []).append((x, y))
        within = {c: pearson_r([x for x, _ in v], [y for _, y in v]) for c, v in conds.items()}
        means = {
            c: (_nanmean([x for x, _ in v]), _nanmean([y for _, y in v])) for c, v in conds.items()
        }
        finite = [v for v in within.values() if not math.isnan(v)]
        return {
            "layer": self.layer if layer is None else layer,
            "kind": kind or "all",
            "n": n,
            "r": r,
            "r_ci95": list(pearson_ci(r, n)),
            "n_conditions": len(conds),
            "r_condition_means": pearson_r(
                [m[0] for m in means.values()], [m[1] for m in means.values()]
            ),
            "r_within": within,
            "r_within_mean": sum(finite) / len(finite) if finite else math.nan,
        }

    def r_by_layer(self, kind: str | None = None) -> pd.DataFrame:
        """Overall and condition-mean Pearson r at every measured layer."""
        import pandas as pd

        rows = []
        for L in self.layers:
            c = self.correlations(L, kind)
            rows.append({"layer": L, "r": c["r"], "r_condition_means": c["r_condition_means"]})
        return pd.DataFrame(rows)

    def summary(self, layer: int | None = None) -> pd.DataFrame:
        """Per condition: mean projection, mean trait score (± s.e.m.), coherence, n."""
        df = self.to_frame(layer)
        g = df.groupby(["kind", "level", "condition"], sort=True)
        return g.agg(
            projection=("projection", "mean"),
            trait=("trait", "mean"),
            trait_sem=("trait", "sem"),
            coherence=("coherence", "mean"),
            n=("trait", "size"),
        ).reset_index()

    def to_dict(self) -> dict[str, Any]:
        kinds = sorted({r["kind"] for r in self.records})
        return _json_safe(
            {
                "trait": self.trait,
                "layer": self.layer,
                "layers": self.layers,
                "settings": self.settings,
                "correlations": {k: self.correlations(kind=k) for k in [None, *kinds]},
                "r_by_layer": self.r_by_layer().to_dict(orient="records"),
                "conditions": self.summary().to_dict(orient="records"),
                "records": self.records,
            }
        )


def _nanmean(xs: Sequence[float]) -> float:
    v = [x for x in xs if not math.isnan(x)]
    return sum(v) / len(v) if v else math.nan


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {("all" if k is None else str(k)): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- experiment


def _key(conversation: list[Message]) -> str:
    return hashlib.sha1(json.dumps(conversation, sort_keys=True).encode()).hexdigest()[:16]


def monitoring_experiment(
    model: HookedTransformer,
    vector: PersonaVector,
    conditions: Sequence[MonitorCondition],
    *,
    questions: Sequence[str] | None = None,
    trait: Trait | str | None = None,
    judge: Judge | str = "auto",
    layer: int | None = None,
    layers: Sequence[int] | str | None = None,
    generation: GenerationConfig | None = None,
    max_batch_tokens: int = 16384,
    out: str | Path | None = None,
    progress: bool = True,
) -> MonitoringResult:
    """Project, generate and judge every (condition, question); see the module docstring.

    Args:
        conditions: e.g. ``system_prompt_spectrum(trait) + many_shot_conditions(examples)``.
        questions: default: the trait's held-out evaluation questions.
        layer: the headline layer for :meth:`MonitoringResult.correlations`; default the
            vector's ``best_layer``. ``layers`` (default all) are measured too.
        generation: default greedy, 64 new tokens.
        max_batch_tokens: caps padded tokens per batch (long many-shot prompts).
        out: a run directory that makes the experiment resumable.
    """
    from personalens.studies.monitoring import _default_layer, _resolve_layers
    from personalens.studies.steering_sweep import resolve_trait

    vector.check_compatible(model)
    trait_obj = resolve_trait(trait, vector)
    questions = list(questions if questions is not None else trait_obj.split_questions()[1])
    if not questions:
        raise PersonaLensError("no questions: give questions= or a trait with eval_questions")
    if not conditions:
        raise PersonaLensError("no conditions: e.g. system_prompt_spectrum(trait)")
    names = [c.name for c in conditions]
    if len(set(names)) != len(names):
        raise PersonaLensError(f"condition names must be unique, got {names}")
    headline = _default_layer(vector, model, layer)
    layer_ids = list(_resolve_layers(vector, model, layers))
    if headline not in layer_ids:
        layer_ids = sorted({*layer_ids, headline})
    gen = generation or DEFAULT_GENERATION
    judge_obj = make_judge(judge) if isinstance(judge, str) else judge

    cells = [(c, qi, c.conversation(q)) for c in conditions for qi, q in enumerate(questions)]
    prompts: dict[str, list[Message]] = {}
    for _, _, conv in cells:
        prompts.setdefault(_key(conv), conv)
    settings = _json_safe(
        {
            "trait": trait_obj.name,
            "vector": {"model": vector.model, "trait": vector.trait, "variant": vector.variant},
            "layers": layer_ids,
            "generation": asdict(replace(gen, progress=None)),
            "judge": judge_obj.name,
            "questions": questions,
            "conditions": [asdict(c) for c in conditions],
        }
    )
    run = Path(out) if out is not None else None
    if run is not None:
        _check_settings(run, settings)
    tok = model.tokenizer
    from personalens.model.chat import encode_chat

    lengths = {k: len(encode_chat(tok, conv)) for k, conv in prompts.items()}
    order = sorted(prompts, key=lambda k: (-lengths[k], k))

    def chunked(keys: list[str]) -> list[list[str]]:
        out_chunks, i = [], 0
        while i < len(keys):
            size = max(1, min(gen.batch_size, max_batch_tokens // max(lengths[keys[i]], 1)))
            out_chunks.append(keys[i : i + size])
            i += size
        return out_chunks

    def project(chunk: list[str]) -> list[dict[str, Any]]:
        pp = last_prompt_projection(
            model,
            vector,
            [prompts[k] for k in chunk],
            layers=layer_ids,
            batch_size=len(chunk),
            max_batch_tokens=10**9,
        )
        return [{"key": k, "projections": pp.values[i].tolist()} for i, k in enumerate(chunk)]

    def gen_chunk(chunk: list[str]) -> list[dict[str, Any]]:
        res = generate_samples(
            model,
            [prompts[k] for k in chunk],
            [0] * len(chunk),
            replace(gen, batch_size=len(chunk), progress=False),
        )
        return [
            {"key": k, "response": r, "n_tokens": len(t)}
            for k, r, t in zip(chunk, res.responses, res.response_tokens)
        ]

    projections: dict[str, dict[str, Any]] = {}
    responses: dict[str, dict[str, Any]] = {}
    for what, fn, store, name in (
        ("projecting", project, projections, "projections.jsonl"),
        ("generating", gen_chunk, responses, "responses.jsonl"),
    ):
        # one resumable pass per batch of similar length; run_resumable skips finished ones
        chunks = chunked(order)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(order), desc=what, unit="prompt")
        try:
            for chunk in chunks:
                store.update(
                    run_resumable(
                        chunk,
                        lambda k: k,
                        fn,
                        path=run / name if run else None,
                        chunk_size=len(chunk),
                        desc=what,
                        progress=False,
                    )
                )
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    judged = judge_records(
        [
            {"key": k, "question": prompts[k][-1]["content"], "response": responses[k]["response"]}
            for k in order
        ],
        trait_obj,
        judge_obj,
        path=run / "judge_scores.jsonl" if run else None,
        progress=progress,
    )
    records = []
    for c, qi, conv in cells:
        k = _key(conv)
        records.append(
            {
                "condition": c.name,
                "kind": c.kind,
                "level": c.level,
                "question_index": qi,
                "question": questions[qi],
                "n_prompt_tokens": lengths[k],
                "projections": projections[k]["projections"],
                "response": responses[k]["response"],
                "trait": judged[k]["trait"],
                "coherence": judged[k]["coherence"],
            }
        )
    result = MonitoringResult(
        trait=trait_obj.name,
        layer=headline,
        layers=layer_ids,
        records=records,
        settings=settings,
    )
    if run is not None:
        atomic_write_json(run / "monitoring.json", result.to_dict())
    return result


def _check_settings(run: Path, settings: dict[str, Any]) -> None:
    run.mkdir(parents=True, exist_ok=True)
    check_run_config(
        run / "settings.json",
        settings,
        what="a monitoring run",
        fix="Use a new out directory or the same settings.",
    )

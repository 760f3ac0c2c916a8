"""Screening a dataset by projection difference ΔP (data screening of the Persona Vectors paper).

For a finetuning sample (prompt conversation, response), the *projection difference* is

    ΔP = mean_t <h_L(t), v̂_L>  over the dataset's response tokens
       - mean_t <h_L(t), v̂_L>  over the model's own response to the same prompt,

where ``h_L`` is the residual stream at personalens layer ``L`` (``blocks.L.hook_resid_post``),
``v̂_L`` the unit-normalised persona vector at that layer, and the averages exclude padding and
the prompt (the response-average summary of :mod:`personalens.model.activations`). A positive ΔP means
the dataset's answer pushes the model further along the trait than its own answer would:
training on such samples is expected to shift the model toward the trait.

Both responses are tokenised from text the same way (the model's own reply is decoded and
re-encoded, as a finetuning set would hold it), so identical text gives identical tokens, and
identical (prompt, response) token sequences are run once: ΔP of a sample whose response is
the model's own reply is exactly 0. Identical prompts are generated once.

With ``out=DIR`` a screen is resumable: ``config.json`` (the settings; a directory refuses to
resume with other settings, another vector, layer or data), ``generations.jsonl`` (the model's
replies, one record per distinct prompt) and ``projections.jsonl`` (one projection per distinct
token sequence) are appended chunk by chunk, then ``scores.csv`` (``id, delta_p, proj_dataset,
proj_model``, highest ΔP first) and, last, ``summary.json``. Kill the process at any point and
call again: finished chunks are not redone and the scores are identical to an uninterrupted run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._io import atomic_write_json, atomic_write_text, check_run_config
from personalens.conventions import check_layer
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError
from personalens.model.activations import summarize_batch
from personalens.model.chat import Message, as_conversation, encode_chat, encode_response
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.runs.resume import run_resumable
from personalens.runs.sharding import Shard, is_leader, resolve_shard

if TYPE_CHECKING:
    import pandas as pd
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = [
    "DEFAULT_GENERATION",
    "ScreeningResult",
    "ScreeningSample",
    "load_screening_data",
    "screen",
]

FORMAT = "personalens.studies.screening"
VERSION = 1
Scores = Float[Tensor, " n"]
DEFAULT_GENERATION = GenerationConfig(max_new_tokens=128, temperature=0.0)


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ScreeningSample:
    """One dataset sample: the conversation before the response, and the response text."""

    id: str
    prompt: list[Message]
    response: str


def load_screening_data(source: Any, *, limit: int | None = None) -> list[ScreeningSample]:
    """Samples to screen, from a file or an in-memory dataset.

    ``source`` is one of

    * a ``.jsonl`` file, one JSON object per line, either ``{"messages": [...]}`` in chat format
      (the last message must be the assistant's response; everything before it is the prompt
      conversation) or ``{"prompt": ..., "answer": ...}``; optional ``"id"`` and, with
      ``prompt``, ``"system"``;
    * a ``.csv`` file with ``prompt`` and ``answer`` columns (optional ``id`` and ``system``);
    * a ``datasets.Dataset``, a pandas DataFrame or a sequence of dicts with either shape;
    * a list of :class:`ScreeningSample` (returned as is).

    Samples without an ``id`` get their 0-based row number. ``limit`` keeps the first N.
    Malformed input raises :class:`PersonaLensError` naming the file, the row and the key.
    """
    if isinstance(source, (str, os.PathLike)):
        samples = _load_file(Path(source))
        where = str(source)
    elif isinstance(source, Sequence) and source and isinstance(source[0], ScreeningSample):
        samples, where = list(source), "the given samples"
    else:
        rows, where = _rows_of(source)
        samples = [_parse_row(row, f"{where}, row {i}", i) for i, row in enumerate(rows)]
    if limit is not None:
        samples = samples[:limit]
    if not samples:
        raise PersonaLensError(f"{where} holds no samples: nothing to screen")
    _check_unique_ids(samples, where)
    return samples


def _rows_of(source: Any) -> tuple[list[Any], str]:
    if hasattr(source, "column_names") and hasattr(source, "num_rows"):  # datasets.Dataset
        return list(source), "the dataset"
    if (
        isinstance(source, Mapping)
        and source
        and all(hasattr(v, "column_names") for v in source.values())
    ):
        raise PersonaLensError(
            f"got a DatasetDict with splits {sorted(source)}; pass one split, e.g. ds['train']"
        )
    if hasattr(source, "to_dict") and hasattr(source, "columns"):  # pandas DataFrame
        return source.to_dict(orient="records"), "the DataFrame"
    if isinstance(source, Sequence) and not isinstance(source, (str, bytes)):
        return list(source), "the given rows"
    raise PersonaLensError(
        f"cannot screen a {type(source).__name__}: give a .jsonl or .csv path, a datasets.Dataset, "
        "a DataFrame or a list of dicts"
    )


def _load_file(path: Path) -> list[ScreeningSample]:
    if not path.exists():
        raise PersonaLensError(f"{path} does not exist: give a .jsonl or .csv dataset file")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        samples = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise PersonaLensError(f"{where}: not valid JSON ({exc.msg})") from None
                samples.append(_parse_row(row, where, len(samples)))
        return samples
    if suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            missing = [c for c in ("prompt", "answer") if c not in columns]
            if missing:
                raise PersonaLensError(
                    f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} (the file "
                    f"has {columns}); a CSV dataset needs 'prompt' and 'answer' columns "
                    "(optional 'id', 'system')"
                )
            return [
                _parse_row(
                    {k: v for k, v in row.items() if k in ("id", "prompt", "answer", "system")},
                    f"{path}, row {i + 1} (line {reader.line_num})",
                    i,
                    blank_is_missing=True,
                )
                for i, row in enumerate(reader)
            ]
    raise PersonaLensError(
        f"{path}: unknown dataset format {suffix or '(no suffix)'!r}; use .jsonl (chat "
        "'messages' or 'prompt'/'answer' per line) or .csv ('prompt', 'answer' columns)"
    )


def _parse_row(row: Any, where: str, index: int, blank_is_missing: bool = False) -> ScreeningSample:
    if not isinstance(row, Mapping):
        raise PersonaLensError(f"{where}: expected an object with 'messages', got {row!r:.80}")
    if blank_is_missing:  # a CSV cell cannot be absent, only empty
        row = {k: v for k, v in row.items() if not (k in ("id", "system") and v in ("", None))}
    raw_id = row.get("id")
    sample_id = str(index) if raw_id is None or raw_id == "" else str(raw_id)
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
            raise PersonaLensError(f"{where}: key 'messages' must be a non-empty list of messages")
        for j, m in enumerate(messages):
            if not isinstance(m, Mapping):
                raise PersonaLensError(f"{where}: message {j} of 'messages' is not an object")
            for key in ("role", "content"):
                if key not in m:
                    raise PersonaLensError(
                        f"{where}: message {j} of 'messages' is missing key {key!r} ({m!r:.80})"
                    )
        last = messages[-1]
        if last["role"] != "assistant":
            raise PersonaLensError(
                f"{where}: the last message of 'messages' must be the assistant's response (the "
                f"sample to screen), got role {last['role']!r}"
            )
        prompt = [{"role": m["role"], "content": m["content"]} for m in messages[:-1]]
        response = last["content"]
        if not any(m["role"] == "user" for m in prompt):
            raise PersonaLensError(
                f"{where}: 'messages' has no user message before the assistant's response"
            )
    else:
        missing = [k for k in ("prompt", "answer") if k not in row]
        if missing:
            raise PersonaLensError(
                f"{where}: missing key {missing[0]!r} (a sample needs 'messages', or 'prompt' and "
                f"'answer'; keys present: {sorted(row)})"
            )
        system = row.get("system")
        if system is not None and not isinstance(system, str):
            raise PersonaLensError(f"{where}: key 'system' must be a string")
        if not isinstance(row["prompt"], str):
            raise PersonaLensError(f"{where}: key 'prompt' must be a string")
        prompt = [] if system is None else [{"role": "system", "content": system}]
        prompt.append({"role": "user", "content": row["prompt"]})
        response = row["answer"]
    if not isinstance(response, str) or not response.strip():
        raise PersonaLensError(
            f"{where}: the response (key {'messages' if 'messages' in row else 'answer'!r}) is "
            "empty, whitespace only or not a string; a response average needs at least one "
            "token of text"
        )
    try:
        prompt = as_conversation(prompt)
    except PersonaLensError as exc:
        raise PersonaLensError(f"{where}: {exc}") from None
    return ScreeningSample(id=sample_id, prompt=prompt, response=response)


def _check_unique_ids(samples: Sequence[ScreeningSample], where: str) -> None:
    seen: dict[str, int] = {}
    for i, s in enumerate(samples):
        if s.id in seen:
            raise PersonaLensError(
                f"{where}: id {s.id!r} appears twice (samples {seen[s.id]} and {i}); ids must be "
                "unique"
            )
        seen[s.id] = i


# ----------------------------------------------------------------------------- result


@dataclass(frozen=True)
class ScreeningResult:
    """Per-sample projection differences of one screened dataset, in the dataset's order.

    ``delta_p = proj_dataset - proj_model``; ``proj_model`` (and ``delta_p``) is NaN where the
    model's own reply was empty. ``settings`` are the run's resolved settings.
    """

    ids: list[str]
    delta_p: Scores
    proj_dataset: Scores
    proj_model: Scores
    layer: int
    name: str = "dataset"
    model_responses: list[str] = field(default_factory=list, repr=False)
    settings: dict[str, Any] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.ids)

    def _finite(self) -> Tensor:
        return self.delta_p[~self.delta_p.isnan()]

    @property
    def mean(self) -> float:
        """Mean ΔP over samples (NaN samples left out)."""
        d = self._finite()
        return d.mean().item() if len(d) else math.nan

    @property
    def std(self) -> float:
        d = self._finite()
        return d.std().item() if len(d) > 1 else math.nan

    def to_frame(self) -> pd.DataFrame:
        """``id, delta_p, proj_dataset, proj_model``, highest ΔP first (NaN last)."""
        import pandas as pd

        df = pd.DataFrame(
            {
                "id": self.ids,
                "delta_p": self.delta_p.tolist(),
                "proj_dataset": self.proj_dataset.tolist(),
                "proj_model": self.proj_model.tolist(),
            }
        )
        df = df.sort_values("delta_p", ascending=False, na_position="last", kind="stable")
        return df.reset_index(drop=True)

    def top(self, k: int = 10) -> pd.DataFrame:
        """The ``k`` samples with the highest ΔP."""
        return self.to_frame().head(k)

    def summary(self) -> dict[str, Any]:
        d = self._finite().double()
        qs = (0.05, 0.25, 0.5, 0.75, 0.95)
        quant = (
            torch.quantile(d, torch.tensor(qs, dtype=torch.float64)).tolist()
            if len(d)
            else [math.nan] * len(qs)
        )
        return {
            "name": self.name,
            "n": len(self),
            "n_nan": len(self) - len(d),
            "layer": self.layer,
            "mean_delta_p": self.mean,
            "std_delta_p": self.std,
            "min_delta_p": d.min().item() if len(d) else math.nan,
            "max_delta_p": d.max().item() if len(d) else math.nan,
            "quantiles": {f"p{round(q * 100)}": v for q, v in zip(qs, quant)},
            "mean_proj_dataset": self.proj_dataset.mean().item(),
            "mean_proj_model": _nanmean(self.proj_model),
        }


def _nanmean(t: Tensor) -> float:
    t = t[~t.isnan()]
    return t.mean().item() if len(t) else math.nan


# ----------------------------------------------------------------------------- screening


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def _vector_sha(vector: PersonaVector) -> str:
    return hashlib.sha256(vector.directions.contiguous().numpy().tobytes()).hexdigest()


def screen(
    model: HookedTransformer,
    vector: PersonaVector,
    data: Any,
    *,
    layer: int | None = None,
    out: str | os.PathLike[str] | None = None,
    generation: GenerationConfig | None = None,
    batch_size: int = 16,
    name: str | None = None,
    progress: bool = True,
    backend: str = "tl",
    shard: Shard | str | None = None,
) -> ScreeningResult:
    """ΔP of every sample of ``data`` (see the module docstring).

    Args:
        data: anything :func:`load_screening_data` accepts (a path, a ``datasets.Dataset``, rows).
        layer: personalens layer ``L`` (``blocks.L.hook_resid_post``); default: the vector's
            ``metadata["best_layer"]``.
        out: a run directory that makes the screen resumable and receives ``scores.csv`` and
            ``summary.json``.
        generation: how the model writes its own replies; default greedy, 128 new tokens.
            ``batch_size`` replaces its batch size; ``n`` must be 1.
        batch_size: samples per chunk, per generation batch and per forward batch.
        name: the dataset's name in results and plots (default: the file's stem).
        backend: ``"hf"`` runs generation and projections on a Hugging Face model sharing the
            weights (faster; :mod:`personalens.engines.hf`); ``"auto"`` does so when that is
            exact for this model and its hooks; not part of the run's identity.
        shard: ``"i/n"`` or a :class:`~personalens.runs.sharding.Shard`: this process is worker
            ``i`` of ``n`` sharing ``out`` (one per GPU or node); each does every n-th chunk,
            all return the full result, worker 0 writes the tables. Not part of the identity.
    """
    t_start = time.perf_counter()
    vector.check_compatible(model)
    if layer is None:
        best = vector.metadata.get("best_layer")
        if best is None:
            raise PersonaLensError(
                "give layer=L: this vector records no best_layer in its metadata"
            )
        layer = int(best)
    L = check_layer(layer, model.cfg.n_layers)
    unit = vector.unit(L).double()
    if not bool(unit.abs().sum() > 0):
        raise PersonaLensError(f"the vector is zero at layer {L}: nothing to project onto")
    if batch_size < 1:
        raise PersonaLensError(f"batch_size must be >= 1, got {batch_size}")
    backend = resolve_backend(model, backend)  # once for every stage and chunk
    worker = resolve_shard(shard)
    if worker is not None and out is None:
        raise PersonaLensError("shard= needs an out directory shared by the workers")
    gen = replace(generation or DEFAULT_GENERATION, batch_size=batch_size, progress=False)
    if gen.n != 1:
        raise PersonaLensError(
            "screening compares with one model reply per prompt: use a GenerationConfig with n=1"
        )
    samples = load_screening_data(data)
    if name is None:
        name = Path(data).stem if isinstance(data, (str, os.PathLike)) else "dataset"

    tok = model.tokenizer
    if tok is None:
        raise PersonaLensError("the model has no tokenizer; load it with personalens.load_model")
    prompt_key = {s.id: _sha(s.prompt)[:16] for s in samples}
    prompt_ids: dict[str, list[int]] = {}
    for s in samples:
        if prompt_key[s.id] not in prompt_ids:
            prompt_ids[prompt_key[s.id]] = encode_chat(tok, s.prompt)
    data_ids = {s.id: encode_response(tok, s.response) for s in samples}
    n_ctx = model.cfg.n_ctx
    for s in samples:
        n_tok = len(prompt_ids[prompt_key[s.id]]) + len(data_ids[s.id])
        if n_tok > n_ctx:
            raise PersonaLensError(
                f"sample {s.id!r} is {n_tok} tokens long (prompt + response), more than the "
                f"model's context of {n_ctx}; shorten or drop it"
            )
        if not data_ids[s.id]:
            raise PersonaLensError(f"sample {s.id!r}: the response tokenises to nothing")

    settings = {
        "format": FORMAT,
        "version": VERSION,
        "model": model.cfg.model_name,
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "layer": L,
        "variant": "response_avg",
        "vector": {
            "trait": vector.trait,
            "model": vector.model,
            "variant": vector.variant,
            "sha256": _vector_sha(vector),
        },
        "data": {
            "n": len(samples),
            "sha256": _sha([[s.id, s.prompt, s.response] for s in samples]),
        },
        "generation": asdict(replace(gen, progress=None)),
        "batch_size": batch_size,
    }
    run = Path(out) if out is not None else None
    if run is not None:
        run.mkdir(parents=True, exist_ok=True)
        check_run_config(
            run / "config.json",
            settings,
            what="a screening run",
            fix="Resume with the same model, vector, layer, data and settings, or use a new --out directory.",
        )
        if is_leader(worker):  # a rerun invalidates old final artifacts
            for stale in ("summary.json", "scores.csv"):
                (run / stale).unlink(missing_ok=True)

    # 1. the model's own reply to each distinct prompt (longest prompts first: less padding)
    unique = list(prompt_ids)
    unique.sort(key=lambda k: -len(prompt_ids[k]))
    conv_of = {prompt_key[s.id]: s.prompt for s in reversed(samples)}

    def generate_chunk(keys: list[str]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        res = generate_samples(
            model, [conv_of[k] for k in keys], [0] * len(keys), gen, backend=backend
        )
        share = (time.perf_counter() - t0) / len(keys)
        return [
            {
                "key": k,
                "response": res.responses[i],
                "n_response_tokens": len(res.response_tokens[i]),
                "finish_reason": res.finish_reasons[i],
                "seconds": share,
            }
            for i, k in enumerate(keys)
        ]

    generations = run_resumable(
        unique,
        lambda k: k,
        generate_chunk,
        path=run / "generations.jsonl" if run else None,
        chunk_size=batch_size,
        desc="model replies",
        progress=progress,
        shard=worker,
    )

    # 2. response-average projections of every distinct (prompt, response) token sequence
    # the reply as text, re-encoded like a dataset response (cut to the context if decoding
    # and re-encoding made it longer, e.g. invalid UTF-8 pieces of a random model)
    model_ids = {
        k: encode_response(tok, generations[k]["response"])[: n_ctx - len(prompt_ids[k])]
        for k in unique
    }
    sequences: dict[str, tuple[list[int], list[int]]] = {}

    def seq_key(p_ids: list[int], r_ids: list[int]) -> str:
        key = hashlib.sha256(json.dumps([p_ids, r_ids]).encode()).hexdigest()[:20]
        sequences.setdefault(key, (p_ids, r_ids))
        return key

    data_seq = {s.id: seq_key(prompt_ids[prompt_key[s.id]], data_ids[s.id]) for s in samples}
    model_seq = {k: seq_key(prompt_ids[k], model_ids[k]) for k in unique if model_ids[k]}
    todo = list(sequences)
    todo.sort(key=lambda k: -(len(sequences[k][0]) + len(sequences[k][1])))

    def project_chunk(keys: list[str]) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        acts = summarize_batch(
            model,
            [sequences[k][0] for k in keys],
            [sequences[k][1] for k in keys],
            (L,),
            backend=backend,
        )
        proj = acts.response_avg[:, 0].double() @ unit
        share = (time.perf_counter() - t0) / len(keys)
        return [
            {
                "key": k,
                "proj": proj[i].item(),
                "n_response_tokens": len(sequences[k][1]),
                "seconds": share,
            }
            for i, k in enumerate(keys)
        ]

    projections = run_resumable(
        todo,
        lambda k: k,
        project_chunk,
        path=run / "projections.jsonl" if run else None,
        chunk_size=batch_size,
        desc="projections",
        progress=progress,
        shard=worker,
    )

    def proj_of(key: str | None) -> float:
        return math.nan if key is None else float(projections[key]["proj"])

    p_data = torch.tensor([proj_of(data_seq[s.id]) for s in samples], dtype=torch.float64)
    p_model = torch.tensor(
        [proj_of(model_seq.get(prompt_key[s.id])) for s in samples], dtype=torch.float64
    )
    result = ScreeningResult(
        ids=[s.id for s in samples],
        delta_p=p_data - p_model,
        proj_dataset=p_data,
        proj_model=p_model,
        layer=L,
        name=name,
        model_responses=[generations[prompt_key[s.id]]["response"] for s in samples],
        settings=settings,
    )
    if run is not None and is_leader(worker):
        gen_s = sum(float(generations[k].get("seconds", 0.0)) for k in unique)
        proj_s = sum(float(projections[k].get("seconds", 0.0)) for k in todo)
        compute_s = gen_s + proj_s
        summary = {
            **result.summary(),
            "n_unique_prompts": len(unique),
            "n_sequences": len(todo),
            "n_empty_model_replies": sum(1 for k in unique if not model_ids[k]),
            "samples_per_s": len(samples) / compute_s if compute_s > 0 else None,
            "timings_s": {
                "generate": round(gen_s, 3),
                "project": round(proj_s, 3),
                "compute_total": round(compute_s, 3),
                "this_call_wall": round(time.perf_counter() - t_start, 3),
            },
            "samples_per_s_note": "samples / (generation + projection compute time), summed "
            "over every call that did part of the work (excludes model loading)",
            "vector": settings["vector"],
            "model": settings["model"],
            "generation": settings["generation"],
        }
        atomic_write_text(run / "scores.csv", result.to_frame().to_csv(index=False))
        atomic_write_json(run / "summary.json", _json_safe(summary))
    return result


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj

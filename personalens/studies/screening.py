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

The samples are read by :mod:`personalens.studies.screening_data`; the result is a
:class:`~personalens.studies.screening_result.ScreeningResult`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from personalens._io import atomic_write_json, atomic_write_text, digest
from personalens.conventions import check_layer
from personalens.engines.hf import resolve_backend
from personalens.errors import PersonaLensError
from personalens.model.activations import summarize_batch
from personalens.model.chat import encode_chat, encode_response
from personalens.model.generation import GenerationConfig, generate_samples
from personalens.results import json_safe
from personalens.runs.lock import holds_run_dir
from personalens.runs.resume import run_resumable
from personalens.runs.run_dir import open_run_dir
from personalens.runs.sharding import Shard, is_leader, resolve_shard
from personalens.studies.screening_data import ScreeningSample, load_screening_data
from personalens.studies.screening_result import ScreeningResult

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

    from personalens.vectors.vector import PersonaVector

__all__ = ["DEFAULT_GENERATION", "screen"]

FORMAT = "personalens.studies.screening"
VERSION = 1
DEFAULT_GENERATION = GenerationConfig(max_new_tokens=128, temperature=0.0)


@holds_run_dir()
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
    backend: str = "auto",
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
    L, unit = _axis(model, vector, layer)
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
    tokens = _Tokens.encode(model, samples)
    settings = _settings(model, vector, L, samples, gen, batch_size)
    run = _open_run(out, settings, worker)
    stage = _Stage(run, batch_size, progress, worker)
    replies = _model_replies(model, samples, tokens, gen, backend, stage)
    proj = _projections(model, samples, tokens, replies, L, unit, backend, stage)
    result = ScreeningResult(
        ids=[s.id for s in samples],
        delta_p=proj.dataset - proj.model,
        proj_dataset=proj.dataset,
        proj_model=proj.model,
        layer=L,
        name=name,
        model_responses=[replies.records[tokens.prompt_key[s.id]]["response"] for s in samples],
        settings=settings,
    )
    if run is not None and is_leader(worker):
        _write_tables(run, result, replies, proj, settings, time.perf_counter() - t_start)
    return result


# ----------------------------------------------------------------------------- setup


def _axis(model: HookedTransformer, vector: PersonaVector, layer: int | None) -> tuple[int, Tensor]:
    """The layer ``L`` (default: the vector's best layer) and the unit vector there (float64)."""
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
    return L, unit


def _sha(obj: Any, length: int | None = None) -> str:
    return digest(json.dumps(obj, sort_keys=True, ensure_ascii=False), length=length)


@dataclass(frozen=True)
class _Tokens:
    """Token ids of every sample: each distinct prompt once (by key), each dataset response."""

    prompt_key: dict[str, str]  # sample id -> prompt key
    prompt_ids: dict[str, list[int]]  # prompt key -> ids
    data_ids: dict[str, list[int]]  # sample id -> response ids
    n_ctx: int

    @classmethod
    def encode(cls, model: HookedTransformer, samples: Sequence[ScreeningSample]) -> _Tokens:
        tok = model.tokenizer
        if tok is None:
            raise PersonaLensError(
                "the model has no tokenizer; load it with personalens.load_model"
            )
        prompt_key = {s.id: _sha(s.prompt, 16) for s in samples}
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
        return cls(prompt_key, prompt_ids, data_ids, n_ctx)


def _settings(
    model: HookedTransformer,
    vector: PersonaVector,
    L: int,
    samples: Sequence[ScreeningSample],
    gen: GenerationConfig,
    batch_size: int,
) -> dict[str, Any]:
    """The run's identity (``config.json``): model, layer, vector, data and settings."""
    return {
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
            "sha256": digest(vector.directions.contiguous().numpy().tobytes()),
        },
        "data": {
            "n": len(samples),
            "sha256": _sha([[s.id, s.prompt, s.response] for s in samples]),
        },
        "generation": asdict(replace(gen, progress=None)),
        "batch_size": batch_size,
    }


def _open_run(
    out: str | os.PathLike[str] | None, settings: dict[str, Any], worker: Shard | None
) -> Path | None:
    run = open_run_dir(
        out,
        settings,
        what="a screening run",
        fix="Resume with the same model, vector, layer, data and settings, or use a new --out "
        "directory.",
    )
    if run is not None and is_leader(worker):  # a rerun invalidates old final artifacts
        for stale in ("summary.json", "scores.csv"):
            (run / stale).unlink(missing_ok=True)
    return run


# ----------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class _Stage:
    """How the resumable stages run: their run directory, chunk size, progress bar and shard."""

    run: Path | None
    batch_size: int
    progress: bool
    worker: Shard | None

    def __call__(
        self,
        keys: list[str],
        work: Callable[[list[str]], list[dict[str, Any]]],
        log: str,
        desc: str,
    ) -> dict[str, dict[str, Any]]:
        """``{key: record}`` of every key: ``{"key", **work's record, "seconds"}`` (the chunk's
        compute time shared out), appended to ``log`` chunk by chunk and resumed from it."""

        def timed(chunk: list[str]) -> list[dict[str, Any]]:
            t0 = time.perf_counter()
            records = work(chunk)
            share = (time.perf_counter() - t0) / len(chunk)
            return [{"key": k, **r, "seconds": share} for k, r in zip(chunk, records)]

        return run_resumable(
            keys,
            lambda k: k,
            timed,
            path=self.run / log if self.run else None,
            chunk_size=self.batch_size,
            desc=desc,
            progress=self.progress,
            shard=self.worker,
        )


@dataclass(frozen=True)
class _Replies:
    keys: list[str]  # distinct prompt keys, longest prompt first
    records: dict[str, dict[str, Any]]  # prompt key -> generation record
    ids: dict[str, list[int]]  # prompt key -> the reply re-encoded as a dataset response


def _model_replies(
    model: HookedTransformer,
    samples: Sequence[ScreeningSample],
    tokens: _Tokens,
    gen: GenerationConfig,
    backend: str,
    stage: _Stage,
) -> _Replies:
    """1. the model's own reply to each distinct prompt (longest prompts first: less padding)."""
    keys = list(tokens.prompt_ids)
    keys.sort(key=lambda k: -len(tokens.prompt_ids[k]))
    conv_of = {tokens.prompt_key[s.id]: s.prompt for s in reversed(samples)}

    def generate_chunk(chunk: list[str]) -> list[dict[str, Any]]:
        res = generate_samples(
            model, [conv_of[k] for k in chunk], [0] * len(chunk), gen, backend=backend
        )
        return [
            {
                "response": res.responses[i],
                "n_response_tokens": len(res.response_tokens[i]),
                "finish_reason": res.finish_reasons[i],
            }
            for i in range(len(chunk))
        ]

    records = stage(keys, generate_chunk, "generations.jsonl", "model replies")
    # the reply as text, re-encoded like a dataset response (cut to the context if decoding
    # and re-encoding made it longer, e.g. invalid UTF-8 pieces of a random model)
    ids = {
        k: encode_response(model.tokenizer, records[k]["response"])[
            : tokens.n_ctx - len(tokens.prompt_ids[k])
        ]
        for k in keys
    }
    return _Replies(keys, records, ids)


@dataclass(frozen=True)
class _Projections:
    dataset: Tensor  # [n] float64, per sample
    model: Tensor  # [n] float64, per sample; NaN where the model's reply was empty
    records: dict[str, dict[str, Any]]  # sequence key -> projection record
    keys: list[str]  # distinct token sequences, longest first


def _projections(
    model: HookedTransformer,
    samples: Sequence[ScreeningSample],
    tokens: _Tokens,
    replies: _Replies,
    L: int,
    unit: Tensor,
    backend: str,
    stage: _Stage,
) -> _Projections:
    """2. response-average projections of every distinct (prompt, response) token sequence."""
    sequences: dict[str, tuple[list[int], list[int]]] = {}

    def seq_key(p_ids: list[int], r_ids: list[int]) -> str:
        key = digest(json.dumps([p_ids, r_ids]), length=20)
        sequences.setdefault(key, (p_ids, r_ids))
        return key

    prompt_of = {s.id: tokens.prompt_ids[tokens.prompt_key[s.id]] for s in samples}
    data_seq = {s.id: seq_key(prompt_of[s.id], tokens.data_ids[s.id]) for s in samples}
    model_seq = {
        k: seq_key(tokens.prompt_ids[k], replies.ids[k]) for k in replies.keys if replies.ids[k]
    }
    todo = list(sequences)
    todo.sort(key=lambda k: -(len(sequences[k][0]) + len(sequences[k][1])))

    def project_chunk(chunk: list[str]) -> list[dict[str, Any]]:
        acts = summarize_batch(
            model,
            [sequences[k][0] for k in chunk],
            [sequences[k][1] for k in chunk],
            (L,),
            backend=backend,
        )
        proj = acts.response_avg[:, 0].double() @ unit
        return [
            {"proj": proj[i].item(), "n_response_tokens": len(sequences[k][1])}
            for i, k in enumerate(chunk)
        ]

    records = stage(todo, project_chunk, "projections.jsonl", "projections")

    def proj_of(key: str | None) -> float:
        return math.nan if key is None else float(records[key]["proj"])

    p_data = torch.tensor([proj_of(data_seq[s.id]) for s in samples], dtype=torch.float64)
    p_model = torch.tensor(
        [proj_of(model_seq.get(tokens.prompt_key[s.id])) for s in samples], dtype=torch.float64
    )
    return _Projections(p_data, p_model, records, todo)


def _write_tables(
    run: Path,
    result: ScreeningResult,
    replies: _Replies,
    proj: _Projections,
    settings: dict[str, Any],
    wall_s: float,
) -> None:
    """``scores.csv``, then ``summary.json`` (ΔP statistics, sizes and timings)."""
    gen_s = sum(float(replies.records[k].get("seconds", 0.0)) for k in replies.keys)
    proj_s = sum(float(proj.records[k].get("seconds", 0.0)) for k in proj.keys)
    compute_s = gen_s + proj_s
    summary = {
        **result.summary(),
        "n_unique_prompts": len(replies.keys),
        "n_sequences": len(proj.keys),
        "n_empty_model_replies": sum(1 for k in replies.keys if not replies.ids[k]),
        "samples_per_s": len(result) / compute_s if compute_s > 0 else None,
        "timings_s": {
            "generate": round(gen_s, 3),
            "project": round(proj_s, 3),
            "compute_total": round(compute_s, 3),
            "this_call_wall": round(wall_s, 3),
        },
        "samples_per_s_note": "samples / (generation + projection compute time), summed "
        "over every call that did part of the work (excludes model loading)",
        "vector": settings["vector"],
        "model": settings["model"],
        "generation": settings["generation"],
    }
    atomic_write_text(run / "scores.csv", result.to_frame().to_csv(index=False))
    atomic_write_json(run / "summary.json", json_safe(summary))

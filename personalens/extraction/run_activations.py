"""The activation stages of an extraction run: each sample's residual summaries at every layer
(:class:`~personalens.model.activations.ActivationSet`), cached in chunks.

Two contexts (:data:`CONTEXTS`), each with its own folder:

* ``"prompted"`` (:func:`collect_run_activations`): each reply read after its question *and*
  the pos or neg system prompt it was generated with, in ``activations/``;
* ``"neutral"`` (:func:`collect_neutral_activations`): the same reply read after its question
  alone, with no system prompt (the model's default context), in ``activations_neutral/``; by
  default for the held-out replies only (one extra forward pass per held-out reply).

:func:`activation_records` (and :func:`neutral_records`) fix which records are collected and in
which order; they are cut into chunks of ``activation_batch_size``, and each chunk is one atomic
safetensors file ``<folder>/<chunk id>.safetensors`` (the id a hash of its records' keys,
:func:`~personalens.extraction.jobs.chunk_id`; the folders keep the two contexts' chunks of the
same keys apart), so a rerun reads finished chunks and computes the rest. :func:`gather_side`
picks the pos or neg activations of some keys.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from tqdm.auto import tqdm

from personalens._io import atomic_write_bytes, iter_chunks
from personalens.errors import PersonaLensError
from personalens.extraction.config import ExtractionConfig
from personalens.extraction.jobs import chunk_id
from personalens.extraction.responses import FilterResult
from personalens.model.activations import VARIANTS, ActivationSet, summarize_batch
from personalens.model.chat import as_conversation, encode_chat
from personalens.runs.sharding import Shard, resolve_shard, wait_for

if TYPE_CHECKING:
    from transformer_lens import HookedTransformer

# context -> the run directory's folder of its activation chunks
CONTEXTS = {"prompted": "activations", "neutral": "activations_neutral"}
_CONTEXT_WORDS = {"prompted": "activations", "neutral": "activations (no system prompt)"}


class MissingActivationsError(PersonaLensError):
    """A finished run has no activation chunk for some records (read without a model)."""


def collect_run_activations(
    model: HookedTransformer | None,
    records: Sequence[dict[str, Any]],
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | str | None = None,
    context: str = "prompted",
) -> dict[str, ActivationSet]:
    """Summaries for each record (by key), in fixed chunks saved as atomic safetensors shards.

    ``context="prompted"``: each reply after its system prompt and question (``activations/``);
    ``"neutral"``: after its question only (``activations_neutral/``).
    ``model=None`` only reads a finished run's shards (``run_dir`` required); a missing shard
    is then a :class:`MissingActivationsError`. ``shard``: compute only this worker's chunks,
    wait for the other workers' files, then read them all.
    """
    if context not in CONTEXTS:
        raise PersonaLensError(f"context must be one of {tuple(CONTEXTS)}, got {context!r}")
    shard_dir = Path(run_dir) / CONTEXTS[context] if run_dir else None
    if model is None and shard_dir is None:
        raise PersonaLensError("collect_run_activations needs a model or a run_dir to read from")
    layers = tuple(range(model.cfg.n_layers)) if model is not None else None
    worker = resolve_shard(shard)
    if worker is not None and (shard_dir is None or model is None):
        raise PersonaLensError(
            "sharded activations need a model and a run_dir shared by the workers"
        )
    out: dict[str, ActivationSet] = {}
    chunks = list(iter_chunks(list(records), config.activation_batch_size))

    def path_of(chunk: list[dict[str, Any]]) -> Path | None:
        return (
            shard_dir / f"{chunk_id([r['key'] for r in chunk])}.safetensors" if shard_dir else None
        )

    if worker is not None:
        # first this worker's chunks, then wait for every other chunk's file
        mine = [c for i, c in enumerate(chunks) if worker.owns(i)]
        desc = f"{_CONTEXT_WORDS[context]} [shard {worker}]"
        _compute_missing(model, mine, path_of, layers, backend, progress, desc, context)
        wait_for(
            lambda: sum(1 for c in chunks if not path_of(c).exists()),
            worker,
            f"{_CONTEXT_WORDS[context]} chunks",
            shard_dir,
        )
    show = progress and worker is None
    with _progress(show, len(records), _CONTEXT_WORDS[context]) as bar:
        for chunk in chunks:
            shard_file = path_of(chunk)
            acts = None
            if shard_file is not None and shard_file.exists():
                acts = _read_chunk(
                    shard_file, chunk, layers, can_recompute=model is not None, context=context
                )
            if acts is None and model is None:
                raise MissingActivationsError(
                    f"activation shard {shard_file} is missing: {run_dir} is not a finished run "
                    "(rerun its `personalens extract` command to complete it)"
                )
            if acts is None:
                acts = _chunk_activations(model, chunk, layers, backend, shard_file, context)
            layers = acts.layers
            for i, r in enumerate(chunk):
                out[r["key"]] = acts.select([i])
            bar.update(len(chunk))
    return out


def _read_chunk(
    path: Path,
    chunk: list[dict[str, Any]],
    layers: Sequence[int] | None,
    *,
    can_recompute: bool,
    context: str = "prompted",
) -> ActivationSet | None:
    """A cached chunk, or ``None`` (with a warning naming the file) when it is damaged or does
    not hold this chunk: a truncated write, a foreign file, other keys, layers or context. The
    chunks are a cache, so a damaged one is computed again; without a model that is an error.
    A chunk that names no context was written before contexts existed: ``"prompted"``."""
    keys = [r["key"] for r in chunk]
    try:
        with safe_open(path, framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}  # noqa: SIM118
        stored_keys = json.loads(meta.get("keys", "null"))
        acts = ActivationSet.from_tensors(tensors, layers or range(tensors[VARIANTS[0]].shape[1]))
        problem = None
        if stored_keys is not None and stored_keys != keys:
            problem = "it holds other samples than its name says"
        elif meta.get("context", "prompted") != context:
            problem = f"it holds {meta.get('context')!r} activations, not {context!r} ones"
        elif any(tensors[v].shape[:2] != (len(keys), len(acts.layers)) for v in VARIANTS):
            problem = (
                f"its tensors are {tuple(tensors[VARIANTS[0]].shape[:2])} (samples, layers), "
                f"not {(len(keys), len(acts.layers))}"
            )
    except (SafetensorError, OSError, ValueError, KeyError, IndexError, RuntimeError) as exc:
        problem = f"it cannot be read ({type(exc).__name__}: {str(exc)[:100]})"
    if problem is None:
        return acts
    if not can_recompute:
        raise PersonaLensError(
            f"activation shard {path} is damaged: {problem}. Fix: delete it and rerun the "
            "run's `personalens extract` command, which computes it again."
        )
    warnings.warn(
        f"activation shard {path} is damaged ({problem}); computing it again (the shards are a "
        "cache of the model's activations, so the result is the same).",
        RuntimeWarning,
        stacklevel=3,
    )
    return None


def _chunk_activations(
    model: HookedTransformer,
    chunk: list[dict[str, Any]],
    layers: Sequence[int],
    backend: str,
    path: Path | None,
    context: str = "prompted",
) -> ActivationSet:
    """One chunk's summaries, written to ``path`` (one atomic safetensors file) when given.
    ``context="neutral"`` reads each reply after its question alone (no system prompt)."""
    tok = model.tokenizer

    def system(r: dict[str, Any]) -> str | None:
        return r["system"] if context == "prompted" else None

    p_ids = [encode_chat(tok, as_conversation(r["question"], system(r))) for r in chunk]
    r_ids = [r["response_tokens"] for r in chunk]
    acts = summarize_batch(model, p_ids, r_ids, layers, backend=backend)
    if path is not None:
        meta = {"keys": json.dumps([r["key"] for r in chunk])}
        if context != "prompted":  # prompted chunks stay byte-identical to older runs'
            meta["context"] = context
        atomic_write_bytes(path, safetensors_bytes(acts.to_tensors(), metadata=meta))
    return acts


def _compute_missing(model, chunks, path_of, layers, backend, progress, desc, context) -> None:
    todo = [c for c in chunks if not path_of(c).exists()]
    total = sum(len(c) for c in chunks)
    done = total - sum(len(c) for c in todo)
    with _progress(progress and bool(todo), total, desc, initial=done) as bar:
        for chunk in todo:
            _chunk_activations(model, chunk, layers, backend, path_of(chunk), context)
            bar.update(len(chunk))


def activation_records(
    records: Sequence[dict[str, Any]], filt: FilterResult
) -> list[dict[str, Any]]:
    """The records a run collects activations for, in collection order (which fixes the shards):
    the kept extraction pairs, then every held-out sample (kept or not: the headline AUC is on
    all of them), each once and only with a non-empty response."""
    by_key = {r["key"]: r for r in records}
    heldout_all = [r["key"] for r in records if r["split"] == "eval"]
    wanted = list(dict.fromkeys(filt.keys("extract") + heldout_all))
    return [by_key[k] for k in wanted if by_key[k]["response_tokens"]]


def neutral_records(
    records: Sequence[dict[str, Any]], filt: FilterResult, *, include_extract: bool = False
) -> list[dict[str, Any]]:
    """The records read without a system prompt, in collection order: every held-out reply
    (kept or not) with a non-empty response; with ``include_extract``, the kept extraction
    pairs first (exactly :func:`activation_records`)."""
    if include_extract:
        return activation_records(records, filt)
    return [r for r in records if r["split"] == "eval" and r["response_tokens"]]


def collect_neutral_activations(
    model: HookedTransformer | None,
    records: Sequence[dict[str, Any]],
    filt: FilterResult,
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | str | None = None,
    include_extract: bool = False,
) -> dict[str, ActivationSet]:
    """The held-out replies' summaries read after their question with no system prompt.

    The same positions and summaries as :func:`collect_run_activations` (of which this is the
    ``context="neutral"`` stage), chunked, atomic, resumable and sharded the same way, in
    ``activations_neutral/``. Without the instruction in context, a reply's activations carry
    only what its own text (and question) says, so the held-out AUC on them measures whether
    the text carries the trait the vector reads. ``include_extract=True`` also reads the kept
    extraction pairs this way (other chunks; not part of the run's identity).
    """
    wanted = neutral_records(records, filt, include_extract=include_extract)
    return collect_run_activations(
        model, wanted, config, run_dir, progress, backend=backend, shard=shard, context="neutral"
    )


def gather_side(
    acts: dict[str, ActivationSet],
    records: Sequence[dict[str, Any]],
    keys: Sequence[str],
    side: str,
) -> ActivationSet | None:
    """The activations of ``keys`` on ``side`` ("pos"/"neg") that have any, in ``keys`` order."""
    by_key = {r["key"]: r for r in records}
    sel = [acts[k] for k in keys if k in acts and by_key[k]["side"] == side]
    return ActivationSet.concat(sel) if sel else None


def _progress(show: bool, total: int, desc: str, initial: int = 0) -> tqdm:
    """A tqdm bar over samples; a silent one (``disable=True``) when not ``show``."""
    return tqdm(total=total, desc=desc, unit="sample", initial=initial, disable=not show)

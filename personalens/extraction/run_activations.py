"""The activation stage of an extraction run: each kept sample's residual summaries at every
layer (:class:`~personalens.model.activations.ActivationSet`), cached in chunks.

:func:`activation_records` fixes which records are collected and in which order; they are cut
into chunks of ``activation_batch_size``, and each chunk is one atomic safetensors file
``activations/<chunk id>.safetensors`` (the id a hash of its records' keys,
:func:`~personalens.extraction.jobs.chunk_id`), so a rerun reads finished chunks and computes
the rest. :func:`gather_side` picks the pos or neg activations of some keys.
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


def collect_run_activations(
    model: HookedTransformer | None,
    records: Sequence[dict[str, Any]],
    config: ExtractionConfig,
    run_dir: str | Path | None = None,
    progress: bool = True,
    *,
    backend: str = "auto",
    shard: Shard | str | None = None,
) -> dict[str, ActivationSet]:
    """Summaries for each record (by key), in fixed chunks saved as atomic safetensors shards.

    ``model=None`` only reads a finished run's shards (``run_dir`` required); a missing shard
    is then a :class:`PersonaLensError`. ``shard``: compute only this worker's chunks, wait
    for the other workers' files, then read them all.
    """
    shard_dir = Path(run_dir) / "activations" if run_dir else None
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
        _compute_missing(
            model, mine, path_of, layers, backend, progress, f"activations [shard {worker}]"
        )
        wait_for(
            lambda: sum(1 for c in chunks if not path_of(c).exists()),
            worker,
            "activation chunks",
            shard_dir,
        )
    with _progress(progress and worker is None, len(records), "activations") as bar:
        for chunk in chunks:
            shard_file = path_of(chunk)
            acts = None
            if shard_file is not None and shard_file.exists():
                acts = _read_chunk(shard_file, chunk, layers, can_recompute=model is not None)
            if acts is None and model is None:
                raise PersonaLensError(
                    f"activation shard {shard_file} is missing: {run_dir} is not a finished run "
                    "(rerun its `personalens extract` command to complete it)"
                )
            if acts is None:
                acts = _chunk_activations(model, chunk, layers, backend, shard_file)
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
) -> ActivationSet | None:
    """A cached chunk, or ``None`` (with a warning naming the file) when it is damaged or does
    not hold this chunk: a truncated write, a foreign file, other keys or layers. The chunks
    are a cache, so a damaged one is computed again; without a model that is an error."""
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
) -> ActivationSet:
    """One chunk's summaries, written to ``path`` (one atomic safetensors file) when given."""
    tok = model.tokenizer
    p_ids = [encode_chat(tok, as_conversation(r["question"], r["system"])) for r in chunk]
    r_ids = [r["response_tokens"] for r in chunk]
    acts = summarize_batch(model, p_ids, r_ids, layers, backend=backend)
    if path is not None:
        keys = [r["key"] for r in chunk]
        payload = safetensors_bytes(acts.to_tensors(), metadata={"keys": json.dumps(keys)})
        atomic_write_bytes(path, payload)
    return acts


def _compute_missing(model, chunks, path_of, layers, backend, progress, desc) -> None:
    todo = [c for c in chunks if not path_of(c).exists()]
    total = sum(len(c) for c in chunks)
    done = total - sum(len(c) for c in todo)
    with _progress(progress and bool(todo), total, desc, initial=done) as bar:
        for chunk in todo:
            _chunk_activations(model, chunk, layers, backend, path_of(chunk))
            bar.update(len(chunk))


def activation_records(
    records: Sequence[dict[str, Any]], filt: FilterResult
) -> list[dict[str, Any]]:
    """The records a run collects activations for, in collection order (which fixes the shards):
    the kept extraction pairs, then every held-out sample (kept or not, for the AUC fallback),
    each once and only with a non-empty response."""
    by_key = {r["key"]: r for r in records}
    heldout_all = [r["key"] for r in records if r["split"] == "eval"]
    wanted = list(dict.fromkeys(filt.keys("extract") + heldout_all))
    return [by_key[k] for k in wanted if by_key[k]["response_tokens"]]


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

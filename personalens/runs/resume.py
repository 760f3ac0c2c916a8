"""Chunked work that appends its results to a JSONL file and skips finished chunks on rerun."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from personalens._io import append_jsonl, iter_chunks
from personalens.errors import PersonaLensError
from personalens.runs.sharding import Shard, read_logs, wait_for

T = TypeVar("T")


def run_resumable(
    items: Sequence[T],
    key_of: Callable[[T], str],
    process: Callable[[list[T]], list[dict[str, Any]]],
    *,
    path: Path | None,
    chunk_size: int,
    desc: str,
    progress: bool = True,
    shard: Shard | None = None,
    record_key: str = "key",
    unit: str = "sample",
) -> dict[str, dict[str, Any]]:
    """Run ``process`` over ``items`` in chunks; return ``{key: record}`` for every item.

    ``process(chunk)`` returns one record (a JSON-able dict with ``"key"``, or the field named
    by ``record_key``) per item; the result is keyed by that field. With
    ``path``, each finished chunk's records are appended to it (fsynced) and a rerun skips every
    chunk whose items all have records already, so an interruption loses at most one chunk.
    Chunks are fixed by ``items`` order and ``chunk_size``, so a resumed run batches the same way.

    With ``shard`` (and ``path``), this worker does only its chunks
    (:mod:`personalens.runs.sharding`), appends them to its own file next to ``path``, then
    waits for the other workers' records.
    Records in any worker's file count as done, with or without ``shard``.
    """
    if shard is not None and path is None:
        raise PersonaLensError(
            f"{desc}: sharded work needs a run directory shared by the workers (give out/run_dir)"
        )
    own = shard.log_path(path) if shard is not None and path is not None else path
    done: dict[str, dict[str, Any]] = {}
    if path:
        done = {r[record_key]: r for r in read_logs(path, own)}
    chunks = list(iter_chunks(list(items), chunk_size))
    mine = [c for i, c in enumerate(chunks) if shard is None or shard.owns(i)]
    todo = [c for c in mine if not all(key_of(x) in done for x in c)]
    bar = None
    if progress and todo:
        total = sum(len(c) for c in mine)
        finished = total - sum(len(c) for c in todo)
        label = desc if shard is None else f"{desc} [shard {shard}]"
        bar = tqdm(total=total, desc=label, unit=unit, initial=finished)
    try:
        for chunk in todo:
            new = [r for r in process(chunk) if r[record_key] not in done]
            if own:
                append_jsonl(own, new)
            done.update({r[record_key]: r for r in new})
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    if shard is not None and path is not None:
        keys = [key_of(x) for x in items]

        def missing() -> int:
            if all(k in done for k in keys):
                return 0
            done.update({r[record_key]: r for r in read_logs(path, None)})
            return sum(1 for k in keys if k not in done)

        wait_for(missing, shard, f"{desc} records", path.parent)
    return done

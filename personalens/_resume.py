"""Chunked work that appends its results to a JSONL file and skips finished chunks on rerun."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from ._io import append_jsonl, iter_chunks, read_jsonl

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
) -> dict[str, dict[str, Any]]:
    """Run ``process`` over ``items`` in chunks; return ``{key: record}`` for every item.

    ``process(chunk)`` returns one record (a JSON-able dict with ``"key"``) per item. With
    ``path``, each finished chunk's records are appended to it (fsynced) and a rerun skips every
    chunk whose items all have records already, so an interruption loses at most one chunk.
    Chunks are fixed by ``items`` order and ``chunk_size``, so a resumed run batches the same way.
    """
    done = {r["key"]: r for r in read_jsonl(path)} if path else {}
    chunks = list(iter_chunks(list(items), chunk_size))
    todo = [c for c in chunks if not all(key_of(x) in done for x in c)]
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        finished = len(items) - sum(len(c) for c in todo)
        bar = tqdm(total=len(items), desc=desc, unit="sample", initial=finished)
    try:
        for chunk in todo:
            new = [r for r in process(chunk) if r["key"] not in done]
            if path:
                append_jsonl(path, new)
            done.update({r["key"]: r for r in new})
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    return done

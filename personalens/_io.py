"""Atomic file writes and crash-tolerant JSONL logs for run directories."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: Path, *, repair: bool = True) -> list[dict[str, Any]]:
    """Records of a JSONL log; a torn last line (a crash mid-append) is dropped from the file.

    ``repair=False`` only skips it: for a log another process may be appending to right now.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    records, good_until = [], 0
    for line in raw.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break
        good_until += len(line)
    if repair and good_until != len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_until)
    return records


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one line each, flushed to disk before returning."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())


def iter_chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def check_run_config(path: Path, config: dict[str, Any], *, what: str, fix: str) -> None:
    """A run directory belongs to one configuration: the first call writes ``config`` (its JSON
    round trip) to ``path``; a later call with another configuration raises
    :class:`~personalens.errors.PersonaLensError` naming every differing (nested) key, e.g.
    ``what="a screening run"``, ``fix="Resume with the same ..., or use a new --out directory."``.
    """
    from .errors import PersonaLensError

    new = json.loads(json.dumps(config))
    if not path.exists():
        atomic_write_json(path, new)
        return
    old = json.loads(path.read_text())
    if old == new:
        return
    a, b = _flat(old), _flat(new)
    diffs = [
        f"{k}: {str(a.get(k))[:70]!r} -> {str(b.get(k))[:70]!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    raise PersonaLensError(
        f"{path.parent} holds {what} with different settings ({'; '.join(diffs)}). {fix}"
    )

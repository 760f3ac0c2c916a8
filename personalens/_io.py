"""Atomic file writes and crash-tolerant JSONL logs for run directories."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from personalens.errors import PersonaLensError


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a new file beside ``path``, fsync it, then rename it over ``path``,
    so that readers see the old file or the new one, never half. The one atomic writer of
    personalens: text, JSON, safetensors, ``torch.save`` and GGUF files all go through it.

    The temp file is created with mode 0666 and the process umask applies as for ``open()``
    (so 0644 under the usual umask), without touching the process-wide umask.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def digest(data: bytes | str, *, algo: str = "sha256", length: int | None = None) -> str:
    """Hex digest of ``data`` (``str`` is UTF-8 encoded), cut to ``length`` characters: the one
    content hash of personalens (run-directory keys, caches, provenance). Callers serialise
    structured data themselves, so each key keeps its exact bytes across versions."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    out = hashlib.new(algo, raw).hexdigest()
    return out[:length] if length else out


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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

"""Atomic file writes and crash-tolerant JSONL logs for run directories."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from personalens.errors import RunDirError


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
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_if_disk_full(exc, path)
        raise
    return path


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """A full disk or quota as one :class:`RunDirError` paragraph (other errors pass)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        raise RunDirError(
            f"could not write {path}: {os.strerror(exc.errno)}. Files written before are "
            "complete and kept (the unfinished one was removed). Fix: free some space on that "
            "disk (or pass an --out on another one) and rerun the same command; it resumes."
        ) from None


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

    Only the *last* line may be torn: a damaged line with finished records after it raises
    :class:`~personalens.errors.RunDirError` naming the file and the line, and the file is left
    exactly as it is. ``repair=False`` only skips a torn last line: for a log another process
    may be appending to right now.
    """
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.splitlines(keepends=True)
    records, good_until = [], 0
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line) if line.endswith(b"\n") else None
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
            if number < len(lines):
                raise RunDirError(_damaged_line(path, number, len(lines), exc)) from None
            record = None
        if record is None:  # the torn last line
            break
        records.append(record)
        good_until += len(line)
    if repair and good_until != len(raw):
        with open(path, "r+b") as fh:
            fh.truncate(good_until)
    return records


def _damaged_line(path: Path, number: int, total: int, exc: Exception) -> str:
    return (
        f"{path}, line {number} of {total}, is not a JSON record ({type(exc).__name__}: "
        f"{str(exc)[:120]}). Only a torn last line (a crash mid-write) is repaired on its own; "
        f"this line has {total - number} finished record(s) after it, so personalens stops "
        "and leaves the file as it is. Fix: look at the line (sed -n "
        f"'{number}p' {path}), then correct or delete just that line and rerun: the records "
        "of the deleted line are redone, everything else resumes."
    )


def append_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> None:
    """Append records, one line each, flushed to disk before returning."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if not payload:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:  # a partial append is a torn last line: the next read repairs it
        _raise_if_disk_full(exc, path)
        raise


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


def check_run_config(
    path: Path, config: dict[str, Any], *, what: str, fix: str, write: bool = True
) -> None:
    """A run directory belongs to one configuration: the first call writes ``config`` (its JSON
    round trip) to ``path``; a later call with another configuration raises
    :class:`~personalens.errors.RunDirError` naming every differing (nested) key, e.g.
    ``what="a screening run"``, ``fix="Resume with the same ..., or use a new --out directory."``.
    ``write=False`` only compares (nothing is written): check before slow validation, write
    once it has passed, so a refused start leaves no ``config.json`` behind.
    """
    new = json.loads(json.dumps(config))
    if not path.exists():
        if write:
            atomic_write_json(path, new)
        return
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise RunDirError(
            f"{path} is not valid JSON ({exc}), so personalens cannot tell which settings "
            f"{path.parent} was made with. Fix: restore the file, or pass a new --out directory."
        ) from None
    if old == new:
        return
    a, b = _flat(old), _flat(new)
    diffs = [
        f"{k}: {str(a.get(k))[:70]!r} -> {str(b.get(k))[:70]!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    raise RunDirError(
        f"{path.parent} holds {what} with different settings ({'; '.join(diffs)}). Nothing in "
        f"it was changed. {fix}"
    )

"""One writer per run directory: an advisory ``fcntl`` lock on ``<run>/.personalens.lock``.

A plain run takes the lock exclusively and writes its PID, host and start time into the file;
a second process on the same directory is refused with a :class:`~personalens.errors.RunDirError`
naming that PID. The workers of a sharded run (``shard="i/n"``) take it shared, so they run
together as before, while a plain run on the same directory is refused (and the other way
round). The kernel drops the lock when its process dies, also after ``kill -9``: a lock file
left behind by a dead process is stale and is simply taken over. Holds nest within a process. The lock is advisory, local
to one machine's file system view (``flock``), and never deletes or rewrites run data.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import inspect
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from personalens.errors import RunDirError
from personalens.runs.run_dir import make_run_dir
from personalens.runs.sharding import resolve_shard

F = TypeVar("F", bound=Callable[..., Any])

LOCK_FILE = ".personalens.lock"


# the directories this process holds: resolved path -> [fd, shared, depth]
_HELD: dict[Path, list[Any]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def run_lock(run: str | os.PathLike[str], *, shared: bool = False) -> Iterator[Path]:
    """Hold the run directory ``run`` (which must exist) for the ``with`` block.

    ``shared=True`` for the workers of a sharded run. Raises :class:`RunDirError` at once when
    another live process holds it in a conflicting way. Within one process a hold nests (the
    CLI holds the directory while it loads the model, then the study holds it again); threads
    of one process acting as sharded workers share it.
    """
    run = Path(run)
    key = run.resolve()
    with _HELD_GUARD:
        held = _HELD.get(key)
        if held is not None:
            if held[1] and not shared:
                raise RunDirError(_refusal(run, run / LOCK_FILE, shared))
            held[2] += 1
        else:
            _HELD[key] = [_acquire(run, shared), shared, 1]
    try:
        yield run
    finally:
        with _HELD_GUARD:
            held = _HELD[key]
            held[2] -= 1
            if held[2] == 0:
                del _HELD[key]
                os.close(held[0])  # releases the lock; the file stays (only informative)


def _acquire(run: Path, shared: bool) -> int:
    path = run / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirError(_refusal(run, path, shared)) from None
    os.ftruncate(fd, 0)  # an earlier holder's PID would misname who holds it now
    if not shared:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": _now()}
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
    return fd


def holds_run_dir(out: str = "out", shard: str | None = "shard") -> Callable[[F], F]:
    """Decorate a study whose argument ``out`` is its run directory: while it runs it holds
    that directory (:func:`run_lock`; shared when its argument ``shard`` names a shard), and
    ``out`` on a file is refused first. Without ``out`` the study runs as it is."""

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            arguments = signature.bind_partial(*args, **kwargs).arguments
            where = arguments.get(out)
            if where is None:
                return fn(*args, **kwargs)
            shared = shard is not None and resolve_shard(arguments.get(shard)) is not None
            with run_lock(make_run_dir(where), shared=shared):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def _refusal(run: Path, path: Path, shared: bool) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        holder = {}
    if holder.get("pid"):
        who = f"process {holder['pid']} on {holder.get('host', '?')} (since {holder.get('since')})"
    else:
        who = "the workers of a sharded run"
    mode = "a worker of a sharded run" if shared else "a run"
    return (
        f"{run} is in use by {who}: one writer per run directory, so this process ({mode}) "
        "stops before changing anything. Fix: wait for that run to finish or stop it, then "
        "rerun this command (it resumes); to run in parallel on purpose, start every process "
        "with --shard i/n; or pass another --out directory. The lock ends with its process, "
        f"kill -9 included (lock file: {path})."
    )


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")

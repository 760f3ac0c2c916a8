"""Several workers (GPUs, nodes) sharing one run directory: data parallelism through files.

Every long stage of personalens (generation, judging, activations, screening, steering sweeps)
already works in fixed chunks that it records in a run directory and skips on a rerun. A
:class:`Shard` ``i/n`` makes a worker do only the chunks whose index is ``i`` modulo ``n``, write
them to its own files (``responses.shard-i-of-n.jsonl``; activation shards are one file per
chunk anyway), then wait until the other workers' files hold the rest before the next stage,
which needs all of it (the filter needs every score; a sweep's figure every cell). Worker 0
(the leader) writes the final artifacts (``summary.json``, the vectors, ``scores.csv``).

So ``n`` processes, one per GPU or node, each with the whole model, started with the same command
and ``--shard i/n`` (or ``--shard auto`` under ``torchrun``, ``accelerate launch`` or SLURM),
share the work with no communication except the run directory (a shared filesystem across
nodes). Nothing about sharding is part of a run's identity: a worker that dies is restarted with
the same command and resumes; a run without ``--shard`` (or with another ``n``) in the same
directory reads every worker's files and finishes whatever is left; the result is the same
vector as a one-process run (the chunks, hence the batches, are the same).

A worker only reads the other workers' files and never repairs them (a torn last line there may
be a write in progress); each worker repairs only its own log.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from personalens._io import read_jsonl
from personalens.errors import PersonaLensError

# launchers that start one process per GPU/node and say which one it is
ENV_LAUNCHERS = (
    ("RANK", "WORLD_SIZE", "torchrun / accelerate launch"),
    ("SLURM_PROCID", "SLURM_NTASKS", "SLURM srun"),
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "Open MPI mpirun"),
)
LOCAL_RANK_VARS = ("LOCAL_RANK", "SLURM_LOCALID", "OMPI_COMM_WORLD_LOCAL_RANK")


@dataclass(frozen=True)
class Shard:
    """Worker ``index`` of ``count`` (0-based); ``str(Shard(1, 4)) == "1/4"``.

    ``timeout_s``: how long to wait for the other workers at a stage boundary before raising
    (``None``: as long as it takes; a log line every ``report_s`` says what is missing).
    """

    index: int
    count: int
    timeout_s: float | None = None
    poll_s: float = 2.0
    report_s: float = 60.0

    def __post_init__(self) -> None:
        if not (isinstance(self.count, int) and self.count >= 1):
            raise PersonaLensError(f"a shard count must be an integer >= 1, got {self.count!r}")
        if not (isinstance(self.index, int) and 0 <= self.index < self.count):
            raise PersonaLensError(
                f"shard index {self.index!r} is not in 0..{self.count - 1} (shards are "
                f"0-based: --shard 0/{self.count} ... {self.count - 1}/{self.count})"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def is_leader(self) -> bool:
        return self.index == 0

    def owns(self, chunk_index: int) -> bool:
        return chunk_index % self.count == self.index

    def log_path(self, path: str | os.PathLike[str]) -> Path:
        """This worker's own file for the log ``path`` (``x.jsonl`` -> ``x.shard-i-of-n.jsonl``)."""
        path = Path(path)
        return path.with_name(f"{path.stem}.shard-{self.index}-of-{self.count}{path.suffix}")

    @classmethod
    def parse(cls, spec: str, **kw: Any) -> Shard:
        """``"i/n"``, or ``"auto"`` for the launcher's rank and world size (:meth:`from_env`)."""
        spec = spec.strip()
        if spec.lower() == "auto":
            return cls.from_env(**kw)
        m = re.fullmatch(r"(\d+)\s*/\s*(\d+)", spec)
        if not m:
            raise PersonaLensError(
                f"--shard {spec!r}: expected INDEX/COUNT with a 0-based index (e.g. 0/4 for the "
                "first of four workers) or 'auto' under torchrun, accelerate launch or SLURM"
            )
        return cls(int(m.group(1)), int(m.group(2)), **kw)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **kw: Any) -> Shard:
        env = dict(os.environ) if env is None else env
        for rank, size, who in ENV_LAUNCHERS:
            if rank in env and size in env:
                try:
                    return cls(int(env[rank]), int(env[size]), **kw)
                except ValueError as e:
                    raise PersonaLensError(
                        f"{rank}={env[rank]!r}, {size}={env[size]!r} ({who}) are not integers"
                    ) from e
        names = ", ".join(f"{r}/{s}" for r, s, _ in ENV_LAUNCHERS)
        raise PersonaLensError(
            f"--shard auto found none of {names} in the environment: start the workers with "
            "torchrun, accelerate launch or srun, or give each one --shard INDEX/COUNT"
        )


def resolve_shard(shard: Shard | str | None) -> Shard | None:
    """``None`` and ``"1/1"`` mean no sharding; a string is parsed with :meth:`Shard.parse`."""
    if shard is None:
        return None
    if isinstance(shard, str):
        shard = Shard.parse(shard)
    if not isinstance(shard, Shard):
        raise PersonaLensError(f"shard must be a Shard, 'i/n' or 'auto', got {shard!r}")
    return None if shard.count == 1 else shard


def is_leader(shard: Shard | None) -> bool:
    """Whether this worker writes final artifacts (the only worker, or worker 0)."""
    return shard is None or shard.is_leader


def local_device(device: str | None, env: dict[str, str] | None = None) -> str | None:
    """``"cuda"`` (or ``None``) -> ``"cuda:LOCAL_RANK"`` when a launcher set a local rank.

    Under torchrun every worker sees every GPU, so each must pick its own; an explicit index
    (``"cuda:1"``) or the CPU is left alone.
    """
    env = dict(os.environ) if env is None else env
    if device not in (None, "cuda"):
        return device
    for var in LOCAL_RANK_VARS:
        if var in env:
            if device is None and not torch.cuda.is_available():
                return None
            return f"cuda:{int(env[var])}"
    return device


def log_files(path: str | os.PathLike[str]) -> list[Path]:
    """``path`` and every worker's file of it (``x.jsonl``, ``x.shard-*-of-*.jsonl``)."""
    path = Path(path)
    shards = sorted(path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}"))
    return [path, *shards]


def read_logs(path: Path, own: Path | None) -> list[dict[str, Any]]:
    """Records of ``path`` and of every worker's file of it; only ``own`` is repaired."""
    records: list[dict[str, Any]] = []
    for p in log_files(path):
        records += read_jsonl(p, repair=own is not None and p == own)
    return records


def read_run_log(
    path: str | os.PathLike[str], prefer: Callable[[dict[str, Any]], bool] | None = None
) -> list[dict[str, Any]]:
    """Every record of a run's log ``path``, whichever worker wrote it, one per key (read only).

    The last record of a key wins, except that with ``prefer`` (e.g. "holds a real score") a
    preferred record beats one that is not, wherever each was written: a retried row in the
    main log is not hidden by an earlier failure in a worker's file.
    """
    out: dict[str, dict[str, Any]] = {}
    for r in read_logs(Path(path), None):
        old = out.get(r["key"])
        if old is None or prefer is None or prefer(r) or not prefer(old):
            out[r["key"]] = r
    return list(out.values())


def wait_for(
    missing: Callable[[], int], shard: Shard, what: str, where: Path | None = None
) -> None:
    """Poll until ``missing()`` is 0: the other workers have finished their part of a stage."""
    start = last_report = time.monotonic()
    nap = min(0.05, shard.poll_s)  # short first naps, then every poll_s
    while True:
        left = missing()
        if left == 0:
            return
        now = time.monotonic()
        if shard.timeout_s is not None and now - start >= shard.timeout_s:
            raise PersonaLensError(
                f"shard {shard}: after {now - start:.0f} s, {left} {what} from the other "
                f"workers are still missing{f' in {where}' if where else ''}. Start (or restart) "
                f"every worker 0..{shard.count - 1} of {shard.count} with the same command, or "
                "run it once without --shard to do the rest in this process."
            )
        if now - last_report >= shard.report_s:
            print(
                f"personalens shard {shard}: waiting for {left} {what} from the other workers",
                flush=True,
            )
            last_report = now
        time.sleep(nap)
        nap = min(nap * 2, shard.poll_s)

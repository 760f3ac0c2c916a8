"""The files of a finetuning run: checkpoints and the final adapters, with their SHA-256.

A checkpoint is ``checkpoints/step-NNNNNNN/`` with ``adapters.safetensors``,
``optimizer.safetensors`` and, written last, ``state.json`` (so a checkpoint whose ``state.json``
exists is complete). Only the newest complete checkpoint is kept. A finished run holds
``adapters.safetensors`` and, written last, ``adapters.json`` (the config, losses and the
tensors' SHA-256).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save
from torch import Tensor

from personalens._io import atomic_write_bytes, atomic_write_json, digest
from personalens.errors import PersonaLensError
from personalens.studies.finetuning.adapters import Adapters

FORMAT = "personalens.studies.finetuning.train"
VERSION = 1


@dataclass
class TrainingState:
    """Where training stands: optimizer steps done, their losses and token counts, seconds."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    n_tokens: list[int] = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- tensors


def _save_tensors(path: Path, tensors: dict[str, Tensor]) -> str:
    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT})
    atomic_write_bytes(path, data)
    return digest(data)


def _load_tensors(path: Path, sha: str | None) -> dict[str, Tensor]:
    if not path.is_file():
        raise PersonaLensError(f"{path} not found: the run directory is incomplete")
    data = path.read_bytes()
    if sha is not None and digest(data) != sha:
        raise PersonaLensError(
            f"{path} does not match the SHA-256 recorded next to it: the files come from two "
            "different saves; delete the run directory and train again"
        )
    return load(data)


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[str, Tensor]:
    out = {}
    for idx, st in opt.state_dict()["state"].items():
        for k, v in st.items():
            out[f"{idx}.{k}"] = torch.as_tensor(v).detach().cpu().clone()
    return out


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, Tensor]) -> None:
    sd = opt.state_dict()
    state: dict[int, dict[str, Tensor]] = {}
    for name, v in tensors.items():
        idx, k = name.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": sd["param_groups"]})


# ----------------------------------------------------------------------------- checkpoints


def _checkpoint_dirs(run: Path) -> list[tuple[int, Path]]:
    root = run / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("step-") and d.name[5:].isdigit():
            found.append((int(d.name[5:]), d))
    return sorted(found)


def _save_checkpoint(
    run: Path, adapters: Adapters, opt: torch.optim.Optimizer, state: TrainingState
) -> None:
    final = run / "checkpoints" / f"step-{state.step:07d}"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    record = {
        "step": state.step,
        "losses": state.losses,
        "n_tokens": state.n_tokens,
        "seconds": state.seconds,
        "adapters_sha256": _save_tensors(final / "adapters.safetensors", adapters.state()),
        "optimizer_sha256": _save_tensors(final / "optimizer.safetensors", _optimizer_tensors(opt)),
    }
    atomic_write_json(final / "state.json", record)  # last: the checkpoint is complete
    for s, d in _checkpoint_dirs(run):
        if s != state.step:
            shutil.rmtree(d, ignore_errors=True)


def _latest_checkpoint(run: Path) -> tuple[Path, dict[str, Any]] | None:
    for _, d in reversed(_checkpoint_dirs(run)):
        if (d / "state.json").is_file():
            return d, json.loads((d / "state.json").read_text())
        shutil.rmtree(d, ignore_errors=True)  # a checkpoint that did not finish writing
    return None


def _resume(run: Path, adapters: Adapters, opt: torch.optim.Optimizer) -> TrainingState:
    """Load the latest checkpoint into ``adapters`` and ``opt``; a fresh state without one."""
    latest = _latest_checkpoint(run)
    if latest is None:
        return TrainingState()
    ckpt, state = latest
    restored = _load_tensors(ckpt / "adapters.safetensors", state["adapters_sha256"])
    with torch.no_grad():
        for name, t in adapters.tensors.items():
            t.copy_(restored[name])
    _restore_optimizer(
        opt, _load_tensors(ckpt / "optimizer.safetensors", state["optimizer_sha256"])
    )
    return TrainingState(
        int(state["step"]),
        list(state["losses"]),
        list(state["n_tokens"]),
        float(state.get("seconds", 0.0)),
    )


# ----------------------------------------------------------------------------- final adapters


def _write_final(
    run: Path, adapters: Adapters, config: dict[str, Any], state: TrainingState
) -> None:
    (run / "adapters.json").unlink(missing_ok=True)
    sha = _save_tensors(run / "adapters.safetensors", adapters.state())
    atomic_write_json(
        run / "adapters.json",
        {
            "format": FORMAT,
            "version": VERSION,
            "config": config,
            "tensors_file": "adapters.safetensors",
            "tensors_sha256": sha,
            "n_trained_parameters": adapters.n_parameters(),
            "steps": len(state.losses),
            "final_loss": state.losses[-1] if state.losses else None,
            "losses": state.losses,
            "n_tokens": state.n_tokens,
            "seconds": round(state.seconds, 3),
        },
    )


def _read_final(run: Path) -> tuple[dict[str, Any], dict[str, Tensor]] | None:
    path = run / "adapters.json"
    if not path.is_file():
        return None
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise PersonaLensError(f"{path} is not a personalens finetuning result")
    if int(meta.get("version", 0)) > VERSION:
        raise PersonaLensError(
            f"{path} has format version {meta.get('version')}: upgrade personalens"
        )
    return meta, _load_tensors(run / meta["tensors_file"], meta["tensors_sha256"])

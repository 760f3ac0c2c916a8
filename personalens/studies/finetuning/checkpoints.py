"""Finetuning checkpoints: atomic safetensors files with their SHA-256, and optimizer state.

A checkpoint is ``checkpoints/step-NNNNNNN/`` with ``adapters.safetensors``,
``optimizer.safetensors`` and, written last, ``state.json`` (so a checkpoint whose ``state.json``
exists is complete). Only the newest complete checkpoint is kept.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from personalens._io import atomic_write_bytes, atomic_write_json
from personalens.errors import PersonaLensError

if TYPE_CHECKING:
    from personalens.studies.finetuning.adapters import Adapters

FORMAT = "personalens.studies.finetuning.train"

# ----------------------------------------------------------------------------- checkpoints


def _sha_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _save_tensors(path: Path, tensors: dict[str, Tensor]) -> str:
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata={"format": FORMAT})
    atomic_write_bytes(path, data)
    return _sha_bytes(data)


def _load_tensors(path: Path, sha: str | None) -> dict[str, Tensor]:
    from safetensors.torch import load

    if not path.is_file():
        raise PersonaLensError(f"{path} not found: the run directory is incomplete")
    data = path.read_bytes()
    if sha is not None and _sha_bytes(data) != sha:
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
    run: Path, adapters: Adapters, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    step = int(state["step"])
    final = run / "checkpoints" / f"step-{step:07d}"
    if final.exists():
        shutil.rmtree(final)
    final.mkdir(parents=True)
    state = {
        **state,
        "adapters_sha256": _save_tensors(final / "adapters.safetensors", adapters.state()),
        "optimizer_sha256": _save_tensors(final / "optimizer.safetensors", _optimizer_tensors(opt)),
    }
    atomic_write_json(final / "state.json", state)  # last: the checkpoint is complete
    for s, d in _checkpoint_dirs(run):
        if s != step:
            shutil.rmtree(d, ignore_errors=True)


def _latest_checkpoint(run: Path) -> tuple[Path, dict[str, Any]] | None:
    for _, d in reversed(_checkpoint_dirs(run)):
        if (d / "state.json").is_file():
            return d, json.loads((d / "state.json").read_text())
        shutil.rmtree(d, ignore_errors=True)  # a checkpoint that did not finish writing
    return None

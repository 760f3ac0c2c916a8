"""The Assistant Axis code's ``.pt`` axis files, read and written with the layer convention
checked.

Upstream (safety-research/assistant-axis) writes two shapes, both read here:

* ``pipeline/5_axis.py``: a dict ``{"axis": [n_layers, d_model], "default_mean", "role_mean",
  "n_default", "n_roles"}`` (``save_axis`` writes ``{"axis", "metadata"}``);
* the released ``<model>/assistant_axis.pt``: the bare ``[n_layers, d_model]`` tensor.

**Layers.** Upstream reads activations with a forward hook on each decoder layer
(``model.model.layers[L]``), whose output is the residual stream after block ``L``: row ``L``
of an upstream axis is personalens layer ``L`` (``blocks.L.hook_resid_post`` = HF
``hidden_states[L + 1]``). There is no embedding row, unlike a Persona Vectors ``.pt`` file
(``[n_layers + 1, d_model]``, HF ``hidden_states`` layout, :mod:`personalens.vectors.pt_format`).
Given a model (or ``n_layers``), :func:`load_axis_pt` refuses a file with another number of
rows, and names the Persona Vectors layout when it has one row too many; such a file can be
read with ``layout="hf_hidden_states"`` (row 0 dropped and kept as ``hf_embedding_row``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from personalens._io import atomic_write
from personalens.errors import PersonaLensError
from personalens.vectors.pt_format import from_hf_hidden_states_layout
from personalens.vectors.validate import model_shape
from personalens.vectors.vector import PersonaVector

AXIS_TRAIT = "assistant_axis"
AXIS_METHOD = "default_minus_roles"
PT_KEY = "assistant_axis_pt"  # the vector metadata entry recording an imported file
LAYOUTS = ("upstream", "hf_hidden_states")


def save_axis_pt(
    path: str | os.PathLike[str],
    axis: PersonaVector | Tensor,
    *,
    default_mean: Tensor | None = None,
    role_mean: Tensor | None = None,
    n_default: int | None = None,
    n_roles: int | None = None,
    bare: bool = False,
) -> Path:
    """Write ``axis`` (``[n_layers, d_model]``, row ``L`` = personalens layer ``L``) as upstream's
    ``5_axis.py`` does: a dict with ``"axis"`` and whichever of ``default_mean``, ``role_mean``,
    ``n_default``, ``n_roles`` are given; ``bare=True`` writes the bare tensor of the released
    files. Atomic."""
    tensor = axis.directions if isinstance(axis, PersonaVector) else torch.as_tensor(axis)
    if tensor.ndim != 2:
        raise PersonaLensError(f"an axis is [n_layers, d_model], got {list(tensor.shape)}")
    extra = {"default_mean": default_mean, "role_mean": role_mean}
    extra |= {"n_default": n_default, "n_roles": n_roles}
    obj: Any = tensor.clone()
    if not bare:
        obj = {"axis": obj, **{k: v for k, v in extra.items() if v is not None}}
    path = Path(path)
    atomic_write(path, lambda tmp: torch.save(obj, tmp))
    return path


def load_axis_pt(
    path: str | os.PathLike[str],
    model: Any = None,
    *,
    model_name: str | None = None,
    layout: str = "upstream",
) -> PersonaVector:
    """An upstream ``.pt`` axis file as a :class:`PersonaVector` (trait ``"assistant_axis"``).

    ``model``: a model or config to check the file against (its layer count and width), or
    ``None``. ``layout="upstream"`` (row ``L`` = layer ``L``) or ``"hf_hidden_states"`` (row
    ``L + 1`` = layer ``L``, as Persona Vectors files). Loaded with ``weights_only=True``, so no
    pickled code runs.
    """
    if layout not in LAYOUTS:
        raise PersonaLensError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    path = Path(path)
    obj = _read(path)
    extra = obj if isinstance(obj, dict) else {}
    tensor = extra.get("axis") if isinstance(obj, dict) else obj
    if not isinstance(tensor, Tensor) or tensor.ndim != 2 or not tensor.is_floating_point():
        raise PersonaLensError(
            f"{path} holds no [n_layers, d_model] float axis (a bare tensor or a dict with an "
            f"'axis' tensor); found {_shape(tensor) if tensor is not None else sorted(extra)}"
        )
    row0 = None
    if layout == "hf_hidden_states":
        tensor, row0 = from_hf_hidden_states_layout(tensor)
    name = model_name or "unknown"
    if model is not None:
        n_layers, d_model, found = model_shape(model)
        name = model_name or found or name
        _check_rows(path, tensor, n_layers, d_model, layout)
    info = {"path": str(path), "dtype": str(tensor.dtype).removeprefix("torch."), "layout": layout}
    info |= {k: int(v) for k, v in extra.items() if k in ("n_default", "n_roles")}
    return PersonaVector(
        directions=tensor.float(),
        model=name,
        trait=AXIS_TRAIT,
        method=AXIS_METHOD,
        hf_embedding_row=None if row0 is None else row0.float(),
        metadata={PT_KEY: info},
    )


def _read(path: Path) -> Any:
    """What ``path`` holds, through ``torch.load(weights_only=True)`` only."""
    if not path.is_file():
        raise PersonaLensError(f"axis file not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused objects, RuntimeError for junk
        why = type(exc).__name__
    raise PersonaLensError(
        f"refused to load {path}: not a file torch.load(weights_only=True) accepts ({why}). "
        "personalens never unpickles arbitrary objects. Fix: re-save the axis as a bare "
        "tensor, torch.save(axis, path), from code you trust."
    )


def _shape(x: Any) -> str:
    return f"shape {list(x.shape)}" if isinstance(x, Tensor) else type(x).__name__


def _check_rows(path: Path, tensor: Tensor, n_layers: int, d_model: int, layout: str) -> None:
    rows, width = tensor.shape
    if width != d_model:
        raise PersonaLensError(
            f"{path} is an axis of width {width}, but the model has d_model={d_model}: it was "
            "made for another model. Fix: load the model the axis came from."
        )
    if rows == n_layers:
        return
    if rows == n_layers + 1 and layout == "upstream":
        raise PersonaLensError(
            f"{path} has {rows} rows for a model of {n_layers} layers: the HF hidden_states "
            "layout of Persona Vectors files (row 0 = embedding output, row L + 1 = layer L), not "
            "the Assistant Axis layout (row L = the output of decoder layer L = personalens layer "
            "L). Fix: load_axis_pt(path, model, layout='hf_hidden_states'), or "
            "PersonaVector.from_persona_vectors_pt for a Persona Vectors file."
        )
    raise PersonaLensError(
        f"{path} has {rows} rows but the model has {n_layers} layers (layout {layout!r}: "
        f"expected {n_layers if layout == 'upstream' else n_layers + 1} rows). Fix: load the "
        "model the axis came from, or pass the right layout."
    )

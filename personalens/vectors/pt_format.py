"""The ``.pt`` files of the Persona Vectors paper (Chen et al., 2025): an ``[n_layers + 1,
d_model]`` tensor in Hugging Face ``hidden_states`` layout.

Layer indexing (see :mod:`personalens.conventions`; the mapping is implemented only in
:func:`to_hf_hidden_states_layout` / :func:`from_hf_hidden_states_layout`):

=====================  ==============================  ===================================
personalens layer      HF ``hidden_states`` index      Persona Vectors ``.pt`` row
=====================  ==============================  ===================================
(none)                 0 (embedding output)            0 (kept as ``hf_embedding_row``)
``L``                  ``L + 1``                       ``L + 1``
``n_layers - 1``       ``n_layers``                    ``n_layers``
=====================  ==============================  ===================================

personalens layer ``L`` is the TransformerLens hook ``blocks.L.hook_resid_post``. A ``.pt`` file
therefore has ``n_layers + 1`` rows; row 0 (the embedding output) has no personalens layer and is
carried along unchanged so that ``.pt -> PersonaVector -> .pt`` is bit-identical.

The last row is not like the others. Hugging Face's last ``hidden_states`` entry,
``hidden_states[n_layers]``, is taken after the model's final norm (``model.norm`` in Llama- and
Qwen-style models), not from the raw residual stream after the last block that
``blocks.{n_layers - 1}.hook_resid_post`` is. A ``.pt`` file's last row therefore imports as
layer ``n_layers - 1`` but measures something else: against a vector personalens extracted at
that layer it had, in one check, a 14x different norm and cosine 0.97. The other rows match the
residual stream one to one. :func:`read_persona_vectors_pt` warns about it on every import, and
records it under ``"last_row"`` in the vector's provenance; steer and compare with layers below
``n_layers - 1``, or treat that layer's direction and, above all, its scale with care.

:meth:`PersonaVector.from_persona_vectors_pt` and :meth:`PersonaVector.to_persona_vectors_pt`
are built on :func:`read_persona_vectors_pt` and :func:`write_persona_vectors_pt`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._io import atomic_write
from personalens._types import LayerDirections
from personalens.conventions import hf_hidden_states_index
from personalens.errors import PersonaLensError, warn_at_caller

Direction = Float[Tensor, " d_model"]
HFLayout = Float[Tensor, "n_hf d_model"]

# the key of PersonaVector.metadata that records where an imported .pt file came from
PT_METADATA_KEY = "persona_vectors_pt"
# what the file's last row is (recorded in that entry: layer n_layers - 1 is not comparable)
LAST_ROW_NOTE = "HF hidden_states[n_layers], after the final norm; imported as layer n_layers - 1"


def to_hf_hidden_states_layout(
    directions: LayerDirections, embedding_row: Direction | None = None
) -> HFLayout:
    """``[n_layers, d_model]`` personalens directions -> ``[n_layers + 1, d_model]`` HF layout.

    Row ``L + 1`` is personalens layer ``L``; row 0 (the embedding output) is ``embedding_row``,
    or zeros when it is None. The result has the dtype of ``directions``.
    """
    if directions.ndim != 2:
        raise PersonaLensError(
            f"expected directions of shape [n_layers, d_model], got {list(directions.shape)}"
        )
    n_layers, d_model = directions.shape
    out = directions.new_zeros(n_layers + 1, d_model)
    if embedding_row is not None:
        if tuple(embedding_row.shape) != (d_model,):
            raise PersonaLensError(
                f"embedding_row has shape {list(embedding_row.shape)} but the directions have "
                f"d_model={d_model}; pass a [{d_model}] row or None."
            )
        out[0] = embedding_row.to(directions.dtype)
    first = hf_hidden_states_index(0)
    out[first : first + n_layers] = directions
    return out


def from_hf_hidden_states_layout(tensor: HFLayout) -> tuple[LayerDirections, Direction]:
    """``[n_layers + 1, d_model]`` HF layout -> (``[n_layers, d_model]`` directions, row 0).

    Inverse of :func:`to_hf_hidden_states_layout`; returns views of ``tensor``.
    """
    if tensor.ndim != 2 or tensor.shape[0] < 2:
        raise PersonaLensError(
            f"expected an HF hidden_states layout of shape [n_layers + 1, d_model] with at least "
            f"2 rows (row 0 = embedding output, row L + 1 = layer L), got {list(tensor.shape)}"
        )
    first = hf_hidden_states_index(0)
    return tensor[first:], tensor[0]


def read_persona_vectors_pt(
    path: str | os.PathLike[str],
) -> tuple[LayerDirections, Direction, dict[str, Any]]:
    """``(directions, row 0, provenance)`` of a Persona Vectors ``.pt`` file.

    Loaded with ``torch.load(..., weights_only=True)`` only, so no pickled code runs. The file
    may hold a bare tensor or a dict with a single tensor value. ``provenance`` is the
    ``{"persona_vectors_pt": {"path", "dtype", "key", "last_row"}}`` entry of the vector's
    metadata. Warns that the file's last row (HF ``hidden_states[n_layers]``, after the final
    norm) becomes layer ``n_layers - 1`` (see the module docstring).
    """
    path = Path(path)
    if not path.is_file():
        raise PersonaLensError(f"Persona Vectors file not found: {path}")
    key, obj = _load_tensor(path)
    directions, row0 = from_hf_hidden_states_layout(obj)
    if obj.dtype == torch.float64 and not torch.equal(obj.float().double(), obj):
        warn_at_caller(
            f"{path} is float64; personalens stores float32, so exporting it again will not "
            "be bit-identical."
        )
    last = directions.shape[0] - 1
    others = (
        f" Rows 1..{last} are layers 0..{last - 1} exactly; prefer those for steering and "
        "comparisons."
        if last
        else ""
    )
    warn_at_caller(
        f"{path}: its last row (row {last + 1}) is HF hidden_states[{last + 1}], taken after the "
        f"model's final norm, not the residual stream after block {last}; it imports as layer "
        f"{last} but differs from a personalens vector at that layer (in one check: a 14x "
        f"different norm, cosine 0.97).{others}"
    )
    provenance = {
        PT_METADATA_KEY: {
            "path": str(path),
            "dtype": str(obj.dtype).removeprefix("torch."),
            "key": None if key is None else str(key),
            "last_row": LAST_ROW_NOTE,
        }
    }
    return directions, row0, provenance


def _load_tensor(path: Path) -> tuple[Any, Tensor]:
    """``(dict key or None, the floating-point tensor)`` of a ``.pt`` file, refusing the rest."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError for refused objects, RuntimeError for junk
        raise PersonaLensError(
            f"Refused to load {path}: it is not a plain tensor file that "
            f"torch.load(weights_only=True) accepts ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). personalens never unpickles "
            "arbitrary objects. Fix: re-save the vector as a bare tensor, "
            "torch.save(tensor, path), from code you trust."
        ) from None
    key = None
    if isinstance(obj, dict):
        if len(obj) != 1 or not isinstance(next(iter(obj.values())), Tensor):
            raise PersonaLensError(
                f"{path} holds a dict with keys {sorted(map(str, obj))[:10]}; expected a bare "
                "tensor or a dict with exactly one tensor value. Fix: save just the "
                "[n_layers + 1, d_model] tensor."
            )
        key, obj = next(iter(obj.items()))
    if not isinstance(obj, Tensor):
        raise PersonaLensError(
            f"{path} holds a {type(obj).__name__}, not a tensor; expected the "
            "[n_layers + 1, d_model] tensor of a Persona Vectors file."
        )
    if not obj.is_floating_point():
        raise PersonaLensError(f"{path} holds a {obj.dtype} tensor; expected floating point.")
    return key, obj


def write_persona_vectors_pt(
    path: str | os.PathLike[str],
    directions: LayerDirections,
    embedding_row: Direction | None,
    metadata: dict[str, Any],
) -> Path:
    """Write the ``[n_layers + 1, d_model]`` HF-layout tensor with ``torch.save`` (atomic).

    Row 0 is ``embedding_row`` or zeros. The dtype is the one ``metadata`` records from an
    import of a ``.pt`` file, else that of ``directions``.
    """
    path = Path(path)
    tensor = to_hf_hidden_states_layout(directions, embedding_row)
    source = metadata.get(PT_METADATA_KEY)
    dtype_name = source.get("dtype") if isinstance(source, dict) else None
    dtype = getattr(torch, dtype_name, None) if isinstance(dtype_name, str) else None
    if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
        tensor = tensor.to(dtype)
    atomic_write(path, lambda tmp: torch.save(tensor, tmp))
    return path

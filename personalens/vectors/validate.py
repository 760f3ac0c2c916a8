"""Checks on the fields of a :class:`~personalens.vectors.vector.PersonaVector`, and the
``n_layers``/``d_model`` of the model a vector is compared with.

The messages name ``PersonaVector.<field>``: these run in ``PersonaVector.__post_init__``.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor

from personalens.errors import PersonaLensError


def as_float32(name: str, value: Any, ndim: int) -> Tensor:
    """``value`` as a contiguous float32 CPU copy, or a :class:`PersonaLensError` saying why not
    (not a tensor, wrong number of dimensions, complex, empty, NaN or inf)."""
    if not isinstance(value, Tensor):
        raise PersonaLensError(
            f"PersonaVector.{name} must be a torch.Tensor, got {type(value).__name__}; "
            "wrap it with torch.as_tensor(...)."
        )
    if value.ndim != ndim:
        want = "[n_layers, d_model]" if ndim == 2 else "[d_model]"
        raise PersonaLensError(
            f"PersonaVector.{name} must have shape {want}, got a {value.ndim}-D tensor of shape "
            f"{list(value.shape)}"
            + (
                "; for a single direction use directions[None] (one layer)."
                if ndim == 2 and value.ndim == 1
                else "."
            )
        )
    if value.is_complex():
        raise PersonaLensError(f"PersonaVector.{name} must be real, got dtype {value.dtype}")
    out = value.detach().to(device="cpu", dtype=torch.float32, copy=True).contiguous()
    if out.numel() == 0:
        raise PersonaLensError(f"PersonaVector.{name} is empty (shape {list(value.shape)}).")
    if not bool(torch.isfinite(out).all()):
        bad = int((~torch.isfinite(out)).sum())
        raise PersonaLensError(
            f"PersonaVector.{name} has {bad} non-finite value(s) (NaN or inf) after conversion "
            f"to float32 (source dtype {value.dtype}); check the activations it came from."
        )
    return out


def json_normalised(metadata: Any) -> dict[str, Any]:
    """``metadata`` as its JSON round trip (tuples become lists, keys strings)."""
    if not isinstance(metadata, dict):
        raise PersonaLensError(
            f"PersonaVector.metadata must be a dict, got {type(metadata).__name__}"
        )
    try:
        text = json.dumps(metadata)
    except (TypeError, ValueError) as exc:
        raise PersonaLensError(
            f"PersonaVector.metadata must be JSON-serialisable (it is saved in the .json file): "
            f"{exc}. Convert tensors with .tolist() and paths with str()."
        ) from None
    return json.loads(text)


def check_str(name: str, value: Any, optional: bool = False) -> None:
    if (optional and value is None) or isinstance(value, str):
        return
    raise PersonaLensError(
        f"PersonaVector.{name} must be a str{' or None' if optional else ''}, "
        f"got {type(value).__name__} {value!r}"
    )


def check_count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PersonaLensError(
            f"PersonaVector.{name} must be a non-negative int or None, got {value!r}"
        )


def model_shape(obj: object) -> tuple[int, int, str | None]:
    """``(n_layers, d_model, name or None)`` of a TransformerLens or Hugging Face model or config,
    or of anything with ``.cfg.n_layers``/``.cfg.d_model`` or ``.n_layers``/``.d_model``."""
    cfg = getattr(obj, "cfg", None) or getattr(obj, "config", None) or obj
    n_layers = getattr(cfg, "n_layers", None)
    if n_layers is None:
        n_layers = getattr(cfg, "num_hidden_layers", None)
    d_model = getattr(cfg, "d_model", None)
    if d_model is None:
        d_model = getattr(cfg, "hidden_size", None)
    if not isinstance(n_layers, int) or not isinstance(d_model, int):
        raise PersonaLensError(
            f"Cannot read n_layers and d_model from a {type(obj).__name__}; pass a "
            "HookedTransformer, a HookedTransformerConfig, or an object with "
            ".cfg.n_layers/.cfg.d_model or .n_layers/.d_model."
        )
    name = getattr(cfg, "model_name", None) or getattr(cfg, "name_or_path", None)
    return n_layers, d_model, name if isinstance(name, str) else None

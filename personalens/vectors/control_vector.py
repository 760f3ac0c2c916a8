"""llama.cpp control vectors (GGUF files) to and from :class:`~personalens.vectors.vector.PersonaVector`.

A control vector file is the GGUF that llama.cpp's ``--control-vector`` and
``--control-vector-scaled`` read and that repeng's ``ControlVector.export_gguf`` writes:

* ``general.architecture = "controlvector"``;
* ``controlvector.model_hint`` (string): the kind of model it is for. repeng writes the Hugging
  Face ``config.model_type`` (``"llama"``, ``"mistral"``, ``"qwen2"``, ...); llama.cpp never reads
  it. :func:`export_control_vector` guesses it from the vector's model name with
  :func:`default_model_hint` (``"SmolLM2-135M-Instruct"`` -> ``"llama"``) and otherwise writes
  the model name itself;
* ``controlvector.layer_count`` (uint32): the number of ``direction.N`` tensors in the file (as
  repeng writes it); llama.cpp never reads it;
* one float32 tensor ``direction.N`` of shape ``[n_embd]`` per steered layer.

Files written here also carry ``personalens.*`` keys (model, trait, method, n_layers, coeff) so
that an import restores the provenance; llama.cpp and repeng ignore keys they do not know.

Layer numbering, from the llama.cpp source (ggml-org/llama.cpp)
---------------------------------------------------------------
* ``common/common.cpp``, ``common_control_vector_load_one``: every tensor must be named
  ``direction.<int>``; an index ``< 0`` or unparsable fails with "invalid/unparsable direction
  tensor layer index", index ``0`` fails with "invalid (zero) direction tensor layer index", a
  non-F32 or non-1-D tensor fails too, and any failure skips the whole file. The tensor is added
  (times the strength) into a flat buffer at ``data[n_embd * (N - 1) + j]`` ("layer 1 at [0]").
* ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: for ``il`` in ``1 .. n_layer - 1``,
  ``tensors[il]`` gets ``data[n_embd * (il - 1) : n_embd * il]`` ("buffer doesn't have data for
  layer 0, since it's never present"); ``init`` pushes ``nullptr`` for ``il = 0``, and
  ``tensor_for(il)`` returns nothing outside ``[layer_start, layer_end]``.
* ``src/models/llama.cpp`` (and every other graph builder): at the end of the loop body for
  decoder layer ``il`` (0-based), after the FFN residual add, ``cur = build_cvec(cur, il)``, i.e.
  ``llm_graph_context::build_cvec`` -> ``cvec->apply_to(ctx0, cur, il)`` adds ``tensors[il]`` to
  the layer's output (``"l_out"``), which is the input of layer ``il + 1``.

So ``direction.N`` is added to the output of 0-based decoder layer ``N``, which is personalens
layer ``N`` (``blocks.N.hook_resid_post``, HF ``hidden_states[N + 1]``). Layer 0's output cannot
be steered by llama.cpp (the embedding output, HF ``hidden_states[0]``, neither).
``--control-vector-layer-range START END`` (``common/arg.cpp``; inclusive, and
``common_init_from_params`` defaults it to ``1 .. n_layer``) counts in the same units.

repeng (vgel/repeng, ``repeng/extract.py``): ``read_representations`` normalises its layer ids to
0-based decoder layers (default: ``n_layers - 1`` down to ``1``) and ``batched_get_hiddens``
reads ``out.hidden_states[layer + 1]`` for layer id ``layer``; ``ControlModel``
(``repeng/control.py``) adds ``directions[layer]`` to the output of ``model.layers[layer]``;
``export_gguf`` writes ``direction.{layer}``. repeng's numbering is therefore llama.cpp's (and
ours): no shift. (The first repeng release, 0.1.0, kept negative ids and read
``hidden_states[layer]``, but it had no GGUF export.) For files whose ``direction.N`` was
numbered by HF ``hidden_states`` index instead (``N = L + 1``), import with
``convention="hf_hidden_states"``.
"""

from __future__ import annotations

import math
import operator
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from personalens._io import atomic_write
from personalens.conventions import check_layer
from personalens.errors import PersonaLensError
from personalens.vectors.gguf_file import (
    KEY_LAYER_COUNT,
    KEY_MODEL_HINT,
    ControlVectorError,
    check_architecture,
    common_width,
    field_value,
    open_gguf,
    read_directions,
    read_provenance,
    write_gguf,
)
from personalens.vectors.validate import model_shape
from personalens.vectors.vector import PersonaVector

IMPORT_METHOD = "control_vector_import"

#: ``direction.N`` -> personalens layer ``N - shift``
CONVENTIONS: dict[str, int] = {"llama.cpp": 0, "repeng": 0, "hf_hidden_states": 1}

# (substring of the squashed lower-case model name, HF model_type), first match wins
_HINTS: tuple[tuple[str, str], ...] = (
    ("mixtral", "mixtral"),
    ("mistral", "mistral"),
    ("codellama", "llama"),
    ("llama", "llama"),
    ("smollm", "llama"),
    ("qwen3", "qwen3"),
    ("qwen2", "qwen2"),
    ("qwen15", "qwen2"),
    ("qwen", "qwen"),
    ("gemma3", "gemma3"),
    ("gemma2", "gemma2"),
    ("gemma", "gemma"),
    ("phi3", "phi3"),
    ("phi4", "phi3"),
    ("phi", "phi"),
    ("gpt2", "gpt2"),
    ("pythia", "gpt_neox"),
    ("gptneox", "gpt_neox"),
    ("olmo2", "olmo2"),
    ("olmo", "olmo"),
)


# ----------------------------------------------------------------------------- export


def default_model_hint(model_name: str) -> str:
    """The ``controlvector.model_hint`` written for a model name: its HF ``model_type`` if known.

    Matches the name (lower case, without ``-``, ``_``, ``.`` and spaces, path stripped) against
    known families, e.g. ``"meta-llama/Llama-3.1-8B"`` -> ``"llama"``, ``"Qwen2.5-7B-Instruct"``
    -> ``"qwen2"``, ``"gemma-2-2b-it"`` -> ``"gemma2"``; returns ``model_name`` when none matches.
    """
    squashed = re.sub(r"[-_. ]", "", model_name.rsplit("/", 1)[-1].lower())
    for needle, hint in _HINTS:
        if needle in squashed:
            return hint
    return model_name


def export_control_vector(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    layers: Iterable[int] | int | None = None,
    model_hint: str | None = None,
    coeff: float | int = 1.0,
) -> Path:
    """Write ``vector`` as a llama.cpp control vector GGUF (atomically) and return the path.

    personalens layer ``L`` is written as ``direction.L`` (llama.cpp adds it to the output of
    decoder layer ``L``; see the module docstring). ``layers=None`` writes every layer from 1 to
    ``n_layers - 1``; layer 0 cannot be expressed in the format, so it is left out, with a
    warning if its direction is not zero. Naming layer 0 in ``layers`` (also as ``-n_layers``)
    raises :class:`ControlVectorError` (a ``ValueError``). Negative layers count from the end.

    ``coeff`` multiplies the directions before writing (llama.cpp's ``--control-vector-scaled``
    scale multiplies them again at load time). ``model_hint`` defaults to
    :func:`default_model_hint` of ``vector.model``. ``hf_embedding_row`` is not written.
    """
    if not isinstance(vector, PersonaVector):
        raise ControlVectorError(
            f"export_control_vector needs a PersonaVector, got {type(vector).__name__}"
        )
    scale = _check_coeff(coeff)
    chosen = _export_layers(vector, layers)
    hint = default_model_hint(vector.model) if model_hint is None else model_hint
    if not isinstance(hint, str) or not hint:
        raise ControlVectorError(f"model_hint must be a non-empty string, got {hint!r}")
    rows = {layer: _as_row(vector.directions[layer], scale) for layer in chosen}
    if not all(np.isfinite(row).all() for row in rows.values()):
        raise ControlVectorError(f"coeff={scale} overflows float32; use a smaller coeff.")
    extra = {
        "model": vector.model,
        "trait": vector.trait,
        "method": vector.method,
        "variant": vector.variant,
        "n_layers": vector.n_layers,
        "coeff": scale,
    }
    path = Path(path)
    atomic_write(path, lambda tmp: write_gguf(tmp, rows, hint, extra))
    return path


def _check_coeff(coeff: float | int) -> float:
    if isinstance(coeff, bool) or not isinstance(coeff, (int, float)):
        raise ControlVectorError(f"coeff must be a number, got {type(coeff).__name__} {coeff!r}")
    value = float(coeff)
    if not math.isfinite(value):
        raise ControlVectorError(f"coeff must be finite, got {value}")
    return value


def _export_layers(vector: PersonaVector, layers: Iterable[int] | int | None) -> list[int]:
    """Sorted, de-duplicated personalens layers to write; never 0."""
    n_layers = vector.n_layers
    if layers is None:
        if n_layers < 2:
            raise ControlVectorError(
                f"Persona vector {vector.trait!r} has a single layer (layer 0); llama.cpp control "
                "vectors cannot steer layer 0 (direction.0 is rejected), so there is nothing to "
                "export."
            )
        if bool(vector.directions[0].any()):
            warnings.warn(
                f"Layer 0 of persona vector {vector.trait!r} is not exported: llama.cpp control "
                "vectors cannot steer the output of layer 0 (direction.0 is rejected). Pass "
                "layers=... to choose the layers explicitly.",
                stacklevel=3,
            )
        return list(range(1, n_layers))
    requested = [layers] if isinstance(layers, int) else list(layers)
    if not requested:
        raise ControlVectorError("layers is empty; pass at least one layer, or None for all.")
    chosen = sorted({_resolve_layer(layer, n_layers) for layer in requested})
    if chosen[0] == 0:
        raise ControlVectorError(
            "Cannot export layer 0 as a llama.cpp control vector: direction.N is added to the "
            "output of layer N, and llama.cpp rejects direction.0 (it never steers layer 0). "
            f"Choose layers from 1 to {n_layers - 1}."
        )
    return chosen


def _resolve_layer(layer: Any, n_layers: int) -> int:
    try:
        if not isinstance(layer, (bool, torch.Tensor)):
            layer = operator.index(layer)  # numpy integers
        return check_layer(layer, n_layers)
    except (TypeError, ValueError) as exc:
        raise ControlVectorError(str(exc)) from None


def _as_row(direction: torch.Tensor, scale: float) -> np.ndarray:
    """A contiguous little-endian float32 copy of ``direction * scale``."""
    values = direction if scale == 1.0 else direction * scale
    return np.ascontiguousarray(values.detach().cpu().numpy(), dtype="<f4").copy()


# ----------------------------------------------------------------------------- import


def import_control_vector(
    path: str | os.PathLike[str],
    *,
    n_layers: int | None = None,
    model: object | None = None,
    trait: str | None = None,
    convention: str = "llama.cpp",
) -> PersonaVector:
    """Read a llama.cpp control vector GGUF into a :class:`PersonaVector`.

    With the default ``convention="llama.cpp"`` (and its alias ``"repeng"``: repeng numbers
    layers the same way, see the module docstring) ``direction.N`` becomes personalens layer
    ``N``; ``direction.0`` is an error, as in llama.cpp. ``convention="hf_hidden_states"`` is for
    files numbered by HF ``hidden_states`` index: ``direction.N`` becomes layer ``N - 1`` and a
    ``direction.0`` (the embedding output) becomes ``hf_embedding_row``.

    Layers missing from the file are zero. ``n_layers`` is, in order: the argument; the model's
    (``model`` may be a HookedTransformer, its cfg, an HF model or config; its ``d_model`` must
    match the file); ``personalens.n_layers`` in files written by :func:`export_control_vector`;
    else the highest layer in the file + 1. ``model`` may instead be a model name (str). The
    vector's model name is the model's, else the file's ``personalens.model``, else its
    ``controlvector.model_hint``; ``trait`` defaults to the file's ``personalens.trait``, else the
    file name. The result has ``method="control_vector_import"`` and ``metadata["control_vector"]``
    with the source path, model hint and file layers.

    Raises :class:`ControlVectorError` (a PersonaLensError and ValueError) for a file that is not
    a control vector GGUF, a bad tensor (name, type, shape, widths), or a layer/width mismatch.
    """
    shift = _check_convention(convention)
    path = Path(path)
    reader = open_gguf(path)
    check_architecture(reader, path)
    found = read_directions(reader, path)
    d_model = common_width(found, path)
    hint = field_value(reader, KEY_MODEL_HINT)
    saved = read_provenance(reader)
    layers, embedding_row = _shift_layers(found, shift, path, convention)
    target_layers, model_name = _target(model, d_model, path)
    total = _resolve_n_layers(n_layers, target_layers, saved.get("n_layers"), layers, path)
    directions = torch.zeros(total, d_model, dtype=torch.float32)
    for layer, row in layers.items():
        directions[layer] = torch.from_numpy(row)
    info = {
        "path": str(path),
        "model_hint": hint,
        "convention": convention,
        "file_layers": sorted(found),
        "layer_count": field_value(reader, KEY_LAYER_COUNT),
        "personalens": saved,
    }
    name = model_name or _str_or_none(saved.get("model")) or _str_or_none(hint) or "unknown"
    try:
        return PersonaVector(
            directions=directions,
            model=name,
            trait=trait if trait is not None else _str_or_none(saved.get("trait")) or path.stem,
            method=IMPORT_METHOD,
            variant=_str_or_none(saved.get("variant")) or "unknown",
            hf_embedding_row=None if embedding_row is None else torch.from_numpy(embedding_row),
            metadata={"control_vector": info},
        )
    except PersonaLensError as exc:
        raise ControlVectorError(f"{path}: {exc}") from None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _check_convention(convention: str) -> int:
    if convention not in CONVENTIONS:
        raise ControlVectorError(
            f"unknown convention {convention!r}; use one of {sorted(CONVENTIONS)}: 'llama.cpp' "
            "and 'repeng' map direction.N to layer N, 'hf_hidden_states' to layer N - 1."
        )
    return CONVENTIONS[convention]


def _shift_layers(
    found: dict[int, np.ndarray], shift: int, path: Path, convention: str
) -> tuple[dict[int, np.ndarray], np.ndarray | None]:
    """Map file indices to personalens layers; returns (layers, hf embedding row or None)."""
    layers: dict[int, np.ndarray] = {}
    embedding_row = None
    for index, row in found.items():
        if index >= shift and index > 0:
            layers[index - shift] = row
        elif shift == 1:  # hf_hidden_states: direction.0 is the embedding output
            embedding_row = row
        else:
            raise ControlVectorError(
                f"{path} has a direction.0 tensor, which llama.cpp rejects (it cannot steer "
                f"layer 0) and convention {convention!r} does not map. If the file is numbered "
                "by HF hidden_states index (direction.0 = embedding output), use "
                "convention='hf_hidden_states'."
            )
    return layers, embedding_row


def _target(model: object | None, d_model: int, path: Path) -> tuple[int | None, str | None]:
    """(n_layers of the target model or None, model name or None); checks the width."""
    if model is None:
        return None, None
    if isinstance(model, str):
        return None, model or None
    n_layers, width, name = model_shape(model)
    if width != d_model:
        target = f"model {name!r}" if name else "the given model"
        raise ControlVectorError(
            f"{path} holds directions of width {d_model} but {target} has d_model={width}; "
            "the control vector was made for a different model."
        )
    return n_layers, name


def _resolve_n_layers(
    n_layers: int | None,
    model_layers: int | None,
    saved: Any,
    layers: dict[int, np.ndarray],
    path: Path,
) -> int:
    if n_layers is not None:
        if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
            raise ControlVectorError(f"n_layers must be a positive int, got {n_layers!r}")
        if model_layers is not None and model_layers != n_layers:
            raise ControlVectorError(
                f"n_layers={n_layers} but the given model has {model_layers} layers; pass one "
                "of them, or make them agree."
            )
    highest = max(layers, default=-1)
    total = n_layers or model_layers
    if total is None:
        valid_saved = isinstance(saved, int) and not isinstance(saved, bool) and saved > highest
        total = saved if valid_saved else highest + 1
    if total < 1:
        raise ControlVectorError(f"{path} holds no direction for any personalens layer.")
    if highest >= total:
        raise ControlVectorError(
            f"{path} has a direction for personalens layer {highest}, but n_layers is {total} "
            f"(layers 0..{total - 1}); the control vector was made for a deeper model, or "
            "n_layers is wrong."
        )
    return total

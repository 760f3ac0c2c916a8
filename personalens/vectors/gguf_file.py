"""The GGUF file of a llama.cpp control vector: writing its keys and ``direction.N`` tensors,
reading them back with the checks llama.cpp applies.

The format and how its layers are numbered are described in
:mod:`personalens.vectors.control_vector`, which converts between these files and
:class:`~personalens.vectors.vector.PersonaVector`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import gguf
import numpy as np

from personalens.errors import PersonaLensError

ARCHITECTURE = "controlvector"
KEY_MODEL_HINT = f"{ARCHITECTURE}.model_hint"
KEY_LAYER_COUNT = f"{ARCHITECTURE}.layer_count"
TENSOR_PREFIX = "direction."
PROVENANCE_PREFIX = "personalens."

_NAME = re.compile(r"direction\.([0-9]+)")


class ControlVectorError(PersonaLensError, ValueError):
    """A control vector cannot be written or read as asked (bad layer, bad file)."""


# ----------------------------------------------------------------------------- writing


def write_gguf(
    path: Path, rows: dict[int, np.ndarray], model_hint: str, extra: dict[str, Any]
) -> None:
    writer = gguf.GGUFWriter(str(path), ARCHITECTURE)
    try:
        writer.add_string(KEY_MODEL_HINT, model_hint)
        writer.add_uint32(KEY_LAYER_COUNT, len(rows))
        for key, value in extra.items():
            _add_value(writer, PROVENANCE_PREFIX + key, value)
        for layer, row in rows.items():
            writer.add_tensor(f"{TENSOR_PREFIX}{layer}", row)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()


def _add_value(writer: Any, key: str, value: Any) -> None:
    if isinstance(value, str):
        writer.add_string(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    else:
        writer.add_float64(key, float(value))


# ----------------------------------------------------------------------------- reading


def open_gguf(path: Path) -> Any:
    if not path.is_file():
        raise ControlVectorError(f"Control vector file not found: {path}")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises ValueError, IndexError, ... on junk
        raise ControlVectorError(
            f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc})."
        ) from None


def field_value(reader: Any, key: str) -> Any:
    """A scalar or string KV of a GGUF file, or None (works on gguf versions with or without
    ``ReaderField.contents``)."""
    field = reader.get_field(key)
    if field is None or not field.types or not field.parts:
        return None
    kind = field.types[0]
    if kind == gguf.GGUFValueType.ARRAY:
        return None
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", errors="replace")
    return field.parts[-1].tolist()[0]


def check_architecture(reader: Any, path: Path) -> None:
    arch = field_value(reader, "general.architecture")
    if arch != ARCHITECTURE:
        what = "has no general.architecture" if arch is None else f"has architecture {arch!r}"
        raise ControlVectorError(
            f"{path} is not a llama.cpp control vector: it {what}, expected {ARCHITECTURE!r}"
            + (" (is it a model file?)." if arch is not None else ".")
        )


def read_directions(reader: Any, path: Path) -> dict[int, np.ndarray]:
    """``{N: float32 [n_embd]}`` for the ``direction.N`` tensors, checked like llama.cpp does."""
    found: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        name = str(tensor.name)
        match = _NAME.fullmatch(name)
        if match is None:
            raise ControlVectorError(
                f"{path} has a tensor named {name!r}; a control vector holds only tensors named "
                "direction.N with N a layer number (llama.cpp rejects the whole file)."
            )
        index = int(match.group(1))
        if index in found:
            raise ControlVectorError(f"{path} has two tensors for direction.{index}.")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32:
            raise ControlVectorError(
                f"{path}: tensor {name} has type {tensor.tensor_type.name}; llama.cpp reads only "
                "F32 direction tensors."
            )
        dims = [int(d) for d in tensor.shape]
        if not dims or any(d != 1 for d in dims[1:]):  # ggml_n_dims ignores trailing 1s
            raise ControlVectorError(
                f"{path}: tensor {name} has shape {dims}; a direction must be 1-D [n_embd]."
            )
        found[index] = np.array(tensor.data, dtype=np.float32).reshape(-1)
    if not found:
        raise ControlVectorError(f"{path} holds no direction.N tensors.")
    return found


def common_width(found: dict[int, np.ndarray], path: Path) -> int:
    widths = {index: row.shape[0] for index, row in found.items()}
    if len(set(widths.values())) != 1:
        detail = ", ".join(f"direction.{i}: {w}" for i, w in sorted(widths.items()))
        raise ControlVectorError(
            f"{path}: direction tensors have different widths ({detail}); all must be [n_embd]."
        )
    width = next(iter(widths.values()))
    if width == 0:
        raise ControlVectorError(f"{path}: direction tensors are empty.")
    return width


def read_provenance(reader: Any) -> dict[str, Any]:
    """The ``personalens.*`` keys of a file written by :func:`export_control_vector`."""
    out = {}
    for key in reader.fields:
        if key.startswith(PROVENANCE_PREFIX):
            value = field_value(reader, key)
            if value is not None:
                out[key[len(PROVENANCE_PREFIX) :]] = value
    return out

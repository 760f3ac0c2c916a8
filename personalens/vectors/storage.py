"""A persona vector on disk: ``<stem>.safetensors`` (the tensors) + ``<stem>.json`` (the rest).

:meth:`PersonaVector.save` and :meth:`PersonaVector.load` are built on :func:`write_vector_files`
and :func:`read_vector_files`. The JSON is written last and records the SHA-256 of the tensor
file, so a pair whose JSON exists is complete and a mixed-up pair is detected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import safetensors.torch
from safetensors import SafetensorError
from torch import Tensor

from personalens._io import atomic_write_bytes, atomic_write_json, file_sha256
from personalens.errors import PersonaLensError

FORMAT = "personalens.persona_vector"
VERSION = 1


def vector_stem(path: str | os.PathLike[str]) -> Path:
    """The ``<stem>`` of a pair from the stem, the ``.safetensors`` or the ``.json`` path."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix("")
    if path.suffix == ".pt":
        raise PersonaLensError(
            f"{path} is a .pt path; PersonaVector.save/load use a .safetensors + .json pair. "
            "For Persona Vectors .pt files use to_persona_vectors_pt / from_persona_vectors_pt."
        )
    return path


def _json_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".json")


def _safetensors_path(stem: Path) -> Path:
    return stem.with_name(stem.name + ".safetensors")


def write_vector_files(
    path: str | os.PathLike[str], tensors: dict[str, Tensor], fields: dict[str, Any]
) -> Path:
    """Write ``tensors`` (``directions`` and maybe ``hf_embedding_row``) then the JSON record
    (``fields`` between the format header and the tensor file's name and hash); returns the
    ``.json`` path. Any old JSON is removed first."""
    stem = vector_stem(path)
    json_path, st_path = _json_path(stem), _safetensors_path(stem)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    meta = {"format": FORMAT, "version": str(VERSION)}
    # bytes through the one atomic writer: save_file would create the file 0600
    atomic_write_bytes(st_path, safetensors.torch.save(tensors, metadata=meta))
    n_layers, d_model = tensors["directions"].shape
    record = {
        "format": FORMAT,
        "version": VERSION,
        "n_layers": int(n_layers),
        "d_model": int(d_model),
        **fields,
        "has_hf_embedding_row": "hf_embedding_row" in tensors,
        "tensors_file": st_path.name,
        "tensors_sha256": file_sha256(st_path),
    }
    atomic_write_json(json_path, record)
    return json_path


def read_vector_files(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Any], Tensor, Tensor | None, Path]:
    """``(JSON record, directions, hf_embedding_row or None, JSON path)`` of a saved pair,
    checked: format and version, the tensor file's hash, shape and embedding row."""
    stem = vector_stem(path)
    json_path, st_path = _json_path(stem), _safetensors_path(stem)
    record = _read_record(stem, json_path, st_path)
    expected_sha = record.get("tensors_sha256")
    if expected_sha is not None and file_sha256(st_path) != expected_sha:
        raise PersonaLensError(
            f"{st_path} does not match {json_path} (SHA-256 differs): the pair comes from two "
            "different saves. Save the vector again."
        )
    try:
        tensors = safetensors.torch.load_file(str(st_path))
    except (OSError, SafetensorError) as exc:
        raise PersonaLensError(f"Could not read {st_path} as safetensors: {exc}") from exc
    if "directions" not in tensors:
        raise PersonaLensError(
            f"{st_path} has no tensor named 'directions' (found {sorted(tensors)})."
        )
    directions = tensors["directions"]
    want = [record.get("n_layers"), record.get("d_model")]
    if list(directions.shape) != want:
        raise PersonaLensError(
            f"{st_path} holds directions of shape {list(directions.shape)} but {json_path} "
            f"says [n_layers, d_model] = {want}; the files do not belong together. Save the "
            "vector again."
        )
    row = tensors.get("hf_embedding_row")
    if bool(record.get("has_hf_embedding_row")) != (row is not None):
        raise PersonaLensError(
            f"{json_path} and {st_path} disagree on whether an hf_embedding_row is stored; "
            "save the vector again."
        )
    return record, directions, row, json_path


def _read_record(stem: Path, json_path: Path, st_path: Path) -> dict[str, Any]:
    """The JSON record of a pair, after checking that both files exist and the format."""
    if not json_path.is_file():
        hint = (
            f" {st_path.name} exists without its JSON, so that save did not finish "
            "(the JSON is written last); save the vector again."
            if st_path.is_file()
            else " Check the path; PersonaVector.save writes <stem>.safetensors and <stem>.json."
        )
        raise PersonaLensError(f"No persona vector at {stem}: {json_path} not found.{hint}")
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PersonaLensError(f"Could not read {json_path} as JSON: {exc}") from exc
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        found = record.get("format") if isinstance(record, dict) else type(record).__name__
        raise PersonaLensError(
            f"{json_path} is not a personalens persona vector: its 'format' is {found!r}, "
            f"expected {FORMAT!r}. For a Persona Vectors .pt file use "
            "PersonaVector.from_persona_vectors_pt."
        )
    version = record.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise PersonaLensError(
            f"{json_path} has format version {version!r}; this personalens reads version "
            f"{VERSION} and older. Fix: upgrade personalens."
        )
    if not st_path.is_file():
        raise PersonaLensError(
            f"{json_path} has no tensor file: {st_path} not found. Copy both files of the "
            "pair, or save the vector again."
        )
    return record

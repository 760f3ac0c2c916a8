"""Checks of the file and name arguments that need neither the model nor a heavy import: a
missing ``--vector``, ``--data``, ``--prompts-file``, ``--trait-file`` ..., an unknown shipped
vector, trait or questionnaire name, or a missing ``--model`` path is one
:class:`~personalens.errors.ArgumentError` line in a fraction of a second, before anything loads.

They mirror what the loaders accept (:func:`personalens.vectors.resolve.load_vector`,
:func:`personalens.extraction.traits.load_trait`, :func:`personalens.model.load.load_model`),
reading only the file system and the names shipped in ``personalens/data``: those loaders import
torch, which alone takes seconds. The loaders still read and check the contents later.
"""

from __future__ import annotations

import os
from pathlib import Path

from personalens._data import VECTORS_KIND, shipped_names
from personalens.errors import ArgumentError, ModelLoadError
from personalens.model.embedded import EMBEDDED_ALIASES, EMBEDDED_MODEL_NAME

VECTOR_KINDS = (
    "an extraction run directory, a .json/.safetensors pair, a llama.cpp control-vector .gguf "
    "or the name of a shipped vector"
)


def model_name_hint(model: str | None) -> str:
    """The name :func:`~personalens.model.load.load_model` gives the model of ``--model``
    (``model.cfg.model_name``, which picks the shipped vectors), without loading it. A missing
    model path is a :class:`~personalens.errors.ModelLoadError`, as ``load_model`` raises."""
    if model is None or model.strip().lower() in EMBEDDED_ALIASES:
        return EMBEDDED_MODEL_NAME
    path = Path(model).expanduser()
    if path.suffix.lower() == ".gguf" and path.is_file():
        return path.stem
    if path.is_dir():
        return path.resolve().name
    if not path.exists() and (os.sep in model or model.startswith(".")):
        raise ModelLoadError(f"No such model path: {path}")
    return model.rstrip("/").rsplit("/", 1)[-1]  # a hub name: TransformerLens keeps the last part


def shipped_vector_names(model_name: str) -> list[str]:
    """The traits with a vector shipped for the model named ``model_name``."""
    return shipped_names(f"{VECTORS_KIND}/{model_name}")


def check_vector(spec: str, model: str | None, flag: str = "--vector") -> None:
    """Refuse a ``--vector`` that :func:`~personalens.vectors.resolve.load_vector` cannot load
    whatever the files hold: a missing path, a run directory without ``vector.json``, or a bare
    name that is not shipped for ``model`` (the ``--model`` value; ``None``: embedded)."""
    path = Path(spec)
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ArgumentError(f"{flag} {spec}: no such control-vector file")
        return
    if path.is_dir():
        if not (path / "vector.json").exists():
            raise ArgumentError(
                f"{flag} {spec}: the directory holds no vector.json: is it a finished extraction "
                "run directory? (run `personalens extract ... --out DIR` to completion, or give "
                "a vector file)"
            )
        return
    if path.suffix == ".pt":
        raise ArgumentError(
            f"{flag} {spec}: a .pt file is not a personalens vector; convert a Persona Vectors "
            "file with PersonaVector.from_persona_vectors_pt(...).save(...)"
        )
    if path.name == spec and not path.suffix and not Path(f"{spec}.json").exists():
        _check_shipped_vector(spec, model, flag)  # a bare name, as load_vector reads it
        return
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    if not stem.with_name(stem.name + ".json").is_file():
        raise ArgumentError(f"{flag} {spec}: no such file or directory; give {VECTOR_KINDS}")


def _check_shipped_vector(name: str, model: str | None, flag: str) -> None:
    model_name = model_name_hint(model)
    shipped = shipped_vector_names(model_name)
    if name in shipped:
        return
    if shipped:
        listed = f"shipped for {model_name}: {', '.join(shipped)}"
    else:
        embedded = ", ".join(shipped_vector_names(EMBEDDED_MODEL_NAME)) or "none"
        listed = (
            f"none is shipped for {model_name}; vectors ship for the embedded "
            f"{EMBEDDED_MODEL_NAME} (no --model): {embedded}"
        )
    raise ArgumentError(
        f"{flag} {name}: no such file or directory, and no shipped vector of that name "
        f"({listed}). Give {VECTOR_KINDS}, or extract one with `personalens extract --trait "
        f"{name} --out runs/{name}`"
    )


def check_file(flag: str, value: str | os.PathLike[str], what: str = "file") -> Path:
    """``value`` as a path, refused unless it is an existing file."""
    path = Path(value)
    if path.is_dir():
        raise ArgumentError(f"{flag} {value}: is a directory, not a {what}")
    if not path.is_file():
        raise ArgumentError(f"{flag} {value}: no such {what}")
    return path


def check_dir(flag: str, value: str | os.PathLike[str], what: str = "directory") -> Path:
    """``value`` as a path, refused unless it is an existing directory."""
    path = Path(value)
    if not path.is_dir():
        raise ArgumentError(
            f"{flag} {value}: " + ("is a file, not a " if path.exists() else "no such ") + what
        )
    return path


def check_file_or_shipped(flag: str, value: str, kind: str, what: str, hint: str = "") -> None:
    """Refuse ``value`` unless :func:`personalens._data.load_file_or_shipped` would find it: a
    ``.json`` path or an existing file (which must exist), else a name shipped in
    ``personalens/data/<kind>``."""
    path = Path(value)
    if path.suffix == ".json" or path.is_file() or os.sep in value:
        check_file(flag, value, f"{what} file")
        return
    shipped = shipped_names(kind)
    if value not in shipped:
        raise ArgumentError(
            f"{flag} {value}: unknown {what} {value!r}: no such file, and not a shipped one "
            f"(shipped: {', '.join(shipped) or 'none'}){hint}"
        )

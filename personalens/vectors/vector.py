"""A persona vector: one direction per layer in a model's residual stream that carries a trait.

:class:`PersonaVector` holds a ``[n_layers, d_model]`` float32 tensor plus its provenance (model,
trait, extraction method and variant, sample counts, judge). It supports vector algebra
(``a + b``, ``a - b``, ``-a``, ``2 * a``, ``a / 2``, ``a * per_layer_weights``, ``sum([...])``),
saves to a ``.safetensors`` + ``.json`` pair, and converts to and from the ``.pt`` files of the
Persona Vectors paper (Chen et al., 2025).

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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import NotImplementedType
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens._io import atomic_write, atomic_write_json
from personalens._types import LayerDirections
from personalens.conventions import (
    HOOK_TEMPLATE,
    LAYER_CONVENTION,
    check_layer,
    hf_hidden_states_index,
)
from personalens.errors import PersonaLensError

Direction = Float[Tensor, " d_model"]
LayerWeights = Float[Tensor, " n_layers"]
HFLayout = Float[Tensor, "n_hf d_model"]

FORMAT = "personalens.persona_vector"
VERSION = 1
VARIANTS = ("response_avg", "prompt_avg", "last_prompt_token")

# how tightly an algebra expression binds, from its top-level operator; plain traits are atoms
_PRECEDENCE = {"+": 1, "-": 1, "neg": 2, "*": 3, "/": 3}
_ATOM = 4


# ----------------------------------------------------------------------------- HF layout


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


# ----------------------------------------------------------------------------- validation


def _as_float32(name: str, value: Any, ndim: int) -> Tensor:
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


def _json_normalised(metadata: Any) -> dict[str, Any]:
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


def _check_str(name: str, value: Any, optional: bool = False) -> None:
    if (optional and value is None) or isinstance(value, str):
        return
    raise PersonaLensError(
        f"PersonaVector.{name} must be a str{' or None' if optional else ''}, "
        f"got {type(value).__name__} {value!r}"
    )


def _check_count(name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PersonaLensError(
            f"PersonaVector.{name} must be a non-negative int or None, got {value!r}"
        )


# ----------------------------------------------------------------------------- the vector


@dataclass(frozen=True, eq=False, repr=False)
class PersonaVector:
    """Per-layer directions ``[n_layers, d_model]`` (float32, CPU) and where they came from.

    ``directions[L]`` lives at personalens layer ``L`` (``blocks.L.hook_resid_post``).
    ``hf_embedding_row`` is row 0 of a Persona Vectors ``.pt`` file (the embedding output, which
    has no personalens layer); it is kept only so that import/export round-trips exactly.
    ``metadata`` is extra JSON-serialisable provenance; it is stored as its JSON round trip
    (tuples become lists, keys become strings) so that save/load gives an equal vector.
    """

    directions: Float[Tensor, "n_layers d_model"]
    model: str
    trait: str
    method: str = "mean_diff"
    variant: str = "response_avg"
    hook_template: str = HOOK_TEMPLATE
    layer_convention: str = LAYER_CONVENTION
    n_pos: int | None = None
    n_neg: int | None = None
    judge: str | None = None
    hf_embedding_row: Float[Tensor, " d_model"] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        directions = _as_float32("directions", self.directions, ndim=2)
        object.__setattr__(self, "directions", directions)
        if self.hf_embedding_row is not None:
            row = _as_float32("hf_embedding_row", self.hf_embedding_row, ndim=1)
            if row.shape[0] != directions.shape[1]:
                raise PersonaLensError(
                    f"PersonaVector.hf_embedding_row has {row.shape[0]} values but the directions "
                    f"have d_model={directions.shape[1]}; pass a [{directions.shape[1]}] row or None."
                )
            object.__setattr__(self, "hf_embedding_row", row)
        for name in ("model", "trait", "method", "variant", "hook_template", "layer_convention"):
            _check_str(name, getattr(self, name))
        _check_str("judge", self.judge, optional=True)
        _check_count("n_pos", self.n_pos)
        _check_count("n_neg", self.n_neg)
        object.__setattr__(self, "metadata", _json_normalised(self.metadata))

    # ------------------------------------------------------------------ shape and access

    @property
    def n_layers(self) -> int:
        return int(self.directions.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.directions.shape[1])

    def __len__(self) -> int:
        return self.n_layers

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.directions.unbind(0))

    def __getitem__(self, layer: int) -> Direction:
        """The ``[d_model]`` direction at ``layer`` (negative counts from the end); a view."""
        return self.directions[check_layer(layer, self.n_layers)]

    def norms(self) -> LayerWeights:
        """L2 norm of the direction at every layer, ``[n_layers]``."""
        return torch.linalg.vector_norm(self.directions, dim=-1)

    def unit(self, layer: int | None = None) -> Direction | PersonaVector:
        """Unit-norm direction at ``layer``, or (``layer=None``) a copy normalised per layer.

        Zero directions stay zero. The copy also normalises ``hf_embedding_row``.
        """
        if layer is not None:
            return unit_rows(self[layer][None])[0]
        row = self.hf_embedding_row
        return dataclasses.replace(
            self,
            directions=unit_rows(self.directions),
            hf_embedding_row=None if row is None else unit_rows(row[None])[0],
            metadata={**self.metadata, "normalised": "per_layer"},
        )

    def replace(self, **changes: Any) -> PersonaVector:
        """A copy with some fields changed (``dataclasses.replace``); validated like a new one."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ equality, repr

    def __eq__(self, other: object) -> bool | NotImplementedType:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, Tensor) or isinstance(b, Tensor):
                if not (isinstance(a, Tensor) and isinstance(b, Tensor) and torch.equal(a, b)):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None  # type: ignore[assignment]  # holds tensors; equal vectors need not hash alike

    # numpy scalars defer to our __rmul__ instead of treating the vector as a sequence
    __array_ufunc__ = None

    def __repr__(self) -> str:
        extra = "".join(
            f", {name}={getattr(self, name)!r}"
            for name in ("n_pos", "n_neg", "judge")
            if getattr(self, name) is not None
        )
        return (
            f"PersonaVector(trait={self.trait!r}, model={self.model!r}, method={self.method!r}, "
            f"variant={self.variant!r}, n_layers={self.n_layers}, d_model={self.d_model}{extra})"
        )

    # ------------------------------------------------------------------ compatibility

    def check_compatible(self, model_or_cfg: object) -> None:
        """Raise :class:`PersonaLensError` unless the model has this vector's n_layers and d_model.

        Accepts a TransformerLens ``HookedTransformer`` or ``HookedTransformerConfig``, a Hugging
        Face model or config, or anything with ``.cfg.n_layers``/``.cfg.d_model`` or
        ``.n_layers``/``.d_model``.
        """
        n_layers, d_model, name = model_shape(model_or_cfg)
        problems = []
        if d_model != self.d_model:
            problems.append(f"d_model differs ({self.d_model} in the vector vs {d_model})")
        if n_layers != self.n_layers:
            problems.append(f"n_layers differs ({self.n_layers} in the vector vs {n_layers})")
        if not problems:
            return
        target = f"model {name!r}" if name else "the given model"
        raise PersonaLensError(
            f"Persona vector {self.trait!r} was extracted from {self.model!r} with "
            f"n_layers={self.n_layers}, d_model={self.d_model}, but {target} has "
            f"n_layers={n_layers}, d_model={d_model}: {'; '.join(problems)}. "
            f"Fix: load the model the vector came from ({self.model!r}), or extract a new "
            "vector from this model."
        )

    # ------------------------------------------------------------------ algebra

    def __add__(self, other: object) -> PersonaVector | NotImplementedType:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        return _combine(self, other, "+")

    def __radd__(self, other: object) -> PersonaVector | NotImplementedType:
        # sum([a, b, c]) starts from 0
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: object) -> PersonaVector | NotImplementedType:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        return _combine(self, other, "-")

    def __neg__(self) -> PersonaVector:
        row = self.hf_embedding_row
        return _algebra_result(
            self,
            directions=-self.directions,
            hf_embedding_row=None if row is None else -row,
            op="neg",
            expression="-" + _operand(self, 3),
            operands=[self],
        )

    def __mul__(self, other: object) -> PersonaVector | NotImplementedType:
        return self._scale(other, divide=False)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> PersonaVector | NotImplementedType:
        return self._scale(other, divide=True)

    def _scale(self, other: object, divide: bool) -> PersonaVector | NotImplementedType:
        op = "/" if divide else "*"
        row = self.hf_embedding_row
        if isinstance(other, Tensor) and other.ndim > 0:
            weights = _layer_weights(other, self.n_layers, divide)
            directions = (
                self.directions / weights[:, None] if divide else self.directions * weights[:, None]
            )
            expression = f"{_operand(self, 3)}/w" if divide else f"w*{_operand(self, 3)}"
            return _algebra_result(
                self,
                directions=directions,
                hf_embedding_row=None,  # the embedding row has no layer weight
                op=op,
                expression=expression,
                operands=[self],
                extra={"layer_weights": weights.tolist()},
            )
        scalar = _as_scalar(other, divide)
        if scalar is None:
            return NotImplemented
        factor = 1.0 / scalar if divide else scalar
        if divide:
            directions = self.directions / scalar
            new_row = None if row is None else row / scalar
        else:
            directions = self.directions * scalar
            new_row = None if row is None else row * scalar
        shown = f"{scalar:g}"
        expression = (
            f"{_operand(self, 3)}/{f'({shown})' if scalar < 0 else shown}"
            if divide
            else f"{shown}*{_operand(self, 3)}"
        )
        return _algebra_result(
            self,
            directions=directions,
            hf_embedding_row=new_row,
            op=op,
            expression=expression,
            operands=[self],
            extra={"scale": factor},
        )

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<stem>.safetensors`` then ``<stem>.json``; returns the ``.json`` path.

        ``path`` may be the stem, the ``.safetensors`` path or the ``.json`` path. Both writes are
        atomic and the JSON comes last (any old one is removed first), so a pair whose JSON
        exists is complete; the JSON also records the SHA-256 of the tensor file.
        """
        stem = _stem(path)
        json_path, st_path = _json_path(stem), _safetensors_path(stem)
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.unlink(missing_ok=True)
        tensors = {"directions": self.directions}
        if self.hf_embedding_row is not None:
            tensors["hf_embedding_row"] = self.hf_embedding_row
        _atomic_save_safetensors(st_path, tensors)
        record = {
            "format": FORMAT,
            "version": VERSION,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            **{
                f.name: getattr(self, f.name)
                for f in dataclasses.fields(self)
                if f.name not in ("directions", "hf_embedding_row")
            },
            "has_hf_embedding_row": self.hf_embedding_row is not None,
            "tensors_file": st_path.name,
            "tensors_sha256": _sha256(st_path),
        }
        atomic_write_json(json_path, record)
        return json_path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PersonaVector:
        """Read a vector written by :meth:`save` (``path``: stem, ``.safetensors`` or ``.json``)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        stem = _stem(path)
        json_path, st_path = _json_path(stem), _safetensors_path(stem)
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
        expected_sha = record.get("tensors_sha256")
        if expected_sha is not None and _sha256(st_path) != expected_sha:
            raise PersonaLensError(
                f"{st_path} does not match {json_path} (SHA-256 differs): the pair comes from two "
                "different saves. Save the vector again."
            )
        try:
            tensors = load_file(str(st_path))
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
        names = {f.name for f in dataclasses.fields(cls)} - {"directions", "hf_embedding_row"}
        kwargs = {k: v for k, v in record.items() if k in names}
        try:
            return cls(directions=directions, hf_embedding_row=row, **kwargs)
        except (PersonaLensError, TypeError, ValueError) as exc:
            raise PersonaLensError(f"{json_path} holds an invalid persona vector: {exc}") from exc

    # ------------------------------------------------------------------ Persona Vectors .pt

    @classmethod
    def from_persona_vectors_pt(
        cls,
        path: str | os.PathLike[str],
        *,
        model: str,
        trait: str,
        variant: str = "response_avg",
        judge: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> PersonaVector:
        """Import a Persona Vectors ``.pt`` file: ``[n_layers + 1, d_model]``, HF indexing.

        Loaded with ``torch.load(..., weights_only=True)`` only, so no pickled code runs. The
        file may hold a bare tensor or a dict with a single tensor value. Row 0 is kept as
        ``hf_embedding_row``; the source dtype is recorded in ``metadata`` and restored by
        :meth:`to_persona_vectors_pt` (exact for float32/bfloat16/float16 sources).
        """
        path = Path(path)
        if not path.is_file():
            raise PersonaLensError(f"Persona Vectors file not found: {path}")
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
        directions, row0 = from_hf_hidden_states_layout(obj)
        if obj.dtype == torch.float64 and not torch.equal(obj.float().double(), obj):
            warnings.warn(
                f"{path} is float64; personalens stores float32, so exporting it again will not "
                "be bit-identical.",
                stacklevel=2,
            )
        provenance = {
            "persona_vectors_pt": {
                "path": str(path),
                "dtype": str(obj.dtype).removeprefix("torch."),
                "key": None if key is None else str(key),
            }
        }
        return cls(
            directions=directions,
            model=model,
            trait=trait,
            method="mean_diff",
            variant=variant,
            judge=judge,
            hf_embedding_row=row0,
            metadata={**(metadata or {}), **provenance},
        )

    def to_persona_vectors_pt(self, path: str | os.PathLike[str]) -> Path:
        """Write the ``[n_layers + 1, d_model]`` HF-layout tensor with ``torch.save`` (atomic).

        Row 0 is ``hf_embedding_row`` or zeros. The dtype is the one recorded on import from a
        ``.pt`` file, else float32.
        """
        path = Path(path)
        tensor = to_hf_hidden_states_layout(self.directions, self.hf_embedding_row)
        source = self.metadata.get("persona_vectors_pt")
        dtype_name = source.get("dtype") if isinstance(source, dict) else None
        dtype = getattr(torch, dtype_name, None) if isinstance(dtype_name, str) else None
        if isinstance(dtype, torch.dtype) and dtype.is_floating_point:
            tensor = tensor.to(dtype)
        atomic_write(path, lambda tmp: torch.save(tensor, tmp))
        return path


# ----------------------------------------------------------------------------- helpers


def unit_rows(rows: Tensor) -> Tensor:
    norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    return torch.where(norms > 0, rows / torch.where(norms > 0, norms, 1.0), 0.0)


def model_shape(obj: object) -> tuple[int, int, str | None]:
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


def _precedence(v: PersonaVector) -> int:
    if v.method != "algebra":
        return _ATOM
    return _PRECEDENCE.get(v.metadata.get("op"), _ATOM)


def _operand(v: PersonaVector, min_precedence: int) -> str:
    """``v.trait``, parenthesised if it binds looser than ``min_precedence`` or starts with '-'."""
    text = v.trait
    if _precedence(v) < min_precedence or text.startswith("-"):
        return f"({text})"
    return text


def check_same_space(a: PersonaVector, b: PersonaVector) -> None:
    where = f"{a.trait!r} (from {a.model!r}, shape {[a.n_layers, a.d_model]})"
    other = f"{b.trait!r} (from {b.model!r}, shape {[b.n_layers, b.d_model]})"
    if a.directions.shape != b.directions.shape:
        raise PersonaLensError(
            f"Cannot combine persona vectors of different shapes: {where} and {other}. Fix: "
            "extract both vectors from the same model."
        )
    if a.model != b.model:
        raise PersonaLensError(
            f"Cannot combine {where} with {other}: they come from different models, whose "
            "residual streams need not share a basis. Fix: extract both from one model; if the "
            "two names are the same model, give one vector the other's name with "
            ".replace(model=...)."
        )
    for name in ("hook_template", "layer_convention"):
        if getattr(a, name) != getattr(b, name):
            raise PersonaLensError(
                f"Cannot combine {a.trait!r} ({name}={getattr(a, name)!r}) with {b.trait!r} "
                f"({name}={getattr(b, name)!r}): their layers are different hook points. Fix: "
                "extract both at the same hook point."
            )


def _combine(a: PersonaVector, b: PersonaVector, op: str) -> PersonaVector:
    check_same_space(a, b)

    def apply(x: Tensor, y: Tensor) -> Tensor:
        return x + y if op == "+" else x - y

    row = None
    if a.hf_embedding_row is not None and b.hf_embedding_row is not None:
        row = apply(a.hf_embedding_row, b.hf_embedding_row)
    right = _operand(b, 1 if op == "+" else 3)
    return _algebra_result(
        a,
        directions=apply(a.directions, b.directions),
        hf_embedding_row=row,
        op=op,
        expression=f"{a.trait} {op} {right}",
        operands=[a, b],
        variant=a.variant if a.variant == b.variant else "mixed",
        judge=a.judge if a.judge == b.judge else None,
    )


def _provenance(v: PersonaVector) -> dict[str, Any]:
    return {
        "trait": v.trait,
        "method": v.method,
        "variant": v.variant,
        "n_pos": v.n_pos,
        "n_neg": v.n_neg,
        "judge": v.judge,
        "metadata": v.metadata,
    }


def _algebra_result(
    base: PersonaVector,
    *,
    directions: Tensor,
    hf_embedding_row: Tensor | None,
    op: str,
    expression: str,
    operands: list[PersonaVector],
    variant: str | None = None,
    judge: str | None = None,
    extra: dict[str, Any] | None = None,
) -> PersonaVector:
    return PersonaVector(
        directions=directions,
        model=base.model,
        trait=expression,
        method="algebra",
        variant=base.variant if variant is None else variant,
        hook_template=base.hook_template,
        layer_convention=base.layer_convention,
        judge=base.judge if len(operands) == 1 else judge,
        hf_embedding_row=hf_embedding_row,
        metadata={
            "expression": expression,
            "op": op,
            "operands": [v.trait for v in operands],
            **(extra or {}),
            "sources": [_provenance(v) for v in operands],
        },
    )


def _as_scalar(other: object, divide: bool) -> float | None:
    if isinstance(other, Tensor):  # 0-d tensor
        other = other.item()
    if isinstance(other, bool) or not isinstance(other, numbers.Real):
        return None
    value = float(other)
    if not math.isfinite(value):
        raise PersonaLensError(f"Cannot scale a persona vector by {value}; use a finite number.")
    if divide and value == 0:
        raise ZeroDivisionError("Cannot divide a persona vector by 0.")
    return value


def _layer_weights(other: Tensor, n_layers: int, divide: bool) -> Tensor:
    if tuple(other.shape) != (n_layers,):
        raise PersonaLensError(
            f"A per-layer scale must have shape [n_layers] = [{n_layers}], got "
            f"{list(other.shape)}. Fix: pass {n_layers} values (one per layer), or a number to "
            "scale every layer."
        )
    weights = other.detach().to(device="cpu", dtype=torch.float32)
    if not bool(torch.isfinite(weights).all()):
        raise PersonaLensError("A per-layer scale has NaN or inf values; use finite numbers.")
    if divide and bool((weights == 0).any()):
        raise ZeroDivisionError("Cannot divide a persona vector by a per-layer scale with zeros.")
    return weights


def _stem(path: str | os.PathLike[str]) -> Path:
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _atomic_save_safetensors(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "version": str(VERSION)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))

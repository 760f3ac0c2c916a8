"""A persona vector: one direction per layer in a model's residual stream that carries a trait.

:class:`PersonaVector` holds a ``[n_layers, d_model]`` float32 tensor plus its provenance (model,
trait, extraction method and variant, sample counts, judge). It supports vector algebra
(``a + b``, ``a - b``, ``-a``, ``2 * a``, ``a / 2``, ``a * per_layer_weights``, ``sum([...])``;
:mod:`personalens.vectors.arithmetic`), saves to a ``.safetensors`` + ``.json`` pair
(:mod:`personalens.vectors.storage`), and converts to and from the ``.pt`` files of the Persona
Vectors paper (Chen et al., 2025; :mod:`personalens.vectors.pt_format`, which also documents how
personalens layers map to Hugging Face ``hidden_states`` rows).

personalens layer ``L`` is the TransformerLens hook ``blocks.L.hook_resid_post``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import NotImplementedType
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import HOOK_TEMPLATE, LAYER_CONVENTION, check_layer
from personalens.errors import PersonaLensError
from personalens.vectors.arithmetic import VectorArithmetic
from personalens.vectors.pt_format import read_persona_vectors_pt, write_persona_vectors_pt
from personalens.vectors.storage import read_vector_files, write_vector_files
from personalens.vectors.validate import (
    as_float32,
    check_count,
    check_str,
    json_normalised,
    model_shape,
)

Direction = Float[Tensor, " d_model"]
LayerWeights = Float[Tensor, " n_layers"]

VARIANTS = ("response_avg", "prompt_avg", "last_prompt_token")


# ----------------------------------------------------------------------------- the vector


@dataclass(frozen=True, eq=False, repr=False)
class PersonaVector(VectorArithmetic):
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
        directions = as_float32("directions", self.directions, ndim=2)
        object.__setattr__(self, "directions", directions)
        if self.hf_embedding_row is not None:
            row = as_float32("hf_embedding_row", self.hf_embedding_row, ndim=1)
            if row.shape[0] != directions.shape[1]:
                raise PersonaLensError(
                    f"PersonaVector.hf_embedding_row has {row.shape[0]} values but the directions "
                    f"have d_model={directions.shape[1]}; pass a [{directions.shape[1]}] row or None."
                )
            object.__setattr__(self, "hf_embedding_row", row)
        for name in ("model", "trait", "method", "variant", "hook_template", "layer_convention"):
            check_str(name, getattr(self, name))
        check_str("judge", self.judge, optional=True)
        check_count("n_pos", self.n_pos)
        check_count("n_neg", self.n_neg)
        object.__setattr__(self, "metadata", json_normalised(self.metadata))

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

        Zero directions stay zero. The copy also normalises ``hf_embedding_row``. The one
        implementation of per-layer normalising: :func:`personalens.vectors.algebra.normalize`
        returns this copy, or normalises only some layers.
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

    # ------------------------------------------------------------------ save / load

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<stem>.safetensors`` then ``<stem>.json``; returns the ``.json`` path.

        ``path`` may be the stem, the ``.safetensors`` path or the ``.json`` path. Both writes are
        atomic and the JSON comes last (any old one is removed first), so a pair whose JSON
        exists is complete; the JSON also records the SHA-256 of the tensor file.
        """
        tensors = {"directions": self.directions}
        if self.hf_embedding_row is not None:
            tensors["hf_embedding_row"] = self.hf_embedding_row
        fields = {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("directions", "hf_embedding_row")
        }
        return write_vector_files(path, tensors, fields)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PersonaVector:
        """Read a vector written by :meth:`save` (``path``: stem, ``.safetensors`` or ``.json``)."""
        record, directions, row, json_path = read_vector_files(path)
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
        :meth:`to_persona_vectors_pt` (exact for float32/bfloat16/float16 sources). See
        :mod:`personalens.vectors.pt_format`.
        """
        directions, row0, provenance = read_persona_vectors_pt(path)
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
        return write_persona_vectors_pt(path, self.directions, self.hf_embedding_row, self.metadata)


# ----------------------------------------------------------------------------- helpers


def unit_rows(rows: Tensor) -> Tensor:
    """Each row (last dimension) at unit L2 norm; zero rows stay zero (no NaN)."""
    norms = torch.linalg.vector_norm(rows, dim=-1, keepdim=True)
    return torch.where(norms > 0, rows / torch.where(norms > 0, norms, 1.0), 0.0)

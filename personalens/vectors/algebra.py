"""Vector algebra on persona vectors beyond ``+ - * /``: normalising, projecting out, orthogonalising
and comparing, always layer by layer.

Every function here works on each layer's ``[d_model]`` direction on its own: layer ``L`` of the
result depends only on layer ``L`` of the inputs. Nothing is ever computed on the flattened
``[n_layers * d_model]`` tensor, whose cosines and projections mix layers whose residual streams
have very different scales (late layers would dominate).

* :func:`normalize` -- unit-norm direction at every (or some) layers.
* :func:`project_out` -- remove, per layer, the component in the span of other vectors.
* :func:`gram_schmidt` -- orthogonalise a list of vectors in order, per layer.
* :func:`cosine_matrix` -- ``k x k`` cosine similarities per layer, as a :class:`CosineMatrix`.
* :func:`cosine_by_layer` -- the cosine of two vectors at every layer.

Results of :func:`project_out` and :func:`gram_schmidt` are new :class:`PersonaVector` objects
whose provenance (``method``, ``metadata["op"]``, ``metadata["sources"]``) records the operation,
like the arithmetic operators of :class:`PersonaVector`. The computations run in float64 and the
results are stored as float32. A zero direction never produces NaN: it normalises to zero, has
cosine 0 with everything, and is ignored when it spans nothing.

The ``hf_embedding_row`` of a Persona Vectors ``.pt`` file (the embedding output, no personalens
layer) is treated like one more layer when every input has one, and dropped (None) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from personalens.conventions import select_layers
from personalens.errors import PersonaLensError
from personalens.results import Result
from personalens.vectors.arithmetic import _algebra_result, check_same_space
from personalens.vectors.vector import PersonaVector, unit_rows

__all__ = [
    "CosineMatrix",
    "cosine_by_layer",
    "cosine_matrix",
    "gram_schmidt",
    "normalize",
    "project_out",
]

PerLayer = Float[Tensor, " n_layers"]
PerSelectedLayer = Float[Tensor, " n_selected"]
SquareCosines = Float[Tensor, "k k"]
LayerCosines = Float[Tensor, "n_selected k k"]

# a row whose part outside the span of the rows before it is at most RTOL times its own norm is
# treated as lying in that span: float32 inputs carry ~1e-7 relative rounding, so a vector built
# as a combination of others keeps a residual of that size, which is noise, not a direction
RTOL = 1e-5


# ----------------------------------------------------------------------------- normalize


def normalize(v: PersonaVector, *, layers: Sequence[int] | None = None) -> PersonaVector:
    """``v`` at unit norm per layer: :meth:`PersonaVector.unit` (every layer), or only ``layers``.

    ``layers=None`` returns exactly ``v.unit()`` (which also normalises
    ``hf_embedding_row`` and records ``metadata["normalised"] = "per_layer"``). With ``layers``
    (personalens layer indices, negative counting from the end) only those rows are normalised;
    the other rows and ``hf_embedding_row`` are kept as they are, and the layers are recorded in
    ``metadata["normalised_layers"]``. Zero rows stay zero (no NaN). Trait and method are kept:
    the direction is the same, only its length changes.
    """
    if layers is None:
        out = v.unit()
        assert isinstance(out, PersonaVector)
        return out
    selected = list(select_layers(layers, v.n_layers, unique=True))
    directions = v.directions.clone()
    directions[selected] = unit_rows(directions[selected])
    return v.replace(
        directions=directions,
        metadata={**v.metadata, "normalised": "per_layer", "normalised_layers": selected},
    )


# ----------------------------------------------------------------------------- project_out


def project_out(
    v: PersonaVector,
    others: PersonaVector | Sequence[PersonaVector],
    *,
    rtol: float = RTOL,
) -> PersonaVector:
    """``v`` minus, at every layer, its orthogonal projection on the span of ``others`` there.

    At each layer ``L`` the rows ``others[i].directions[L]`` are orthonormalised (modified
    Gram-Schmidt with re-orthogonalisation, i.e. a QR factorisation of the ``[d_model, m]``
    matrix of others, computed in float64), and ``v.directions[L]`` is projected off that basis.
    The others need not be orthogonal or independent: a row that is zero, or lies (up to
    ``rtol`` of its norm) in the span of the rows before it, adds nothing to the span. The result
    has zero dot product with every other's direction at every layer, and projecting out again
    changes nothing.

    The result has ``method="project_out"`` and ``trait="project_out(v, [o1, o2])"``; its
    ``metadata`` has ``op="project_out"``, ``others`` (their traits) and ``sources`` (the full
    provenance of ``v`` and each other).
    """
    others = [others] if isinstance(others, PersonaVector) else list(others)
    if not others:
        raise PersonaLensError(
            "project_out needs at least one vector to project out; got an empty list."
        )
    operands = [v, *others]
    _check_all_same_space(
        operands, "project_out", ["v", *(f"others[{i}]" for i in range(len(others)))]
    )
    stack, has_row = _stack(operands)  # [rows, 1 + m, d_model]
    _, basis = _orthogonalise(stack[:, 1:], rtol)
    residual = _project_off(stack[:, 0], basis)
    directions, row = _unstack(residual, has_row)
    names = [o.trait for o in others]
    return _derived(
        v,
        directions=directions,
        row=row,
        op="project_out",
        expression=f"project_out({v.trait}, [{', '.join(names)}])",
        operands=operands,
        extra={"others": names, "rtol": rtol},
    )


# ----------------------------------------------------------------------------- gram_schmidt


def gram_schmidt(
    vectors: Sequence[PersonaVector],
    *,
    normalize: bool = False,
    rtol: float = RTOL,
) -> list[PersonaVector]:
    """Orthogonalise ``vectors`` in the given order, separately at every layer.

    Output ``i`` at layer ``L`` is ``vectors[i].directions[L]`` minus its orthogonal projection on
    the span of ``vectors[0..i-1]`` at layer ``L``; so the first vector is returned as it is (the
    same object), the outputs are pairwise orthogonal at every layer, and the first ``j`` outputs
    span what the first ``j`` inputs span. The order matters: earlier vectors keep more of
    themselves.

    Norms are kept as produced: output ``i``'s norm at a layer is the length of the part of
    ``vectors[i]`` that is new relative to the vectors before it (small when it was nearly
    redundant). Pass ``normalize=True`` to get unit rows instead (an orthonormal basis per layer;
    the first vector is then :func:`normalize`-d too).

    A row that is zero, or lies (up to ``rtol`` of its norm) in the span of the rows before it,
    comes out as exactly zero rather than as amplified rounding noise; nothing becomes NaN.
    Computed in float64 with modified Gram-Schmidt and one re-orthogonalisation pass ("twice is
    enough"), so the outputs are orthogonal to float32 precision even for nearly parallel inputs.

    Outputs after the first have ``method="gram_schmidt"``,
    ``trait="gram_schmidt(v_i, after=[v_0, ...])"`` and ``metadata`` with ``op="gram_schmidt"``,
    ``after`` (the traits of the earlier vectors) and ``sources``.
    """
    vectors = list(vectors)
    _check_all_same_space(vectors, "gram_schmidt", [f"vectors[{i}]" for i in range(len(vectors))])
    stack, has_row = _stack(vectors)
    residuals, _ = _orthogonalise(stack, rtol)
    out = [vectors[0]]
    for i in range(1, len(vectors)):
        directions, row = _unstack(residuals[:, i], has_row)
        earlier = [u.trait for u in vectors[:i]]
        out.append(
            _derived(
                vectors[i],
                directions=directions,
                row=row,
                op="gram_schmidt",
                expression=f"gram_schmidt({vectors[i].trait}, after=[{', '.join(earlier)}])",
                operands=[vectors[i], *vectors[:i]],
                extra={"after": earlier, "rtol": rtol},
            )
        )
    if normalize:
        out = [u.unit() for u in out]  # type: ignore[misc]  # unit() without a layer: a vector
    return out


# ----------------------------------------------------------------------------- cosines


@dataclass(frozen=True, eq=False, repr=False)
class CosineMatrix(Result):
    """Cosine similarities between ``k`` persona vectors at some layers.

    ``values[i, a, b]`` is the cosine of vectors ``a`` and ``b`` at personalens layer
    ``layers[i]`` (float32, symmetric, in ``[-1, 1]``). The diagonal is 1, except for a vector
    whose direction at that layer is zero: a zero direction has cosine 0 with everything,
    itself included. ``names[a]`` labels vector ``a``.
    """

    values: LayerCosines
    layers: list[int]
    names: list[str]

    def __post_init__(self) -> None:
        values = self.values
        if values.ndim != 3 or values.shape[1] != values.shape[2]:
            raise PersonaLensError(
                f"CosineMatrix.values must have shape [n_layers, k, k], got {list(values.shape)}"
            )
        if len(self.layers) != values.shape[0]:
            raise PersonaLensError(
                f"CosineMatrix has {values.shape[0]} layer(s) of values but {len(self.layers)} "
                f"layer number(s): {self.layers}"
            )
        if len(self.names) != values.shape[1]:
            raise PersonaLensError(
                f"CosineMatrix compares {values.shape[1]} vectors but has {len(self.names)} "
                f"name(s): {self.names}"
            )
        object.__setattr__(self, "layers", [int(layer) for layer in self.layers])
        object.__setattr__(self, "names", [str(name) for name in self.names])

    @property
    def k(self) -> int:
        """Number of vectors compared."""
        return int(self.values.shape[1])

    def __repr__(self) -> str:
        return f"CosineMatrix(k={self.k}, names={self.names}, layers={self.layers})"

    def at(self, layer: int) -> SquareCosines:
        """The ``[k, k]`` cosine matrix at personalens layer ``layer`` (one of :attr:`layers`)."""
        return self.values[self._position(layer)]

    def _position(self, layer: int) -> int:
        if not isinstance(layer, int) or isinstance(layer, bool):
            raise TypeError(f"layer must be an int, got {type(layer).__name__} {layer!r}")
        try:
            return self.layers.index(layer)
        except ValueError:
            raise ValueError(
                f"layer {layer} is not in this CosineMatrix; it holds layers {self.layers}. "
                "Pass one of those, or compute cosine_matrix(..., layers=[...]) with it."
            ) from None

    def to_frame(self) -> pd.DataFrame:
        """A long table with columns ``layer``, ``a``, ``b``, ``cosine``.

        One row per layer and ordered pair of names, the diagonal and both ``(a, b)`` and
        ``(b, a)`` included (``k * k`` rows per layer), so that ``df.pivot(...)`` gives back the
        matrix; filter ``df.a < df.b`` or ``df.a != df.b`` for unique pairs.
        """
        n, k = len(self.layers), self.k
        return pd.DataFrame(
            {
                "layer": [layer for layer in self.layers for _ in range(k * k)],
                "a": [a for _ in range(n) for a in self.names for _ in range(k)],
                "b": [b for _ in range(n * k) for b in self.names],
                "cosine": self.values.reshape(-1).double().tolist(),
            }
        )

    def mean_abs_offdiag(self) -> PerSelectedLayer:
        """Mean ``|cosine|`` over the off-diagonal pairs, one value per layer in :attr:`layers`.

        0 means the vectors are mutually orthogonal at that layer. Needs ``k >= 2``.
        """
        if self.k < 2:
            raise PersonaLensError(
                f"mean_abs_offdiag needs at least 2 vectors; this CosineMatrix has {self.k} "
                "(no off-diagonal pairs)."
            )
        off = ~torch.eye(self.k, dtype=torch.bool)
        return self.values.abs()[:, off].mean(dim=-1)


def cosine_matrix(
    vectors: Sequence[PersonaVector],
    *,
    layers: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> CosineMatrix:
    """Cosine similarity of every pair of ``vectors``, computed separately at each layer.

    ``layers``: personalens layer indices (negative counts from the end; default: all layers,
    in order). ``names``: labels for the vectors (default: their traits, with `` #2``, `` #3``...
    appended to repeated ones); they must be distinct. All vectors must come from the same model
    and have the same shape; otherwise :class:`PersonaLensError` says which ones differ and how.
    """
    vectors = list(vectors)
    _check_all_same_space(vectors, "cosine_matrix", [f"vectors[{i}]" for i in range(len(vectors))])
    n_layers = vectors[0].n_layers
    selected = list(select_layers(layers, n_layers, unique=True))
    labels = _default_names(vectors) if names is None else _check_names(names, len(vectors))
    stack = torch.stack([v.directions[selected] for v in vectors], dim=1).double()
    return CosineMatrix(values=_cosines(stack).float(), layers=selected, names=labels)


def cosine_by_layer(a: PersonaVector, b: PersonaVector) -> PerLayer:
    """Cosine of ``a`` and ``b`` at every layer, ``[n_layers]`` float32 (0 where either is zero)."""
    _check_all_same_space([a, b], "cosine_by_layer", ["a", "b"])
    stack = torch.stack([a.directions, b.directions], dim=1).double()
    return _cosines(stack)[:, 0, 1].float()


# ----------------------------------------------------------------------------- helpers


def _check_all_same_space(
    vectors: Sequence[PersonaVector], func: str, labels: Sequence[str]
) -> None:
    """Raise unless every vector is a PersonaVector in the space of the first one."""
    if not vectors:
        raise PersonaLensError(f"{func} needs at least one persona vector; got none.")
    for label, v in zip(labels, vectors):
        if not isinstance(v, PersonaVector):
            raise PersonaLensError(f"{func}: {label} is a {type(v).__name__}, not a PersonaVector.")
    for label, v in zip(labels[1:], vectors[1:]):
        try:
            check_same_space(vectors[0], v)
        except PersonaLensError as exc:
            raise PersonaLensError(
                f"{func}: {labels[0]} and {label} are not in the same space. {exc}"
            ) from None


def _default_names(vectors: Sequence[PersonaVector]) -> list[str]:
    seen: dict[str, int] = {}
    names = []
    for v in vectors:
        seen[v.trait] = seen.get(v.trait, 0) + 1
        names.append(v.trait if seen[v.trait] == 1 else f"{v.trait} #{seen[v.trait]}")
    return names


def _check_names(names: Sequence[str], k: int) -> list[str]:
    if isinstance(names, str):
        raise TypeError("names must be a sequence of strings, one per vector; got a single str.")
    labels = list(names)
    if len(labels) != k:
        raise PersonaLensError(f"names has {len(labels)} entries but there are {k} vectors.")
    if not all(isinstance(name, str) for name in labels):
        raise PersonaLensError(f"names must all be strings, got {labels!r}")
    if len(set(labels)) != k:
        raise PersonaLensError(f"names must be distinct (they label matrix rows), got {labels}")
    return labels


def _stack(vectors: Sequence[PersonaVector]) -> tuple[Tensor, bool]:
    """``[rows, k, d_model]`` float64: the layers (after the embedding row if all have one)."""
    has_row = all(v.hf_embedding_row is not None for v in vectors)
    mats = [
        torch.cat([v.hf_embedding_row[None], v.directions])  # type: ignore[index]
        if has_row
        else v.directions
        for v in vectors
    ]
    return torch.stack(mats, dim=1).double(), has_row


def _unstack(rows: Tensor, has_row: bool) -> tuple[Tensor, Tensor | None]:
    """Inverse of :func:`_stack` for one vector: ``(directions, hf_embedding_row or None)``."""
    return (rows[1:], rows[0]) if has_row else (rows, None)


def _project_off(x: Tensor, basis: Tensor) -> Tensor:
    """``x`` ``[rows, d]`` minus its projection on orthonormal (or zero) rows ``basis[:, j]``.

    Two modified Gram-Schmidt passes, so the result is orthogonal to the basis to rounding.
    """
    for _ in range(2):
        for j in range(basis.shape[1]):
            q = basis[:, j]
            x = x - (x * q).sum(dim=-1, keepdim=True) * q
    return x


def _orthogonalise(stack: Tensor, rtol: float) -> tuple[Tensor, Tensor]:
    """Gram-Schmidt of ``stack[:, i]`` in order of ``i``, independently for every row (layer).

    Returns ``(residuals, basis)``, both ``[rows, k, d]``: ``residuals[:, i]`` is ``stack[:, i]``
    minus its projection on the span of ``stack[:, :i]``, set to zero where its norm is at most
    ``rtol`` times that of ``stack[:, i]`` (a zero or dependent row); ``basis[:, i]`` is that
    residual at unit norm (zero where the residual is zero). The nonzero basis rows are an
    orthonormal basis of the span of the inputs at each layer.
    """
    if not rtol >= 0:
        raise PersonaLensError(f"rtol must be a non-negative number, got {rtol!r}")
    residuals = torch.zeros_like(stack)
    basis = torch.zeros_like(stack)
    for i in range(stack.shape[1]):
        x = stack[:, i]
        r = _project_off(x, basis[:, :i])
        norm = torch.linalg.vector_norm(r, dim=-1, keepdim=True)
        keep = norm > rtol * torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        residuals[:, i] = torch.where(keep, r, 0.0)
        basis[:, i] = torch.where(keep, r / torch.where(keep, norm, 1.0), 0.0)
    return residuals, basis


def _cosines(stack: Tensor) -> Tensor:
    """``[rows, k, d]`` -> ``[rows, k, k]`` cosines; symmetric, clamped, zero rows give 0."""
    units = unit_rows(stack)
    values = units @ units.mT
    values = ((values + values.mT) / 2).clamp(-1.0, 1.0)
    nonzero = (torch.linalg.vector_norm(stack, dim=-1) > 0).to(values.dtype)  # [rows, k]
    return values.diagonal_scatter(nonzero, dim1=-2, dim2=-1)


def _derived(
    base: PersonaVector,
    *,
    directions: Tensor,
    row: Tensor | None,
    op: str,
    expression: str,
    operands: list[PersonaVector],
    extra: dict[str, Any],
) -> PersonaVector:
    """An :func:`_algebra_result` whose ``method`` names the operation instead of "algebra"."""
    variants = {u.variant for u in operands}
    judges = {u.judge for u in operands}
    out = _algebra_result(
        base,
        directions=directions,
        hf_embedding_row=row,
        op=op,
        expression=expression,
        operands=operands,
        variant=base.variant if len(variants) == 1 else "mixed",
        judge=base.judge if len(judges) == 1 else None,
        extra=extra,
    )
    return out.replace(method=op)

"""Vector algebra operators of :class:`~personalens.vectors.vector.PersonaVector`: ``a + b``,
``a - b``, ``-a``, ``2 * a``, ``a / 2``, ``a * per_layer_weights`` and ``sum([...])``, and the
provenance every derived vector records.

A derived vector has ``method="algebra"`` and ``trait`` set to the expression (``"evil - 0.5*humor"``,
parenthesised by precedence); its ``metadata`` has ``expression``, ``op``, ``operands`` (their
traits) and ``sources`` (the full provenance of each operand). Only vectors of one model, shape,
hook template and layer convention combine (:func:`check_same_space`). :mod:`personalens.vectors.algebra`
builds projections and Gram-Schmidt on the same provenance (:func:`_algebra_result`).

:class:`VectorArithmetic` is the mixin that gives PersonaVector these operators; it holds no
data of its own.
"""

from __future__ import annotations

import math
import numbers
from types import NotImplementedType
from typing import Any

import torch
from torch import Tensor

from personalens.errors import PersonaLensError

# how tightly an algebra expression binds, from its top-level operator; plain traits are atoms
_PRECEDENCE = {"+": 1, "-": 1, "neg": 2, "*": 3, "/": 3}
_ATOM = 4


class VectorArithmetic:
    """The algebra operators of a persona vector (mixed into PersonaVector; see the module doc).

    Combining two vectors checks that they live in the same space; scaling takes a finite
    number or a ``[n_layers]`` tensor of per-layer weights (which drops ``hf_embedding_row``).
    """

    # numpy scalars defer to our __rmul__ instead of treating the vector as a sequence
    __array_ufunc__ = None

    def __add__(self, other: object) -> VectorArithmetic | NotImplementedType:
        if not isinstance(other, VectorArithmetic):
            return NotImplemented
        return _combine(self, other, "+")

    def __radd__(self, other: object) -> VectorArithmetic | NotImplementedType:
        # sum([a, b, c]) starts from 0
        if isinstance(other, numbers.Number) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __sub__(self, other: object) -> VectorArithmetic | NotImplementedType:
        if not isinstance(other, VectorArithmetic):
            return NotImplemented
        return _combine(self, other, "-")

    def __neg__(self) -> VectorArithmetic:
        row = self.hf_embedding_row
        return _algebra_result(
            self,
            directions=-self.directions,
            hf_embedding_row=None if row is None else -row,
            op="neg",
            expression="-" + _operand(self, 3),
            operands=[self],
        )

    def __mul__(self, other: object) -> VectorArithmetic | NotImplementedType:
        return self._scale(other, divide=False)

    __rmul__ = __mul__

    def __truediv__(self, other: object) -> VectorArithmetic | NotImplementedType:
        return self._scale(other, divide=True)

    def _scale(self, other: object, divide: bool) -> VectorArithmetic | NotImplementedType:
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


# ----------------------------------------------------------------------------- helpers


def _precedence(v: VectorArithmetic) -> int:
    if v.method != "algebra":
        return _ATOM
    return _PRECEDENCE.get(v.metadata.get("op"), _ATOM)


def _operand(v: VectorArithmetic, min_precedence: int) -> str:
    """``v.trait``, parenthesised if it binds looser than ``min_precedence`` or starts with '-'."""
    text = v.trait
    if _precedence(v) < min_precedence or text.startswith("-"):
        return f"({text})"
    return text


def check_same_space(a: VectorArithmetic, b: VectorArithmetic) -> None:
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


def _combine(a: VectorArithmetic, b: VectorArithmetic, op: str) -> VectorArithmetic:
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


def _provenance(v: VectorArithmetic) -> dict[str, Any]:
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
    base: VectorArithmetic,
    *,
    directions: Tensor,
    hf_embedding_row: Tensor | None,
    op: str,
    expression: str,
    operands: list[VectorArithmetic],
    variant: str | None = None,
    judge: str | None = None,
    extra: dict[str, Any] | None = None,
) -> VectorArithmetic:
    return type(base)(
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

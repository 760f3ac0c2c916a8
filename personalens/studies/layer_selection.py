"""Which layers a study measures: a ``layers`` argument, or a vector's recorded best layer."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from personalens.conventions import check_layer
from personalens.errors import PersonaLensError


def select_layers(layers: int | Sequence[int] | str | None, n_layers: int) -> tuple[int, ...]:
    """A ``layers`` argument as valid layer indices, in the given order.

    ``None`` or ``"all"``: every layer ``0 .. n_layers-1``; an int or a sequence of ints
    (tensors too), negative counting from the end (:func:`~personalens.conventions.check_layer`).
    Another string or an empty sequence raises :class:`PersonaLensError`, a layer out of range
    :class:`~personalens.errors.LayerError`.
    """
    if layers is None or layers == "all":
        return tuple(range(n_layers))
    if isinstance(layers, str):
        raise PersonaLensError(f"layers={layers!r}: give an int, a list of ints, 'all' or None")
    if isinstance(layers, int):
        layers = [layers]
    out = tuple(check_layer(int(L), n_layers) for L in layers)
    if not out:
        raise PersonaLensError("layers is empty: give at least one layer")
    return out


def vector_layer(vector: Any, n_layers: int, layer: int | None) -> int:
    """``layer`` checked against ``n_layers``, or else the vector's ``metadata["best_layer"]``."""
    if layer is not None:
        return check_layer(int(layer), n_layers)
    best = vector.metadata.get("best_layer")
    if best is None:
        raise PersonaLensError(
            f"vector {vector.trait!r} records no best_layer: pass layer=L explicitly"
        )
    return check_layer(int(best), n_layers)

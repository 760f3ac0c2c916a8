"""The layer a study reads when it reads one: given, or the vector's recorded best layer.

(Layer lists go through :func:`personalens.conventions.select_layers`.)
"""

from __future__ import annotations

from typing import Any

from personalens.conventions import check_layer
from personalens.errors import PersonaLensError


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

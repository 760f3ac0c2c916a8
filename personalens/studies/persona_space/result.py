"""What :func:`~personalens.studies.persona_space.pipeline.persona_space` returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jaxtyping import Float
from torch import Tensor

from personalens.errors import LayerError
from personalens.results import Result, json_safe
from personalens.studies.persona_space.pca import LayerPCA
from personalens.studies.persona_space.roles import DEFAULT_ROLE
from personalens.vectors.vector import PersonaVector


@dataclass(frozen=True)
class PersonaSpaceResult(Result):
    """The persona space of one model: the axis, the role vectors, the PCA at every layer and
    the run's summary (as saved in ``summary.json``).

    ``to_frame()`` has one row per (layer, role), the default included: layer, role,
    is_default, pc1, pc2, pc3, axis_projection, n_replies, rule.
    """

    axis: PersonaVector
    role_names: tuple[str, ...]
    role_vectors: Float[Tensor, "n_roles n_layers d_model"] = field(repr=False)
    default_vector: Float[Tensor, "n_layers d_model"] = field(repr=False)
    pca: tuple[LayerPCA, ...] = field(repr=False)
    summary: dict[str, Any] = field(repr=False)
    records: list[dict[str, Any]] = field(repr=False, default_factory=list)
    scores: dict[str, float] = field(repr=False, default_factory=dict)
    run_dir: Path | None = None

    @property
    def report_layer(self) -> int:
        """The layer the summary's single-layer entries describe (the middle layer)."""
        return int(self.summary["report_layer"])

    def at(self, layer: int | None = None) -> LayerPCA:
        """The PCA at ``layer`` (default: :attr:`report_layer`)."""
        layer = self.report_layer if layer is None else layer
        for p in self.pca:
            if p.layer == layer:
                return p
        raise LayerError(f"no PCA at layer {layer}: layers 0..{len(self.pca) - 1}")

    def frame_records(self) -> list[dict[str, Any]]:
        counts = self.summary["n_replies_per_role"]
        rules = self.summary["vector_rule"]
        rows = []
        for p in self.pca:
            for i, name in enumerate(self.role_names):
                rows.append(self._row(p, name, p.role_coords[i], p.role_projection[i].item()))
                rows[-1] |= {"n_replies": counts[name], "rule": rules[name]}
            rows.append(self._row(p, DEFAULT_ROLE, p.default_coords, p.default_projection))
            rows[-1] |= {"n_replies": self.summary["n_default_replies"], "rule": "all"}
        return rows

    @staticmethod
    def _row(p: LayerPCA, name: str, coords: Tensor, projection: float) -> dict[str, Any]:
        c = coords.tolist()
        return {
            "layer": p.layer,
            "role": name,
            "is_default": name == DEFAULT_ROLE,
            "pc1": c[0],
            "pc2": c[1],
            "pc3": c[2],
            "axis_projection": projection,
        }

    def to_dict(self) -> dict[str, Any]:
        """The summary and the coordinates table (the tensors are in the run directory)."""
        return {"summary": json_safe(self.summary), "coordinates": self.frame_records()}

"""PCA of the role vectors, layer by layer: the persona space.

At each layer the role vectors (one row per role) are centred on their mean (upstream's
``MeanScaler``) and decomposed by SVD. Reported per layer:

* ``explained_variance_ratio``: the share of the roles' variance on each component;
* ``pc1_axis_cosine``: the cosine of PC1 with the axis (``default - mean(roles)``);
* PC1's sign is chosen so that the default vector, centred the same way, has a positive PC1
  coordinate, i.e. PC1 points toward the default assistant. Since the centred default is the
  axis itself, this is the sign that makes ``pc1_axis_cosine >= 0``;
* every role's coordinates on PC1-PC3 and the default's, and each one's projection on the unit
  axis (``x . axis / |axis|``, uncentred, as upstream's ``project``);
* ``default_pc1_rank``: where the default sits on PC1 among the roles, 1 = beyond every role
  toward the assistant end, ``n_roles + 1`` = beyond every role at the other end.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from personalens.errors import PersonaLensError

N_COORDS = 3
N_VARIANCE = 10  # components whose explained variance ratio is kept


@dataclass(frozen=True)
class LayerPCA:
    """The persona space at one layer (see the module doc)."""

    layer: int
    explained_variance_ratio: tuple[float, ...]
    pc1_axis_cosine: float
    components: Float[Tensor, "k d_model"]  # unit rows, PC1 oriented toward the default
    role_coords: Float[Tensor, "n_roles k"]
    default_coords: Float[Tensor, " k"]
    role_projection: Float[Tensor, " n_roles"]
    default_projection: float
    default_pc1_rank: int


def layer_pca(
    roles: Float[Tensor, "n_roles d_model"],
    default: Float[Tensor, " d_model"],
    axis: Float[Tensor, " d_model"],
    layer: int = 0,
    n_coords: int = N_COORDS,
) -> LayerPCA:
    """PCA of ``roles`` (one vector per role, one layer) with the default and the axis."""
    if roles.ndim != 2 or roles.shape[0] < 2:
        raise PersonaLensError(
            f"PCA needs at least 2 role vectors, got {roles.shape[0] if roles.ndim else 0}: "
            "run more roles (--max-roles) or a judge under which more roles pass"
        )
    x = roles.double()
    mean = x.mean(0)
    centred = x - mean
    _, s, vh = torch.linalg.svd(centred, full_matrices=False)
    var = s**2
    total = var.sum()
    ratio = (var / total) if total > 0 else torch.zeros_like(var)
    k = min(n_coords, vh.shape[0])
    comps = vh[:k].clone()
    d = default.double() - mean
    if comps[0] @ d < 0:  # PC1 toward the default
        comps[0] = -comps[0]
    ax = axis.double()
    ax_norm = ax.norm()
    cos = float(comps[0] @ ax / ax_norm) if ax_norm > 0 else float("nan")
    role_coords = centred @ comps.T
    default_coords = d @ comps.T
    unit = ax / ax_norm if ax_norm > 0 else ax
    rank = 1 + int((role_coords[:, 0] > default_coords[0]).sum())
    return LayerPCA(
        layer=layer,
        explained_variance_ratio=tuple(float(r) for r in ratio[:N_VARIANCE]),
        pc1_axis_cosine=cos,
        components=comps.float(),
        role_coords=_pad(role_coords, n_coords).float(),
        default_coords=_pad(default_coords[None], n_coords)[0].float(),
        role_projection=(x @ unit).float(),
        default_projection=float(default.double() @ unit),
        default_pc1_rank=rank,
    )


def _pad(coords: Tensor, n: int) -> Tensor:
    """``coords`` with zero columns added up to ``n`` (fewer roles than components)."""
    if coords.shape[1] >= n:
        return coords[:, :n]
    return torch.cat([coords, coords.new_zeros(coords.shape[0], n - coords.shape[1])], 1)


def persona_pca(
    roles: Float[Tensor, "n_roles n_layers d_model"],
    default: Float[Tensor, "n_layers d_model"],
    axis: Float[Tensor, "n_layers d_model"],
    layers: tuple[int, ...] | None = None,
) -> list[LayerPCA]:
    """:func:`layer_pca` at every layer (``layers``: the model layer each row is)."""
    layers = layers or tuple(range(roles.shape[1]))
    return [layer_pca(roles[:, i], default[i], axis[i], L) for i, L in enumerate(layers)]

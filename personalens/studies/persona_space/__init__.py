"""The persona space and the Assistant Axis (Lu et al., 2026): role files, the resumable
pipeline (generate under every role and the default, judge role adherence 0-3, role vectors,
the axis ``default - mean(roles)``, PCA per layer) and the upstream ``.pt`` axis files."""

from personalens.studies.persona_space.adherence import (
    AdherenceJudge,
    OfflineAdherence,
    OpenAIAdherence,
    adherence_judge,
)
from personalens.studies.persona_space.axis_file import load_axis_pt, save_axis_pt
from personalens.studies.persona_space.config import PersonaSpaceConfig
from personalens.studies.persona_space.pca import LayerPCA, layer_pca, persona_pca
from personalens.studies.persona_space.pipeline import persona_space
from personalens.studies.persona_space.result import PersonaSpaceResult
from personalens.studies.persona_space.role_vectors import RoleVectors, compute_axis, role_vectors
from personalens.studies.persona_space.roles import (
    Role,
    list_roles,
    load_questions,
    load_role,
    load_roles,
)

__all__ = [
    "AdherenceJudge",
    "LayerPCA",
    "OfflineAdherence",
    "OpenAIAdherence",
    "PersonaSpaceConfig",
    "PersonaSpaceResult",
    "Role",
    "RoleVectors",
    "adherence_judge",
    "compute_axis",
    "layer_pca",
    "list_roles",
    "load_axis_pt",
    "load_questions",
    "load_role",
    "load_roles",
    "persona_pca",
    "persona_space",
    "role_vectors",
    "save_axis_pt",
]

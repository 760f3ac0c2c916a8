"""The persona-space pipeline on the embedded model, at tiny sizes, with the offline judge."""

from __future__ import annotations

import json

from personalens.studies.persona_space import load_axis_pt, persona_space
from personalens.vectors.vector import PersonaVector


def test_persona_space_on_the_embedded_model(embedded_model, tmp_path):
    res = persona_space(
        embedded_model,
        out=tmp_path,
        roles=["dragon", "accountant", "ghost"],
        max_questions=1,
        judge="offline",
        n_prompts=1,
        max_new_tokens=12,
        progress=False,
    )
    n = embedded_model.cfg.n_layers
    s = json.loads((tmp_path / "summary.json").read_text())
    assert len(s["pc1_axis_cosine"]) == n and len(s["default_pc1_rank"]) == n
    assert s["n_replies"] == 5 + 3 and s["n_roles"] >= 2
    axis = PersonaVector.load(tmp_path / "axis")
    assert axis == res.axis and axis.n_layers == n
    assert load_axis_pt(tmp_path / "axis.pt", embedded_model).n_layers == n

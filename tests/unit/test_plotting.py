from __future__ import annotations

import re

import plotly.graph_objects as go
import pytest
import torch

from personalens.algebra import cosine_matrix
from personalens.plotting import plot_cosine_by_layer, plot_cosine_matrix, save_html
from personalens.vector import PersonaVector

N_LAYERS, D_MODEL = 5, 8
TRAITS = ["openness", "conscientiousness", "extraversion", "agreeableness", "neuroticism"]


def make(trait: str, seed: int) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(
        directions=torch.randn(N_LAYERS, D_MODEL, generator=g), model="tiny", trait=trait
    )


@pytest.fixture
def cm():
    return cosine_matrix([make(t, i) for i, t in enumerate(TRAITS)])


def test_plot_cosine_matrix_heatmap_and_slider(cm):
    fig = plot_cosine_matrix(cm)
    assert isinstance(fig, go.Figure)
    (heat,) = fig.data
    assert isinstance(heat, go.Heatmap)
    assert (heat.zmin, heat.zmax) == (-1.0, 1.0)
    assert heat.texttemplate  # values are annotated on the cells
    assert list(heat.x) == TRAITS and list(heat.y) == TRAITS
    middle = N_LAYERS // 2
    assert torch.allclose(torch.tensor(heat.z), cm.at(middle))
    (slider,) = fig.layout.sliders
    assert slider.active == middle
    assert [s.label for s in slider.steps] == [str(layer) for layer in range(N_LAYERS)]
    for layer, step in enumerate(slider.steps):
        (z,) = step.args[0]["z"]
        assert torch.allclose(torch.tensor(z), cm.at(layer))
        assert f"layer {layer}" in step.args[1]["title"]["text"]
    assert f"layer {middle}" in fig.layout.title.text


def test_plot_cosine_matrix_chosen_layer_and_subset_of_layers():
    vs = [make(t, i) for i, t in enumerate(TRAITS[:3])]
    cm = cosine_matrix(vs, layers=[1, 3, 4])
    fig = plot_cosine_matrix(cm, layer=4)
    assert fig.layout.sliders[0].active == 2
    assert len(fig.layout.sliders[0].steps) == 3
    assert torch.allclose(torch.tensor(fig.data[0].z), cm.at(4))
    assert plot_cosine_matrix(cm).layout.sliders[0].active == 1  # middle of [1, 3, 4]
    with pytest.raises(ValueError, match="holds layers"):
        plot_cosine_matrix(cm, layer=0)


def test_plot_cosine_by_layer_one_trace_per_pair(cm):
    fig = plot_cosine_by_layer(cm)
    k = len(TRAITS)
    assert len(fig.data) == k * (k - 1) // 2
    assert all(isinstance(t, go.Scatter) for t in fig.data)
    first = fig.data[0]
    assert first.name == f"{TRAITS[0]} · {TRAITS[1]}"
    assert list(first.x) == cm.layers
    assert torch.allclose(torch.tensor(first.y), cm.values[:, 0, 1])
    assert len({t.name for t in fig.data}) == len(fig.data)


def test_save_html_is_self_contained(cm, tmp_path):
    fig = plot_cosine_matrix(cm)
    path = save_html(fig, tmp_path / "sub" / "ocean.html")
    assert path == tmp_path / "sub" / "ocean.html" and path.is_file()
    html = path.read_text(encoding="utf-8")
    assert "<html" in html
    assert re.search(r"plotly\.js v\d", html)  # the library itself is embedded
    assert len(html) > 1_000_000
    assert not re.search(r"<script[^>]*\bsrc\s*=", html, flags=re.IGNORECASE)
    assert [p.name for p in path.parent.iterdir()] == ["ocean.html"]  # no temp file left behind
    save_html(plot_cosine_by_layer(cm), path)  # overwrites atomically
    assert "Cosine similarity by layer" in path.read_text(encoding="utf-8")
